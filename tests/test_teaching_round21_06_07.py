"""Round 21 (report 9c, a reading of the published edition), notebooks 06 and 07: each fix tied to the data or the
source that generates the sentence or table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _cells, _flat  # noqa: E402

from flexfix.edition import evidence, schemas  # noqa: E402
from flexfix.edition.narrative import guard_serving  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402


def _markdown(name: str) -> str:
    return _flat("\n".join(c for k, c in _cells(name) if k == "markdown"))


def _code(name: str) -> str:
    return "\n".join(c for k, c in _cells(name) if k == "code")


def _text(shown) -> str:
    return str(getattr(shown, "data", shown))


# A1 (06): the one-model answer reads notebook 07's *Serving* and guard_debug recordings (other GPU, other commits);
# the index counts only full `recorded on` lines, so the answer now prints one for each recording it reads.


def test_06_a1_the_one_model_answer_prints_each_recordings_provenance_line():
    found, _ = evidence.recordings(_text(guard_serving.in_short(DATA)))
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
    found, _ = evidence.recordings(_text(guard_serving.serving(table, agree, DATA)))
    _, stock_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    assert (stock_prov["device_name"], str(stock_prov["git_commit"])[:10], stock_prov["date"]) in found


# A3 (07, 06): "one invariant" (pointer, strides ...) did not cover what frozen_decision was refused for (a decision
# None -> 16, a None that became a tensor); the guard's checks are now said as two: layouts and decisions.


def test_07_a3_the_invariant_names_decisions_as_well_as_layouts():
    text = _markdown("07_replay_guard")
    assert "one invariant" not in text
    assert "*every decision in that metadata is the capture's*" in text
    assert "the planted frozen_decision below is caught by this check" in text
    assert "nor may a decision the capture took" in text
    six = _markdown("06_serving")
    assert "that the metadata's decisions" in six
