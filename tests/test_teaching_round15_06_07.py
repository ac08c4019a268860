"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 15): one test per finding fixed, each tying the
sentence or table to the data or code it states."""

import re

from test_teaching_round4_06_07 import DATA, _nb

from flexfix.edition.narrative import guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration.serving.recording import recorded_run


def _flat(text) -> str:
    return re.sub(r"\s+", " ", str(text))


def _cells(name: str) -> list[str]:
    return ["".join(c["source"]) for c in _nb(name)["cells"]]


def _at(cells: list[str], needle: str) -> int:
    return next(i for i, c in enumerate(cells) if needle in c)


# D1, D4


def test_06_d1_d4_the_recorded_run_follows_the_model_directory_and_the_fake_self_test_comes_after_it():
    cells = _cells("06_serving")
    model = _at(cells, "## A model directory")
    recorded = _at(cells, "## The recorded GPU run")
    fake = _at(cells, "## Harness self-test")
    assert model < _at(cells, "## The scenarios") < recorded < _at(cells, "serving.show_recorded(DATA_DIR)")
    assert _at(cells, "guard_serving.in_short(DATA_DIR)") < fake  # the one-model answer before the FAKE part
    for live in ("serving.manager_demo(", "serving.record(", "tables.stage_table(table)", "error_bodies(table,"):
        assert _at(cells, live) > fake, live
    assert _at(cells, "serving.record(") < _at(cells, "tables.stage_table(table)")  # table built before its use
    assert "an emulation" in cells[fake].split("\n")[0]
    assert "nothing the FAKE server answers is a measurement of vLLM" in _flat(cells[fake])  # round 22 (A1, D2)
    assert cells[-1].startswith("## Takeaways")


def test_06_d1_the_one_model_answer_is_printed_once():
    code = "\n".join(c for c, k in zip(_cells("06_serving"), (c["cell_type"] for c in _nb("06_serving")["cells"]))
                     if k == "code")  # fmt: skip
    assert code.count("in_short(") == 1
    lead = _flat(serving_story.result_lead(DATA))
    assert "Does the fix remove the crash, on one model?" in lead
    assert _flat(guard_serving.in_short(DATA)).split("?", 1)[1][:60] not in lead  # pointed to, not repeated
    table, _ = recorded_run(DATA)
    assert ("ran different models" in lead) == (table["model"].nunique() > 1)


# D2


def test_06_d2_the_same_h200_guard_error_row_is_read_from_its_guard_lines():
    said = _flat(guard_serving.in_short(DATA))
    table, prov = guard_tables.served(DATA)
    row = table.set_index("scenario").loc["guard_error"]
    line = next(x for x in row["guard_lines"] if "strides" in x)
    field, before, after = re.search(r"(\w+): strides (\([\d, ]+\)) -> (\([\d, ]+\))", line).groups()
    assert f"`{field}` strides moved from {before} to {after}" in said
    assert "| `guard_error` (stock, guard in `error` mode), notebook 07's *Serving* |" in said
    assert f"{prov['device_name']}, commit {prov['git_commit'][:10]}" in said
    for s in row["records"]:
        if s.get("stage") == "together" and s.get("errored"):
            assert f"{s['errored']} of {s['requests']} concurrent requests" in said
    assert guard_serving._moved(["no strides here"]) == ""


# D3


def test_06_d3_the_scenarios_say_stock_and_patched_ran_different_models_and_where_one_model_is():
    text = _flat(next(c for c in _cells("06_serving") if c.startswith("## The scenarios")))
    # round 22 (D1): which model each serves, and a pointer to the result that says why and where one model is
    assert "stock the tiny model, the patched scenarios the variance model" in text
    assert "which question that leaves to another recording, the result at the top says" in text


# D6


def test_06_d6_logprob_is_defined_among_the_terms():
    terms = _flat(_cells("06_serving")[0].split("Terms used from here on", 1)[1])
    assert "a **logprob** is the log-probability the model gave a token it generated" in terms
    assert _flat(_cells("06_serving")[0]).index("**logprob**") < _flat("\n".join(_cells("06_serving"))).index(
        "logprobs bitwise"
    )


# D9, D10, D11 (07)


def test_07_d9_the_planted_frozen_decision_says_why_rswa_prefix_lens_alarms():
    from flexfix.guard.vllm_metadata import NOT_READ

    text = _flat("\n".join(_cells("07_replay_guard")))
    assert (
        "`rswa_prefix_lens` is on no `NOT_READ` list, so its going from `None` at capture to a tensor at replay" in text
    )
    assert not any("rswa_prefix_lens" in fields for fields in NOT_READ.values())


def test_07_d10_the_one_below_batch_is_said_plainly():
    text = _flat("\n".join(_cells("07_replay_guard")))
    assert "Their largest is one request below a kept batch" in text  # round 19 A1: no reason from a fault count


def test_07_d11_the_one_column_step_names_the_kind_and_why_the_alarm_stands():
    from flexfix.edition.narrative import guard_information
    from flexfix.edition.tables.guard import recorded

    runs = recorded(DATA)["guard026_mutants"][0]
    said = _flat(guard_information.mutant_settings(runs, "here"))
    if "shorter than any of these prompts" in said:
        assert "such as its warm-up or dummy runs; the recording does not say which" in said
        assert "the guard compares every replay of the graph with its capture" in said  # round 16: an inference
    assert "a step vLLM ran itself" not in said


# D5 (06): the log tails' provenance is a note under them, not a takeaway


def test_06_d5_the_log_provenance_is_a_note_under_the_recorded_log_tails():
    cells = _cells("06_serving")
    note = _at(cells, "**A note on the log tails above.**")
    assert note == _at(cells, "serving.show_recorded(DATA_DIR)") + 1
    assert "`what():` line" in cells[note] and "resource_tracker" in cells[note]
    assert "resource_tracker" not in cells[-1] and "the last cell of *The recorded GPU run*" in cells[-1]


# D7 (07): the dispatch rule's two conditions come first, as bullets


def test_07_d7_the_misread_rule_is_two_bullets_before_the_rest():
    from flexfix.edition import glossary

    cell = next(c for c in _cells("07_replay_guard") if "Which steps replay a FULL graph at all" in c)
    bullets = [line for line in cell.split("\n") if line.startswith("* **")]
    assert bullets[0].startswith("* **the step replays a FULL graph**")
    assert bullets[1].startswith("* **the batch spans more than one query block**")
    assert cell.index(bullets[1]) < cell.index("does not by itself make a batch")
    cases = glossary.decode_dispatch(
        guard_tables.dispatch_cases(guard_tables.stopped_runs(guard_tables.recorded(DATA)))
    )
    full = cases["padded to"] <= cases["max_num_seqs"]
    assert ((cases["runs with"] == "FULL") == full).all()  # the first bullet is the dispatcher's answer


# D12 (07): one table says which recording each section reads, read from their provenance


def test_07_d12_the_provenance_table_reads_each_recordings_provenance():
    from flexfix.edition.narrative import guard_provenance

    recorded = guard_tables.recorded(DATA)
    served_prov = guard_tables.served(DATA)[1]
    said = str(guard_provenance.provenance(recorded, served_prov))
    for name, (_, prov) in recorded.items():
        section = next(s for s, names in guard_provenance.SECTIONS.items() if name in names)
        row = next(line for line in said.split("\n") if line.startswith(f"| {section} |") and f"`{name}`" in line)
        assert f"| {prov['device_name']} | {prov['vllm']} | {prov['git_commit'][:10]} |" in row
    assert (
        f"| `serve_guard` | {served_prov['device_name']} | {served_prov['vllm']} | {served_prov['git_commit'][:10]}"
        in said
    )
    headings = [line for c in _cells("07_replay_guard") for line in c.split("\n") if line.startswith("## ")]
    for section in guard_provenance.SECTIONS:
        assert f"## {section.strip('*')}" in headings, section  # each section named as its heading
    assert "guard_provenance.provenance(recorded" in _cells("07_replay_guard")[2]
    assert "none of notebook 07's recordings" in str(guard_provenance.provenance({}))


def test_06_the_fake_setup_line_places_the_recorded_run_where_the_notebook_does():
    """The FAKE run's setup line said the recorded run is "shown at the end"; after D1/D4 it comes first."""
    import inspect

    from flexfix.integration.serving import scenarios

    source = _flat(inspect.getsource(scenarios))
    assert "shown at the end" not in source
    assert "what it emulates: the harness self-test" in source  # round 22 (D2): said in 06, after the recording
    cells = _cells("06_serving")
    assert _at(cells, "## The recorded GPU run") < _at(cells, "## Harness self-test")
