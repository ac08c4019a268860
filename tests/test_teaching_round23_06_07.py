"""Round 23 (report c, a newcomer's reading of the published 06 and 07), notebooks 06 and 07: each fix tied to the
data or the source that generates the sentence; each A/B test fails on the code before its fix."""

from __future__ import annotations

import inspect

import matplotlib

matplotlib.use("Agg")

from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _flat  # noqa: E402

from flexfix.edition.narrative import guard as guard_story  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402
from flexfix.measure import engine_sweep  # noqa: E402

# B1


def test_07_b1_the_late_first_alarm_gives_the_sweep_order_as_this_sources_plan_not_a_recorded_fact():
    recorded = guard_tables.recorded(DATA)
    runs = recorded["guard_stock_eager"][0]
    engines, batches = guard_tables.engine_guard(runs), guard_tables.engine_batches(runs)
    equal = guard_tables.eager_vs_reference(runs, recorded["guard_patched_reference"][0])
    said = _flat(guard_story.eager_equal(equal, engines, batches))
    assert "first alarm came only at its replay" in said  # the recorded engine still has a late first alarm
    assert "its engine sweep, run first, began" not in said  # the order is no longer stated as recorded
    assert "The recording keeps which batch sizes the engine ran, not the order it ran them in" in said
    assert "that order is this source's plan, not a recorded fact" in said
    # the plan the sentence names is this source's: the sweep's batches run before every request and the kept answers
    body = inspect.getsource(engine_sweep)
    assert (
        body.index("_invariance(llm, run")
        < body.index("_every_request(llm, run")
        < body.index("record_generations(llm, run")
    )


def _cells(name: str) -> list[tuple[str, str]]:
    from test_teaching_round16_06_07 import _cells as cells

    return cells(name)


# D10


def test_07_d10_graphs_captured_points_to_the_paragraph_that_holds_the_capture_list():
    words = _flat(next(s for k, s in _cells("07_replay_guard") if k == "markdown" and "Words of these tables" in s))
    assert 'the paragraph that begins "Which steps replay a FULL graph at all" says which' not in words
    lead = "The capture sizes the recorded engines ran with"
    assert f"the output paragraph **{lead}** gives that list" in words
    recorded = guard_tables.recorded(DATA)
    cases = guard_tables.dispatch_cases(guard_tables.stopped_runs(recorded))
    from flexfix.edition.narrative import guard_dispatch, guard_serving

    said = _flat(guard_serving.capture_sizes(guard_dispatch.decode_dispatch(cases)))
    assert said.startswith(f"**{lead}**: ")  # the paragraph pointed to is the one that gives the list


# D11


def test_07_d11_the_stopped_runs_comment_says_what_the_other_engine_of_17_is():
    code = next(
        s for k, s in _cells("07_replay_guard") if k == "code" and "stopped_runs = guard_tables.stopped_runs(" in s
    )
    assert "guarded half of _17" not in code
    assert "its other engine ran without the guard: not shown here" in _flat(code)
    table = guard_tables.recorded(DATA)["guard_stock_error_17"][0]
    assert (table["guard"] == "error").sum() == 1 and len(table) == 2  # one engine under the guard, one without
