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
