"""Teaching round 5, notebooks 01 and 02 and the edition README: a newcomer's reading of the published GPU edition at
595743f (findings A-D of r0102, and C4 of r0305). Each test ties a sentence, table or figure to the data it states."""

import pandas as pd
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel, _md

from flexfix.edition import schemas
from flexfix.edition.narrative import reproduce

# A1: whether the measured errors of two runs differ is compared, never assumed.


def test_a1_the_errors_of_two_runs_are_compared_not_assumed_to_differ():
    kernel, _ = _kernel()
    said = reproduce.faces(kernel, "here", kernel, "there", "cuda")
    assert "draw the same crosses" in said and "only the measured errors differ" not in said
    assert "so are the measured errors, equal at all" in said
    other = kernel.copy()
    other["records"] = [
        [{**r, "max_error": (r.get("max_error") or 0) * 2 or None} for r in recs] for recs in other["records"]
    ]
    said = reproduce.faces(other, "here", kernel, "there", "cuda")
    assert "the measured errors differ at" in said and "so are the measured errors" not in said


# A2: max_num_seqs explains a silent misread at a batch the fresh engine runs outside a FULL graph, not a fault at a
# batch the other engines completed replaying a FULL graph.


def test_a2_a_fault_at_a_batch_completed_elsewhere_with_a_full_graph_is_not_put_on_dispatch():
    from flexfix.edition import glossary, tables
    from flexfix.edition.tables.outcomes import dispatch_pairs, every_request_dispatch
    from flexfix.measure import engine_sweep, record

    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    every_dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    threshold = tables.threshold_table(engines)
    full = reproduce.completed_full(threshold, glossary.decode_dispatch(dispatch_pairs(threshold)))
    assert 32 in full  # the fresh and the growing engines completed 32 replaying a FULL graph
    said = reproduce.every_request(every, rows, every_dispatch, full)
    assert "before it completed the batch of 32" in said and "dispatch does not explain this fault" in said
    assert "dispatch does not explain" not in reproduce.every_request(every, rows, every_dispatch, [])
    md = _md("01_reproduce_ima")
    assert "so there that batch replays a FULL graph" not in md and "not a fault" in md
    # Review 3 Honesty 4: the recorded call is given the threshold engines too, compared only on one GPU.
    said = reproduce.every_request(every, rows, every_dispatch, full, ("NVIDIA H100", "NVIDIA H100"))
    assert "dispatch does not explain this fault" in said and "not compared across GPUs" not in said
    said = reproduce.every_request(every, rows, every_dispatch, full, ("NVIDIA H200", "NVIDIA H100"))
    assert "dispatch does not explain this fault" not in said
    assert "The crash-threshold engines ran on NVIDIA H200, these on NVIDIA H100" in said
    code = "\n".join(text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "code")
    assert "full = story.completed_full(threshold, dispatch)" in code
    assert "story.every_request(every, every_rows, every_dispatch, full, (threshold_gpu," in code
    assert "H100" not in code  # the recording's GPU is named from its provenance, not typed


# A3: the children's own status words are not presented as the table's outcomes.


def test_a3_the_child_log_summary_does_not_pass_its_status_words_off_as_the_outcomes():
    from flexfix.edition.tables.outcomes import ChildLog

    log = ChildLog(words_are_outcomes=False)
    for i, status in enumerate(["illegal_memory_access"] * 3 + ["ok"]):
        log(f"run {i}: {status} (exit 0, 2.0 s)")
    said = log.summary("the placement runs")
    assert "4 runs" in said and "illegal_memory_access" not in said  # r6 D12: no status words beside the tables
    assert "the tables below say how each ended" in said


def test_a3_the_child_log_of_the_other_runners_says_its_words_are_the_status_column():
    """Review 3 Honesty 3: for record.kernel_outcomes and record_engine the children's last status word is the
    status column; only the placement runs (01's cause_log) carry the caveat."""
    from flexfix.edition.tables.outcomes import ChildLog

    log = ChildLog()
    log("run 0: ok (exit 0, 2.0 s)")
    said = log.summary("the torch-only runs")
    assert "the tables below say" not in said and "their status in the table below: 1 ok" in said
    source = "\n".join(text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "code")
    assert "cause_log = ChildLog(words_are_outcomes=False)" in source
    assert "kernel_log = ChildLog()" in source


# A4: the scenarios that ran on fewer seeds are listed from the runs, not typed.


def test_a4_the_scenarios_on_fewer_seeds_are_listed_from_the_runs():
    from flexfix.edition.narrative import outcome_cause as cause_story
    from flexfix.edition.tables import outcome_cause as cause_tables

    runs, _ = cause_tables.recorded(DATA)
    said = str(cause_story.seeds_not_run(runs))
    seeds = runs.groupby(cause_tables.SCENARIO_KEYS, sort=False, dropna=False)["seed"].nunique()
    fewer = [cause_tables.scenario_label(*k) for k, n in seeds.items() if n < runs["seed"].nunique()]
    assert fewer and all(f"* {name}:" in said for name in fewer)
    assert any("K guarded, V fenced" in name for name in fewer)  # the mixed placements, which the typed list left out
    full = runs[runs["seed"].isin(sorted(set(runs["seed"]))[:1])]
    assert "Every scenario ran on all 1 seed" in str(cause_story.seeds_not_run(full))
    md = _md("01_reproduce_ima")
    assert "the direct reads and the controls ran on fewer seeds" not in md
    assert any("cause_story.seeds_not_run(cause_runs)" in text(c) for c in cells("01_reproduce_ima"))


# A5, B3: no colour said to mean what it means in the read-window figure; a comparison no output makes is marked as
# reasoning.


def test_a5_b3_the_outcome_colours_are_not_tied_to_the_read_windows_and_reasoning_is_marked():
    md = _md("01_reproduce_ima")
    assert "as in the read-window figure" not in md
    assert "The driver's list is a weaker witness than a read:" not in md
    assert "(reasoning; no output here compares the two)" not in md  # round 7 A3: the read-in-front rows compare
    assert "The driver's list is compared with a direct read where a run made both" in md


# B1: 02 claims of the check-patch table only what its columns show.


def test_b1_the_check_patch_sentence_claims_only_its_columns():
    md = _md("02_apply_flexfix")
    assert "and reverted in a child process" not in md and "vLLM starts as it is" not in md
    assert "`plugin says`" in md


# B2: the crash-threshold engines' answers are said to be unchecked.


def test_b2_the_threshold_engines_answers_are_said_unchecked():
    from flexfix.edition import tables
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    said = str(reproduce.crash_threshold(tables.threshold_table(engines)))
    assert "their answers were not checked" in said and "check that)" not in said  # round 22, D6


# C1, C4: the read-window figure draws kinds of cell in colours of its own, and its legend says what a cell holds,
# not what follows from it.


def test_c1_c4_the_read_window_legend_uses_no_outcome_colour_and_no_consequence():
    from flexfix.edition import plots
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    kinds = {h.lower() for _, h in plots.READ_WINDOW_COLOURS.values()}
    assert not kinds & {h.lower() for h in OUTCOME_COLOURS.values()}
    from flexfix.edition.plots.layouts import READ_WINDOW_NOTES

    notes = " ".join(READ_WINDOW_NOTES.values())
    assert "harmless" not in notes and "mask hides" not in notes
    for stem in ("01_reproduce_ima", "03_stride_layouts"):
        md = _md(stem)
        for word in ("(blue)", "(orange)", "(yellow)", "(vermillion)"):
            assert word not in md, (stem, word)


# C2: a fault in a run's own read has a fill of its own, not the replay's black.


def test_c2_an_own_read_fault_is_not_drawn_in_the_replays_black():
    from flexfix.edition.plots.outcome_cause import OUTCOME_CAUSE_COLOURS, PROBE_FAULT

    assert OUTCOME_CAUSE_COLOURS[PROBE_FAULT][1] != OUTCOME_CAUSE_COLOURS["illegal memory access"][1]
    assert len({h for _, h in OUTCOME_CAUSE_COLOURS.values()}) == len(OUTCOME_CAUSE_COLOURS)


# C3: the error figures name the GPU, not the device kind.


def test_c3_the_error_figures_name_the_machine():
    sources = [text(c) for stem in ("01_reproduce_ima", "02_apply_flexfix") for c in cells(stem)]
    calls = [s for s in sources if "plots.replay_errors(" in s]
    assert len(calls) == 3 and all("tables.device_title(device" in s for s in calls)
    assert not any('"H100, CUDA-graph' in s for s in calls)


# A6: the README's evidence column counts recordings, by a rule it states, wherever a provenance line sits in its
# printed line; a notebook whose live part is a FAKE server says so; a CPU part by design is not called refused.


def _nb(outputs):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 09 · Teaching a thing"), nbformat.v4.new_code_cell("x")]
    nb.cells[1].outputs = outputs
    return nb


def test_a6_the_readme_counts_each_recording_once_and_says_a_fake_live_part():
    import nbformat

    from flexfix.edition import publish

    line = "recorded on Old GPU (driver 1), torch 2, vLLM 0.20.0, commit {c}, 2026-11-2{d}T00:00:00+00:00"
    text = "\n".join(
        [
            line.format(c="abc", d=1),
            "data/x-cuda.json: " + line.format(c="abc", d=1),
            "y   " + line.format(c="def", d=2),
        ]
    )
    stream = nbformat.v4.new_output("stream", name="stdout", text=text + "\n")
    evidence = publish.about(_nb([stream]))[1]
    # round 21, D1: the line count inside the parenthesis, after the GPUs
    assert evidence.startswith("live, except 2 recorded results shown with a `recorded on` line (on Old GPU; 3 such")
    fake = nbformat.v4.new_output(
        "display_data", data={"text/markdown": "**This run's live part is the FAKE server, not vLLM** (why)"}
    )
    evidence = publish.about(_nb([fake, stream]))[1]
    assert evidence.startswith(publish.FAKE_LIVE + "; 2 recorded results")  # round 8: what else runs live
    assert publish.about(_nb([fake]))[1] == publish.FAKE_LIVE
    readme = publish.readme([], False)
    assert "which refuses a failed, incomplete or CPU run" not in readme
    assert "06's harness self-test against a FAKE server" in readme  # round 20, A4


# D8: a first fault after a gap of untried counts is said to bracket the threshold, not to be it.


def test_d8_a_first_fault_after_untried_counts_brackets_the_threshold():
    from flexfix.edition import tables
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    said = str(reproduce.crash_threshold(table))
    growing = table[table["how"] != table["how"].iloc[0]]
    done = sorted(growing[growing["outcome"] == "completed"]["requests"])
    first = int(growing[growing["outcome"] != "completed"]["requests"].min())
    assert done[-1] < first - 2  # the recorded growing engine left a gap of untried counts below its first fault
    assert f"no count from {done[-1] + 1} to {first - 1} was tried" in said
    assert said.count("was tried") == 1  # the fresh engines tried the count just below theirs


def test_d8_a_gap_of_one_untried_count_is_said_as_one_count():
    """Review 3 Bugs: a gap of one count read "no count from 46 to 46 was tried"."""
    from flexfix.edition import tables
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    growing = table[table["how"] != table["how"].iloc[0]]
    first = int(growing[growing["outcome"] != "completed"]["requests"].min())
    row = growing[growing["outcome"] == "completed"].iloc[[-1]].copy()
    row["requests"] = first - 2
    said = str(reproduce.crash_threshold(pd.concat([table, row], ignore_index=True)))
    assert f"count {first - 1} was not tried" in said
    assert f"no count from {first - 1} to {first - 1}" not in said


# Review 3 Honesty 2: that two runs read the same cells is said only from recorded scenario sizes.


def test_faces_say_the_same_cells_only_where_both_runs_kept_the_same_scenario_sizes():
    kernel, _ = _kernel()
    said = reproduce.faces(kernel, "here", kernel, "there", "cuda")
    assert "draw the same crosses" in said and "misread cells" not in said
    # round 6: a run's step records may hold its widths, so the clause speaks of its parameters only
    assert "the scenario sizes are not among the parameters of here and there" in said
    assert "kept no capture or replay lengths" not in said
    prov = {"parameters": {"capture_len": 200, "replay_lens": [600, 120]}}
    said = reproduce.faces(kernel, "here", kernel, "there", "cuda", prov, prov)
    assert "the same kernel and misread cells; same seeds and scenario sizes (capture 200, replays 600 and 120)" in said
    other = {"parameters": {"capture_len": 100, "replay_lens": [600, 120]}}
    said = reproduce.faces(kernel, "here", kernel, "there", "cuda", prov, other)
    assert "misread cells" not in said and "other scenario sizes" in said


def test_same_seeds_compares_runs_batch_by_batch_and_says_cells_only_from_sizes():
    from flexfix.edition.narrative import outcome_cause as cause_story
    from flexfix.edition.tables import outcome_cause as cause_tables

    kernel, kernel_prov = _kernel()
    runs, prov = cause_tables.recorded(DATA)
    strided = (kernel["copy"] == "as_strided") & (kernel["batch"] > 16)
    default = (runs["placement"] == "default") & (runs["v_placement"] == "default") & runs["touch"].isna()
    arm = runs.copy()
    arm.loc[default, "status"] = "illegal_memory_access"
    same = kernel.copy()
    same.loc[strided, "status"] = "illegal_memory_access"
    wider = same[strided].copy()  # another batch past one query block, another outcome, in both recordings
    wider["batch"], wider["status"] = 32, "wrong_result"
    both = pd.concat([same, wider], ignore_index=True)
    arm = pd.concat([arm, wider.assign(placement="default", v_placement="default", touch=None)], ignore_index=True)
    said = str(cause_story.same_seeds(both, kernel_prov, arm, prov, both, "cuda"))
    assert "On every seed they share, the recordings below ended the same way" in said and "ended one way" not in said
    arm.loc[default & (arm["seed"] == 0), "status"] = "wrong_result"
    said = str(cause_story.same_seeds(both, kernel_prov, arm, prov, both, "cuda"))
    assert "On the same runs (batch 48 seed 0) the recordings below ended differently" in said
    assert "the cells they read were the same" not in said and "whether they read the same cells is not shown" in said


# Review 3 Bugs: the measured errors are compared only where both runs measured steps, and of the same number.


def test_errors_compared_says_nothing_without_steps_and_names_uneven_steps():
    kernel, _ = _kernel()
    bare = kernel.copy()
    bare["records"] = [[{k: v for k, v in r.items() if k != "max_error"} for r in recs] for recs in bare["records"]]
    said = reproduce.faces(bare, "here", bare, "there", "cuda")
    assert "draw the same crosses" in said and "both runs measured" not in said and "of the 0 steps" not in said
    longer = kernel.copy()
    longer["records"] = [
        list(recs) + [dict(recs[-1])] if c != "as_strided" and recs else recs
        for recs, c in zip(longer["records"], longer["copy"])
    ]
    said = reproduce.faces(longer, "here", kernel, "there", "cuda")
    assert "recorded different numbers of steps" in said


# D11: no CUDA graphs ahead of piecewise graphs is said, with its cause unmeasured, only where the table shows it.


def test_d11_eager_ahead_of_piecewise_is_said_from_the_table():
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.workarounds import workaround_table

    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    table = workaround_table(safety, cost)
    said = str(workarounds.without_plugin(table, "here", "there"))
    setting = table["vLLM setting"].astype(str)
    cols = [c for c in table.columns if str(c).startswith("vs patched")]
    eager, piece = table[setting.str.contains("enforce_eager")], table[setting.str.contains("PIECEWISE")]
    ahead = [c for c in cols if float(eager[c].iloc[0]) > float(piece[c].iloc[0])]
    assert ahead and "came out faster" not in said  # r6 A5: ratios of one engine each rank nothing
    assert "which setting costs least is not read from these ratios" in said


# D10: the distinct-token count says what it counts where it is first printed.


def test_d10_the_distinct_token_count_says_what_it_counts():
    from flexfix.edition.narrative import workarounds
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    patched = engines[engines["scenario"].astype(str).str.startswith("patched")]
    said = str(workarounds.patched_batches(patched))
    assert "request 0's stream had" in said and "would match itself trivially" in said


# D12: 02 keeps its children's log lines out of the page, as 01 does, and says in one line how they ended.


def test_d12_02_summarises_its_child_logs():
    import ast

    sources = [text(c) for c in cells("02_apply_flexfix") if c["cell_type"] == "code"]
    runners = [s for s in sources if "record.kernel_outcomes(" in s or "record.record_engine(" in s]
    assert len(runners) == 2
    for source in runners:
        calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
        run = next(c for c in calls if getattr(c.func, "attr", "") in ("kernel_outcomes", "record_engine"))
        assert any(k.arg == "progress" for k in run.keywords)
        assert ".summary(" in source


# D16: the words first say once that FULL/PIECEWISE are the full/piecewise graphs and that the distance is the stride.


def test_d16_the_words_tie_the_capitals_and_the_distance_to_the_text():
    words = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("## Words first"))
    assert "`FULL` and `PIECEWISE`" in words and "full and piecewise graphs" in words
    assert "row stride" in words and "distance from one row to the next" in _md("01_reproduce_ima").split("## Words")[0]


# D5: the one table names a live row's recording as its `from` column does, and a recorded placement row its file.


def test_d5_the_one_table_labels_a_live_recording_one_way():
    from flexfix.edition import tables
    from flexfix.edition.tables import outcome_cause as cause_tables
    from flexfix.measure import record

    kernel, _ = _kernel()
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    placements, _ = cause_tables.recorded(DATA)
    here = "this run (Some GPU)"
    live = engines.drop(columns=["source"], errors="ignore")  # a live run's table has no source column
    out = tables.outcome_table(
        kernel, sanitizer, live, sources=("recorded", "recorded", here), this_run=kernel, this_run_source=here,
        placements=placements, placements_source="recorded",
    )  # fmt: skip
    mine = out[out["experiment"] == "vLLM 0.20.0 engine"]
    assert set(mine["from"]) == {here} and set(mine["recorded_in"]) == {here}
    placed = out[out["experiment"] == "torch-only, caches placed by hand"]
    assert set(placed["recorded_in"]) == {"outcome_cause"}
    sources = [text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "code"]
    assert not any('this_run_source=f"this run ({device})"' in s for s in sources)
