"""Round-9 reading, second pass (06 D2, 07 D5): short 'What you will learn' bullets in 06, their caveats in the
sections they concern; 07's planted-bug table shown before the notes on its columns, the NOT_READ distinction in
*No false alarms*."""

import re

from test_teaching_round4_06_07 import DATA, _nb

from flexfix.edition.tables import guard as guard_tables
from flexfix.guard.vllm_metadata import NOT_READ
from flexfix.integration.serving.recording import recorded_run


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _index(name: str, contains: str, kind: str = "markdown") -> int:
    cells = _nb(name)["cells"]
    found = [i for i, c in enumerate(cells) if c["cell_type"] == kind and contains in "".join(c["source"])]
    assert len(found) == 1, (name, contains, found)
    return found[0]


def _source(name: str, index: int) -> str:
    return "".join(_nb(name)["cells"][index]["source"])


# 06 D2


def _bullets() -> list[str]:
    first = _source("06_serving", 0)
    block = first.split("**What you will learn**", 1)[1].split("Terms used from here on", 1)[0]
    return [_flat(b) for b in re.split(r"\n\* ", "\n" + block.strip()) if b.strip()]


def test_06_d2_each_goal_is_one_short_plain_sentence():
    bullets = _bullets()
    assert len(bullets) == 5  # round 22 (D2, D3): the two FAKE goals are one, the log-like last goal plain
    for bullet in bullets:
        assert len(bullet) <= 200, bullet  # was up to eight lines
        depth = max_depth = 0
        for ch in bullet:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            max_depth = max(max_depth, depth)
        assert max_depth <= 1, bullet  # no nested parentheses
        assert bullet.count(";") <= 1, bullet  # one sentence, ending with the list's ';'


def test_06_d2_the_caveats_moved_to_the_sections_they_concern():
    first = _flat(_source("06_serving", 0))
    for moved in ("plugin-system documentation", "no safeguard", "one server with and without the fix"):
        assert moved not in first, moved
    # round 22 (D2): the GPU, vLLM and commit of the recording are the setup output's (what_runs), not the guide's
    scenarios = _flat(_source("06_serving", _index("06_serving", "## The scenarios")))
    assert "vLLM loads a `vllm.general_plugins` entry point in each process it starts" in scenarios
    assert "--attention-backend FLEX_ATTENTION`, vLLM's default CUDA graphs" in scenarios
    # round 22 (D2): the FAKE server's marks are said where it runs
    fake = _flat(_source("06_serving", _index("06_serving", "## Harness self-test")))
    assert "bars faded, its title headed EMULATED" in fake and "bars faded" not in scenarios
    recorded = _flat(_source("06_serving", _index("06_serving", "## The recorded GPU run")))
    assert "padded up to the next capture size, replays a FULL graph when that size is at most" in recorded
    assert "`max_num_seqs` equal to the batch is no safeguard" in recorded
    # round 22 (D1): the model and batch caveat is the result lead's; here the columns that say it
    assert "with the batches its `model` and `requests` columns name" in recorded
    assert "not one server with and without the fix" not in recorded


def test_06_d2_the_model_and_batch_caveat_is_needed_by_the_recording():
    """The caveat moved to the recorded section is about that recording: its stock and patched scenarios differ."""
    table, _ = recorded_run(DATA)
    stock = table.set_index("scenario").loc["stock"]
    patched = table[table["FLEXFIX_PATCH"].astype(str) == "1"]
    assert (patched["model"] != stock["model"]).any() or any(r != stock["requests"] for r in patched["requests"])


# 07 D5


def _mutant_view():
    return guard_tables.mutant_table(guard_tables.recorded(DATA)["guard026_mutants"][0])


def test_07_d5_the_mutant_table_comes_first_then_notes_on_its_columns():
    head = _index("07_replay_guard", "## Planted bugs of the class")
    table = _index("07_replay_guard", "display(guard_tables.mutant_table(mutant_runs))", "code")
    notes = _index("07_replay_guard", "What some columns of that table mean")
    assert head + 1 == table and table + 1 == notes
    before = _source("07_replay_guard", head)
    assert len(before.strip().splitlines()) <= 22  # was about thirty lines
    for column in ("`requests as without graphs`", "`appeared`", "`not recorded`", "R-SWA", "NOT_READ"):
        assert column not in before, column
    view = _mutant_view()
    explained = re.findall(r"^\* `([^`]+)`", _source("07_replay_guard", notes), flags=re.M)
    assert explained[:3] == ["requests with the clean tokens", "requests as without graphs", "alarms (field: kind)"]
    assert set(explained[:3]) <= set(view.columns)  # a note per real column of the recorded table
    for mutant in view["mutant"]:
        assert f"**{mutant}**" in before, mutant  # every recorded mutant is introduced before its table


def test_07_d5_the_notes_match_the_recorded_frozen_decision_row():
    view = _mutant_view().set_index("mutant")
    notes = _flat(_source("07_replay_guard", _index("07_replay_guard", "What some columns of that table mean")))
    row = view.loc["frozen_decision"]
    assert "rswa_prefix_lens: appeared" in row["alarms (field: kind)"]
    assert "rswa_window: decision" in row["alarms (field: kind)"]
    assert "not read by the capture" in row["the first alarm found"] and "`not read by the capture`" in notes
    assert row["requests as without graphs"] != "not recorded"
    assert (view.drop(index="frozen_decision")["requests as without graphs"] == "not recorded").all()
    assert "Where that column says `not recorded`, the recording has no run of the mutant without graphs" in notes


def test_07_d5_the_not_read_distinction_is_in_no_false_alarms():
    notes = _source("07_replay_guard", _index("07_replay_guard", "What some columns of that table mean"))
    # round 13 (D6): the alarm itself says which rule it falls under; the full distinction stays in *No false alarms*
    said = _flat(notes)
    # round 20 (D8): the rule is said once, in *No false alarms*; the notes no longer restate it
    assert "the rule that fields are not compared covers only the fields named in `NOT_READ`" not in said
    assert "*No false alarms*" in notes
    false_alarms = _flat(_source("07_replay_guard", _index("07_replay_guard", "Two things never alarm.")))
    assert "it is not the `appeared` alarm of the planted frozen_decision below" in false_alarms
    assert "`rswa_prefix_lens` (a" in false_alarms and "is on neither list" in false_alarms  # round 22 (D10)
    assert not any("rswa_prefix_lens" in fields for fields in NOT_READ.values())
