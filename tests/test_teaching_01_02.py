"""Notebooks 01 and 02 as a newcomer read their CPU edition: each test states what a reader is told and checks it
against the table beside it, the data or the code."""

import json
from pathlib import Path

import pandas as pd
import pytest

from flexfix.edition import schemas, tables
from flexfix.edition.checks import DataError
from flexfix.edition.narrative import reproduce
from flexfix.measure import engine_sweep, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def cells(stem):
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


def _every():
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    return every, tables.every_request_table(engine_sweep.request_rows(every))


# Item 1: the every-request sentences say what the table beside them shows.


def test_every_request_sentences_match_the_table_for_the_patched_engines():
    every, rows = _every()
    said = reproduce.every_request(every, rows)
    # the table shows the patched engines at 17, 32 and 47, nothing differing; the sentence said "completed no batch"
    assert "completed no batch" not in said and "completed: none" not in said
    for engine, mine in rows.groupby("engine"):
        assert f"**{engine}**" in said  # the sentence names each engine as the table does
        if "patched" in engine:
            sizes = ", ".join(str(n) for n in mine["requests"][:-1]) + f" and {mine['requests'].iloc[-1]}"
            assert f"**{engine}** answered every request as it does alone" in said
            assert f"completed: {sizes}" in said


def test_an_engine_that_completed_but_has_no_rows_is_an_error_not_a_sentence():
    every, rows = _every()
    with pytest.raises(DataError):
        reproduce.every_request(every, rows[rows["engine"].str.contains("stock")])


# Item 2: notebook 02's claim that the fix works rests on every request, not on request 0.


def test_the_fix_is_shown_on_every_request_and_request_0_is_not_called_evidence():
    from flexfix.edition import glossary
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.outcomes import every_request_dispatch

    every, rows = _every()
    pairs = every_request_dispatch(every)
    assert (128, 47) in pairs and (47, 17) in pairs  # patched engines started for 128, stock for its largest batch
    said = workarounds.fix_on_every_request(rows, glossary.decode_dispatch(pairs), "there")
    assert said.startswith("**The fix, on every request:**") and "runs with a FULL graph" in said
    assert "at 17 requests 1 request came out with other tokens" in said  # the positive control
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    patched = tables.select_scenarios(engines, ["patched_inprocess"])
    assert "never misreads" in reproduce.patched_batches(patched)
    nb = "\n".join(text(c) for c in cells("02_apply_flexfix"))
    assert "got through the replays that crashed" not in nb and "fix_on_every_request(" in nb


def test_a_patched_engine_that_differed_is_not_called_fixed():
    from flexfix.edition.narrative import workarounds

    every, rows = _every()
    broken = rows.copy()
    broken.loc[broken["engine"].str.endswith("patched"), "requests_with_other_tokens"] = 1
    dispatch = pd.DataFrame([{"max_num_seqs": 128, "decode batch": 17, "runs with": "FULL"}])
    said = workarounds.fix_on_every_request(broken, dispatch, "x")
    assert said.startswith("**The patched engines did not answer every request as alone**")


# Item 3: max_num_seqs=16 never ran more than 16 at once; no ranking from single recordings; a control is named.


def test_the_workarounds_say_what_max_num_seqs_does_and_where_the_control_is():
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.workarounds import workaround_table

    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    said = workarounds.without_plugin(workaround_table(safety, cost), "here", "there")
    assert "alone and among 48 and 128 at once" not in said
    assert "the scheduler ran at most that many of them at once" in said and "positive control" in said
    assert "Each costs throughput" not in said and "not a ranking" in said


# Item 6: a table read from one recorded file names that file, not "this run".


def test_the_v0_20_2_summary_names_its_file():
    v0_20_2, _ = schemas.recorded(DATA, "engine_scenarios_v0_20_2", schemas.ENGINE_SCENARIOS)
    summary = tables.engine_summary(v0_20_2, recorded_in="engine_scenarios_v0_20_2")
    assert set(summary["recorded_in"]) == {"engine_scenarios_v0_20_2"}
    nb = "\n".join(text(c) for c in cells("02_apply_flexfix"))
    assert 'recorded_in="engine_scenarios_v0_20_2"' in nb


# Item 4: the capture sizes printed say which hold a FULL graph, for the engines' real max_num_seqs.


def test_the_capture_sizes_line_says_which_sizes_hold_a_full_graph():
    from flexfix.edition import glossary

    line = glossary.capture_sizes_line(48)
    assert "PIECEWISE at every one" in line and line.endswith("only at [1, 2, 4, 8, 16, 24, 32, 40, 48]")
    src = next(text(c) for c in cells("01_reproduce_ima") if "glossary.k_at_capture()" in text(c))
    assert "max_num_seqs=128" not in src and "(128, 17)" not in src
    assert "tokens per step with a captured full graph" not in src


# Item 5: "V ended where K began" shows its evidence; the first sentence names the two recordings.


def test_v_ended_where_k_began_is_shown_from_the_recorded_addresses():
    from flexfix.edition.narrative import outcome_cause as story
    from flexfix.edition.tables import outcome_cause as cause_tables

    runs, _ = cause_tables.recorded(DATA)
    said = story.outcome_cause(runs, "there")
    d = runs[(runs["placement"] == "default") & runs["touch"].isna() & (runs["copy"] == "as_strided")]
    gap = int((d.k_address - d.v_address).iloc[0])
    assert f"the V cache started {gap:,} bytes before the K cache" in said
    moved = runs.copy()
    moved.loc[d.index, "k_address"] = moved.loc[d.index, "k_address"] + 4096
    assert "V ended where K began" not in story.outcome_cause(moved, "there")
    cell = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("## Crash or wrong answer"))
    assert "H100" in cell and "H200" in cell and "cannot fault" in cell


# Item 7: the one table's placement rows are the placement table's scenarios; this run's rows name their file.


def test_the_one_table_counts_the_placement_scenarios_as_the_placement_table_does():
    from flexfix.edition.tables import outcome_cause as cause_tables

    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    placed, _ = cause_tables.recorded(DATA)
    mine = recorded.assign(launch="frozen")
    table = tables.outcome_table(
        recorded, sanitizer, engines, this_run=mine, this_run_source="this run (cpu)",
        this_run_file="/x/ima_kernel-cpu.json", placements=placed, placements_source="there",
    )  # fmt: skip
    per_scenario = cause_tables.placement_table(placed)["runs"]
    rows = table[table["experiment"] == "torch-only, caches placed by hand"]
    for scenario, n in per_scenario.items():
        mine_rows = rows[rows["case"].str.startswith(scenario + ":")]
        assert mine_rows["case"].str.extract(r": (\d+) of")[0].astype(int).sum() == n, scenario
    assert set(table.loc[table["from"] == "this run (cpu)", "recorded_in"]) == {"RESULTS_DIR/ima_kernel-cpu.json"}
