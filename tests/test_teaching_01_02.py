"""Notebooks 01 and 02 as a newcomer read their CPU edition: each test states what a reader is told and checks it
against the table beside it, the data or the code."""

import re

import pandas as pd
import pytest
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas, tables
from flexfix.edition.checks import DataError
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.measure import engine_sweep, record


def _every():
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    return every, tables.every_request_table(engine_sweep.request_rows(every))


# Item 1: the every-request sentences say what the table beside them shows.


def test_every_request_sentences_match_the_table_for_the_patched_engines():
    every, rows = _every()
    said = reproduce.every_request(every, rows)
    # the table shows the patched engines at 17, 32 and 47, nothing differing; the sentence said "completed no batch"
    assert "completed no batch" not in said and "completed none of them" not in said
    for engine, mine in rows.groupby("engine"):
        assert f"**{engine}** (`max_num_seqs` " in said  # names each engine as the table does, with its max_num_seqs
        if "patched" in engine:
            sizes = ", ".join(str(n) for n in mine["requests"][:-1]) + f" and {mine['requests'].iloc[-1]}"
            assert re.search(rf"\*\*{re.escape(engine)}\*\* \(`max_num_seqs` \d+\) answered every request", said)
            assert f"requests and completed {sizes}" in said


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
    assert "never misreads" in workarounds.patched_batches(patched)
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
    assert 'V0_20_2 = "engine_scenarios_v0_20_2"' in nb and "recorded_in=V0_20_2" in nb


# Item 4: the capture sizes printed say which hold a FULL graph, for the engines' real max_num_seqs.


def test_the_capture_sizes_line_says_which_sizes_hold_a_full_graph():
    from flexfix.edition import glossary

    line = glossary.capture_sizes_line(48)
    assert "PIECEWISE at every one" in line and line.endswith("only at [1, 2, 4, 8, 16, 24, 32, 40, 48]")
    src = next(text(c) for c in cells("01_reproduce_ima") if "graph_path.k_at_capture_line()" in text(c))
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
    # which recordings ran the same seeds is generated from the edition's data (A3), not typed into the markdown
    cell = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("## Crash or wrong answer"))
    assert "H100" not in cell and "H200" not in cell and "another commit" not in cell


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


# The newcomer reading of the published (H200) edition: A1-A7, B1-B5, C1-C4.


def _md(stem, start):
    return next(text(c) for c in cells(stem) if c["cell_type"] == "markdown" and text(c).startswith(start))


def test_a1_crash_or_wrong_answer_is_taught_as_the_mapped_front_everywhere():
    """The first screen, the replay-errors caption and takeaway 3 said a crash is a read outside the cache and a wrong
    answer a read of valid pages; the data and the section on what decides say: pads read in front, mapped or not."""
    nb = "\n".join(text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "markdown")
    wrongs = [
        "when a\nmisread entry points outside the cache",
        "a read outside the cache: no answer",
        "a read of valid pages that are not the request's",
        "misread cells holding valid page numbers give",
    ]
    for wrong in wrongs:
        assert wrong not in nb
    # round 22, D5: the rule is said once, in the section on what decides, and summed up in the takeaways; the first
    # screen and the caption no longer restate it
    for start in ("So a misread cell", "## Takeaways"):
        cell = _md("01_reproduce_ima", start)
        assert "`-1` pad" in cell and "mapped" in cell, start
    assert "Crash\nor wrong answer: what decides" in _md("01_reproduce_ima", "# 01")
    caption = _md("01_reproduce_ima", "*How to read it:* a point")
    assert "the opening of this section says which" not in caption and "`-1` pad" not in caption


def _same_seeds(device, live):
    from flexfix.edition.narrative import outcome_cause as story
    from flexfix.edition.tables import outcome_cause as cause_tables

    kernel, kernel_prov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    runs, cause_prov = cause_tables.recorded(DATA)
    return story.same_seeds(kernel, kernel_prov, runs, None if live else cause_prov, kernel if live else None, device)


def test_a3_which_recordings_ran_the_same_seeds_is_said_from_what_the_edition_shows():
    kernel, kernel_prov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    from flexfix.edition.tables import outcome_cause as cause_tables

    _, cause_prov = cause_tables.recorded(DATA)
    cpu = _same_seeds("cpu", live=False)
    assert cpu.startswith("**Which recordings ran the same seeds.** ") and "2 recordings of this edition" in cpu
    assert str(kernel_prov["git_commit"])[:10] in cpu and str(cause_prov["git_commit"])[:10] in cpu
    assert "in this run" not in cpu.split(":")[0] and "cannot fault" in cpu
    gpu = _same_seeds("cuda", live=True)  # the GPU branch: placements and torch-only runs measured here
    assert "3 recordings of this edition" in gpu and ", 2 of them in this run" in gpu
    assert (
        "| the plain `default` runs of the placement experiment above (caches where PyTorch put them) "
        "| this run (GPU), at this edition's commit |"
    ) in gpu
    assert str(cause_prov["git_commit"])[:10] not in gpu and "cannot fault" not in gpu


def test_a4_a_fault_in_the_runs_own_read_is_not_counted_as_the_replays():
    from flexfix.edition.tables import outcome_cause as cause_tables
    from flexfix.edition.tables.outcomes import _placement_rows

    runs, _ = cause_tables.recorded(DATA)
    table = cause_tables.placement_table(runs)
    row = table.loc["as_strided, batch 48, cache fenced, then read in front of V"]
    assert row["illegal_memory_access"] == 0 and row[cause_tables.OWN_READ_FAULT] == 1
    assert row[cause_tables.AS_PREDICTED] == "none replayed"
    rows = pd.DataFrame(_placement_rows(runs, "there"))
    mine = rows[rows["case"].str.startswith("as_strided, batch 48, cache fenced, then read in front of V")]
    assert list(mine["outcome"]) == [cause_tables.OWN_READ_FAULT]


def test_a2_a5_b2_each_every_request_engine_says_its_max_num_seqs_and_its_dispatch():
    from flexfix.edition import glossary
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.outcomes import engine_max_num_seqs, every_request_dispatch

    every, rows = _every()
    dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    assert list(dispatch.columns[:2]) == ["engine", "max_num_seqs"]
    said = reproduce.every_request(every, rows, dispatch)
    for _, run in every.iterrows():
        assert f"(`max_num_seqs` {engine_max_num_seqs(run)})" in said
    stock = dispatch[dispatch["engine"].str.endswith("stock")]
    assert set(stock["runs with"]) == {"FULL"}  # why the stock engine misread at 17: a FULL graph there
    assert "by vLLM's dispatcher its batch of 17 replays a FULL decode graph" in said
    fix = workarounds.fix_on_every_request(rows, dispatch, "there")
    seqs = sorted(set(dispatch["max_num_seqs"]))
    if len(seqs) > 1:
        assert "not the same settings" in fix and "same settings as" not in fix
    nb02 = "\n".join(text(c) for c in cells("02_apply_flexfix"))
    assert "with the same settings" not in nb02


def test_a6_the_positive_control_names_the_gpu_its_files_were_recorded_on():
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.workarounds import workaround_table

    safety, safety_prov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    _, control = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    said = workarounds.without_plugin(workaround_table(safety, cost), "a", "b", safety_prov, control)
    gpus = {p["device_name"] for p in control}
    assert all(g in said for g in gpus)
    same = gpus == {safety_prov["device_name"]}
    assert ("the same GPU as these checks" in said) == same
    assert "but another GPU (its" not in said


def test_b1_b4_b5_claims_are_attributed_or_pointed_to_by_title():
    nb01 = "\n".join(text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "markdown")
    nb02 = "\n".join(text(c) for c in cells("02_apply_flexfix") if c["cell_type"] == "markdown")
    assert "too small for batch variance" not in nb01 + nb02
    assert nb01.count('"Engine level: vLLM 0.20.0 with flexfix\'s patch"') >= 1
    assert "Is your vLLM affected?" in _md("01_reproduce_ima", "# 01")
    from flexfix.edition.narrative import workaround_control  # r17 A2: 02's last takeaway is generated

    take = _md("02_apply_flexfix", "## Takeaways") + workaround_control.takeaway(None, None, None)
    assert "also avoid the bug" not in take and "by construction" in take and "positive" in take


def test_b3_the_older_releases_are_counted_by_the_surveys_own_note():
    releases, prov = schemas.recorded(DATA, "vllm_releases", schemas.RELEASES, "cpu")
    said = workarounds.releases_surveyed(releases, prov)
    assert f"by the survey's own count {prov['parameters']['older_not_examined']}" in said


def test_c1_the_one_table_is_shown_whole(capsys):
    from flexfix.edition.tables.outcomes import show_whole

    table = pd.DataFrame({"a": range(80)})
    shown = []
    import IPython.display

    real = IPython.display.display
    IPython.display.display = lambda t: shown.append(t._repr_html_())
    try:
        show_whole(table)
    finally:
        IPython.display.display = real
    assert "<td>79</td>" in shown[0] and "<td>40</td>" in shown[0] and "..." not in shown[0]
    cell = next(text(c) for c in cells("01_reproduce_ima") if "tables.outcome_table(" in text(c))
    assert cell.startswith("show_whole(")


def test_c2_the_dotted_guide_and_the_crash_cross_are_in_the_legend():
    import matplotlib

    matplotlib.use("agg")
    from flexfix.edition import plots

    kernel, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    fig = plots.replay_errors(kernel, "t")
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any(lb.startswith("dotted line: a step where runs gave no answer") for lb in labels)
    assert any("the run ended at that step, so no point below" in lb for lb in labels)


def test_a_live_every_request_engine_reports_the_max_num_seqs_it_was_started_with():
    """A live engine table holds a run's request counts as tuples (a file holds lists): the max_num_seqs shown is
    the one llm_kwargs started the engine with, not the fallback of 16 (the H200 edition at 09dcedd printed 16 for
    engines started with 47, beside a stock batch of 17 that misread)."""
    from dataclasses import asdict

    from flexfix.edition.tables.outcomes import engine_max_num_seqs
    from flexfix.measure.engine_sweep import EngineRun, llm_kwargs

    run = EngineRun(model="tiny", batch_invariant=False, patched=False, requests=(), every_request=(17, 32, 47))
    started = llm_kwargs(run, "model")["max_num_seqs"]
    assert started == 47
    live = pd.Series({"engine": run.name, **asdict(run)})
    recorded = pd.Series(
        {"engine": run.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(run).items()}}
    )
    assert engine_max_num_seqs(live) == engine_max_num_seqs(recorded) == started
