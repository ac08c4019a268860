"""Round 21 (report 9c, a reading of the published edition), notebooks 06 and 07: each fix tied to the data or the
source that generates the sentence or table."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _cells, _flat  # noqa: E402

from flexfix.edition import schemas  # noqa: E402
from flexfix.edition.narrative import guard_serving  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402

# the edition index's full provenance line (flexfix.edition.tables.provenance.provenance_line), as its generator
# reads it: GPU, commit and time
_RECORDED = re.compile(r"recorded on (.+?)(?: \(driver [^)]*\))?, torch .*?, commit (\w+), (\S+?)(?:[,;\s]|$)", re.M)


def _recordings(text: str) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys(_RECORDED.findall(text)))


def _markdown(name: str) -> str:
    return _flat("\n".join(c for k, c in _cells(name) if k == "markdown"))


def _code(name: str) -> str:
    return "\n".join(c for k, c in _cells(name) if k == "code")


def _text(shown) -> str:
    return str(getattr(shown, "data", shown))


# A1 (06): the one-model answer reads notebook 07's *Serving* and guard_debug recordings (other GPU, other commits);
# the index counts only full `recorded on` lines, so the answer now prints one for each recording it reads.


def test_06_a1_the_one_model_answer_prints_each_recordings_provenance_line():
    found = _recordings(_text(guard_serving.in_short(DATA)))
    commits = {commit for _, commit, _ in found}
    debug = guard_tables.recorded(DATA, ["guard_debug"])["guard_debug"][1]
    _, served_prov = guard_tables.served(DATA)
    _, stock_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    want = {str(p["git_commit"])[:10] for p in (debug, served_prov, stock_prov)}
    assert want <= commits
    assert {gpu for gpu, _, _ in found} == {served_prov["device_name"], stock_prov["device_name"], debug["device_name"]}


# A2 (07): the *Serving* conclusion compares with notebook 06's recorded stock server; it now prints that recording's
# provenance line.


def test_07_a2_the_serving_conclusion_prints_notebook_06s_provenance_line():
    table, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(table, list(guard_serving.PAIRS))
    found = _recordings(_text(guard_serving.serving(table, agree, DATA)))
    _, stock_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    assert (stock_prov["device_name"], str(stock_prov["git_commit"])[:10], stock_prov["date"]) in found


# A3 (07, 06): "one invariant" (pointer, strides ...) did not cover what frozen_decision was refused for (a decision
# None -> 16, a None that became a tensor); the guard's checks are now said as two: layouts and decisions.


def test_07_a3_the_invariant_names_decisions_as_well_as_layouts():
    text = _markdown("07_replay_guard")
    assert "one invariant" not in text
    assert "The second: every decision in that metadata is the capture's" in text
    assert "the planted frozen_decision below is caught by this check" in text
    assert "nor may a decision the capture took" in text
    six = _markdown("06_serving")
    assert "that the metadata's decisions" in six


# B1 (06): "leaves nothing running" was shown only against the FAKE server; the real servers' recordings keep the
# same count (group_left_after_stop), now read under the manager's table, and the learning goal is scoped.


def test_06_b1_the_real_servers_left_processes_are_read_from_their_recordings():
    from flexfix.edition.narrative import serving_manager

    said = _flat(serving_manager.real_servers_left(DATA))
    stock, _ = schemas.recorded(DATA, "serve", schemas.SERVING)
    served, _ = guard_tables.served(DATA)
    for table in (stock, served):
        for scenario, left in zip(table["scenario"], table["group_left_after_stop"]):
            assert f"`{scenario}`" in said and f"{int(left)} for" in said
    assert "was not recorded" in said
    assert "leaves nothing running" not in _markdown("06_serving")
    assert "serving_manager.real_servers_left(DATA_DIR)" in _code("06_serving")


# B2 (06): `plugin_lines` counts the patch's line only (flexfix.integration.serving.run.PLUGIN_LINE); no recorded
# server shows a guard-mode line, so 06 no longer says the count covers one.


def test_06_b2_plugin_lines_is_said_to_count_the_patch_line_only():
    from flexfix.integration.serving.run import PLUGIN_LINE

    text = _markdown("06_serving")
    assert "or a guard mode in `FLEXFIX_GUARD`" not in text
    assert f"`{PLUGIN_LINE} in process N`" in text


# B3 (07): what the older guard's NOT_READ list held is not shown; the sentence keeps to its result.


def test_07_b3_the_older_guard_is_described_by_its_result_only():
    import pandas as pd

    from flexfix.edition.narrative import guard as guard_story

    said = _flat(
        guard_story.not_read_counted(pd.DataFrame(columns=["FlexAttentionMetadata.num_blocks_per_seq: pointer"]))
    )
    assert "already had the field on that list" not in said and "older than that rule" not in said
    assert "whose source is not shown here" in said and "its result only" in said


# B4 (07): "its tests run it": the test is named, and the edition is said not to run it.


def test_07_b4_the_readme_example_names_its_test():
    import test_guard

    name = "test_the_readmes_python_example_runs_and_refuses_the_as_strided_copy"
    assert hasattr(test_guard, name)
    text = _markdown("07_replay_guard")
    assert "and its tests run it" not in text
    assert f"`tests/test_guard.py::{name}`" in text and "this edition does not run it" in text


# B5 (07): the on/off order is this source's plan, not in the recording (it keeps each pair's two times).


def test_07_b5_the_on_off_order_is_said_to_be_the_plan():
    cost, _ = guard_tables.recorded(DATA, ["guard_cost"])["guard_cost"]
    kept = [r for r in cost.iloc[0]["records"] if r.get("kind") == "guard_cost"]
    assert kept and all({"on_seconds", "off_seconds"} <= set(r) for r in kept)
    assert not any("order" in k for r in kept for k in r)  # no order recorded
    text = _markdown("07_replay_guard")
    assert "alternately in one engine" not in text and "their order alternating" not in text
    assert "that order is this source's plan, not a recorded fact" in text


# B6 (07): "fixed before the run" is not shown by the recordings; the counts are said to be the plan of this commit.


def test_07_b6_the_request_counts_are_the_plan_not_a_recorded_procedure():
    from flexfix.edition.narrative import guard_dispatch

    stopped = guard_tables.engine_guard(guard_tables.stopped_runs(guard_tables.recorded(DATA)))
    said = _flat(guard_dispatch.counts_run(stopped))
    assert "fixed before the run" not in said
    assert "plans these counts at this commit" in said and "not when or why they were chosen" in said
