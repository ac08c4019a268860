"""Teaching round 4, notebooks 01 and 02: a newcomer's reading of the published GPU edition (findings A-D of
r0102). Each test ties a sentence, table or figure to the data it states."""

import pandas as pd
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce
from flexfix.edition.tables import outcome_cause as cause_tables


def _md(stem):
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "markdown")


def _kernel():
    return schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)


# A2: a disagreement between recordings is said only where the recordings shown disagree.


def test_a2_same_seeds_says_whether_the_recordings_agree_from_the_data():
    kernel, kernel_prov = _kernel()
    runs, prov = cause_tables.recorded(DATA)
    agree = kernel.copy()  # every recording the same: the torch-only runs stand in for this run's
    strided = (agree["copy"] == "as_strided") & (agree["batch"] > 16)
    arm = runs.copy()
    default = (arm["placement"] == "default") & (arm["v_placement"] == "default") & arm["touch"].isna()
    arm.loc[default, "status"] = "illegal_memory_access"
    said = cause_story.same_seeds(agree, kernel_prov, arm, None, agree, "cuda")
    assert set(agree.loc[strided, "status"]) == {"illegal_memory_access"}
    assert "On every seed they share, the recordings below ended the same way" in said and "ended one way" not in said
    arm.loc[default & (arm["seed"] == 0), "status"] = "wrong_result"
    said = cause_story.same_seeds(agree, kernel_prov, arm, None, agree, "cuda")
    assert "On the same runs (batch 48 seed 0) the recordings below ended differently" in said
    assert "On every seed they share" not in said


def test_a2_the_notebook_does_not_assert_a_disagreement_it_may_not_show():
    nb = _md("01_reproduce_ima")
    assert "The same seeds can end in an illegal memory access in one run" not in nb
    assert "no earlier run recorded it" not in nb and "so for\n  those it is the likely explanation" not in nb
    assert "Can the same seeds end in an illegal memory access" in nb


# A3, A4, B2: the cells decide whether a pad is read; given a pad, the memory in front decides.


def test_a3_a4_b2_the_first_paragraph_and_takeaway_scope_what_decides():
    nb = _md("01_reproduce_ima")
    assert "The cells read do not decide" not in nb and "the cells read do not decide" not in nb
    assert "every `as_strided` run past one query block\n  read `-1` pads" not in nb
    first = text(cells("01_reproduce_ima")[0])
    assert "replays a *full* CUDA graph" in first and "captured at another row stride" in first  # A4, r6 D16
    assert "group of\n16 requests" not in first and "group" not in first  # D1: query block, one word throughout
    runs, _ = cause_tables.recorded(DATA)
    said = cause_story.outcome_cause(runs, "there")
    assert said.startswith("**What decides, once a pad is read: the memory in front of the KV cache.**")
    assert "not the cells" not in said


def test_b2_the_misread_sentence_counts_the_replays_that_read_no_pad():
    from flexfix.measure import outcome_cause

    reads = outcome_cause.reads_table([0, 1, 2], 48)
    strided = reads[(reads["copy"] == "as_strided") & (reads["step"] != "capture")]
    none = int((strided["pad"] == 0).sum())
    said = cause_story.misread_cells(reads)
    assert none > 0 and f"The other {none} replay" in said and "can only be silently wrong" in said
    assert "on a GPU a run that faults stops at its first misreading replay" in said  # D8


# B1: the guarded arm has no control, and the sentence says so.


def test_b1_an_arm_without_a_control_is_said_to_have_none():
    runs, _ = cause_tables.recorded(DATA)
    controls = runs[(runs["copy"] != "as_strided") | (runs["batch"] <= 16)]
    said = cause_story.outcome_cause(runs, "there")
    assert "guarded" not in set(controls["placement"]) | set(controls["v_placement"])
    assert "No control ran with the caches `guarded`" in said
    extra = controls.iloc[[0]].assign(placement="guarded", v_placement="guarded")
    assert "No control ran" not in cause_story.outcome_cause(pd.concat([runs, extra], ignore_index=True), "there")


# B3: the cache's shape and strides behind "2,048 bytes in front" are printed, computed.


def test_b3_the_cache_layout_is_printed_from_the_scenario():
    from flexfix.mechanism import paged
    from flexfix.mechanism.kernel_repro import KernelScenario

    shape = KernelScenario().shape
    said = cause_story._cache_layout()
    tokens = shape.num_pages * paged.PAGE_SIZE
    assert f"`[1, {shape.num_kv_heads}, {tokens}, {shape.head_dim}]`" in said
    assert f"`[{shape.num_kv_heads * tokens * shape.head_dim}, {tokens * shape.head_dim}, {shape.head_dim}, 1]`" in said
    assert f"{paged.PAGE_SIZE * shape.head_dim * 2:,} bytes" in said


# A5: the step-by-step table shows the steps a crashed run never finished, as planned.


def test_a5_a_crashed_runs_steps_are_shown_as_planned():
    from flexfix.edition.tables.outcomes import replay_steps
    from flexfix.mechanism.kernel_repro import KernelScenario

    kernel, _ = _kernel()
    line, steps = replay_steps(kernel, "as_strided", 48, 0)
    planned = 1 + len(KernelScenario().replay_lens)
    assert len(steps) == planned and "shown as planned" in line
    assert steps["ran"].iloc[1] == "no: the process died here" and steps["ran"].iloc[0] == "yes"
    assert len(set(steps["K"])) > 1  # the replays' K differ from the capture's
    assert all(s == steps["launch_stride"].iloc[0] for s in steps["launch_stride"])  # frozen at capture
    assert [list(w) for w in steps["written_stride"]] == [[k, 1] for k in steps["K"]]
    _, sliced = replay_steps(kernel, "sliced", 48, 0)
    assert set(sliced["ran"]) == {"yes"}


# D6: the two-faces sentence is printed once.


def test_d6_the_two_faces_sentence_is_said_once():
    kernel, _ = _kernel()
    assert reproduce.BOTH_OUTCOMES not in reproduce.kernel_outcomes(kernel, "there", both_faces=False)
    calls = [text(c) for c in cells("01_reproduce_ima") if "story.kernel_outcomes(" in text(c)]
    assert sum("both_faces=False" not in c for c in calls) == 1


# D9: what decides is a list, and the own-read parenthesis is said once.


def test_d9_what_decides_is_a_list_without_repeats():
    runs, _ = cause_tables.recorded(DATA)
    said = cause_story.outcome_cause(runs, "there")
    assert said.count("the table counts it apart") == 1 and "\n* Caches `fenced`" in said


# C1, C5: the crash cross names the copy, the dotted line's legend no colour it does not have, the ring its absence.


def test_c1_c5_the_replay_error_legend_names_the_copy_and_says_when_no_ring_is_drawn():
    import matplotlib

    matplotlib.use("agg")
    from flexfix.edition import plots

    kernel, _ = _kernel()
    fig = plots.replay_errors(kernel, "t")
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    crash = next(lb for lb in labels if lb.startswith("illegal memory access"))
    assert "as_strided gave no answer" in crash
    assert not any("in the colour of the cross" in lb for lb in labels)  # every cross is black here
    silent = sum(r.get("outcome") == "wrong_result" for recs in kernel["records"] for r in recs)
    assert silent == 0 and "silently wrong answer (a ring): none in these runs" in labels


# C2: no series of the error figures takes a colour near an outcome's (sky blue read as the blue of "correct").


def test_c2_the_sliced_series_is_not_sky_blue_and_the_captions_say_what_colours_mean():
    from flexfix.edition import plots

    assert plots.REPLAY_ERROR_COLOURS["sliced"][0] != "sky blue"
    nb = _md("01_reproduce_ima")
    # sky blue names no series beside the blue of "correct": only the read-window figure, which has no blue, draws it
    # (round 5 C1: a palette of its own there)
    md = [text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "markdown"]
    said = [m for m in md if "sky blue" in m or "sky-blue" in m]
    assert all(m.startswith("*How to read it:* query block 0") for m in said)
    assert "sky blue" not in " ".join(m for m in md if "sliced" in m and "series" in m)
    assert "The colours here name kinds of cell, not the outcomes" not in nb
    assert "front mapped` of their log lines" not in nb and "call such a read `touch k`" not in nb  # logs not shown


# C3: the toy of the read-window figure has no pads, and its caption says so.


def test_c3_the_read_window_toy_has_no_pads_and_says_so():
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    lay = layouts.stride_layout(copy_to_persistent_as_strided, "a", g=3, g_max=4, w_max=64, k_capture=32, k_replay=48)
    assert not lay.never_written.any()
    caption = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("*How to read it:* query block 0"))
    assert "This toy has no `-1` pads" in caption


# C4: the two error figures are said to draw the same crosses only where the seeds ended at the same steps.


def test_c4_the_same_crosses_are_said_only_when_every_seed_stopped_at_the_same_step():
    kernel, _ = _kernel()
    assert "draw the same crosses" in reproduce.faces(kernel, "here", kernel, "there", "cuda")
    later = kernel.copy()
    later["records"] = [
        list(recs) + [{"outcome": "ok", "max_error": 1e-3}] if (c == "as_strided" and s == 0) else recs
        for recs, c, s in zip(later["records"], later["copy"], later["seed"])
    ]
    said = reproduce.faces(later, "here", kernel, "there", "cuda")
    assert "the same outcome in both runs" in said and "draw the same crosses" not in said


# C6: the outcome grid draws the seeds a scenario did not run, and a title names the GPU.


def test_c6_the_outcome_grid_marks_the_runs_not_run():
    import matplotlib

    matplotlib.use("agg")
    from flexfix.edition.plots.outcome_cause import outcome_grid

    runs, _ = cause_tables.recorded(DATA)
    fig = outcome_grid(runs, "t")
    drawn = [t.get_text() for t in fig.axes[0].texts]
    scenarios = runs.groupby(["copy", "batch", "placement", "v_placement", "touch"], dropna=False).ngroups
    assert drawn.count("not run") == scenarios * runs["seed"].nunique() - len(runs) > 0
    cell = next(text(c) for c in cells("01_reproduce_ima") if "outcome_cause.run_scenarios(" in text(c))
    assert "tables.device_title(device)" in cell


# D5: the child processes' log lines are summarised, not printed one by one.


def test_d5_child_logs_are_summarised():
    from flexfix.edition.tables.outcomes import ChildLog

    log = ChildLog()
    log("as_strided batch  48 seed 4: illegal_memory_access (exit 1, 17.3 s): torch.AcceleratorError: CUDA")
    log("sliced batch  48 seed 4: ok (exit 0, 16.7 s): sliced copy, graph launch, batch 48, seed 4")
    log("sliced batch  48 seed 5: timeout (killed by SIGKILL, 300.0 s)")
    said = log.summary("x")
    assert said.startswith("x: 3 runs, each alone in a fresh process") and "1 illegal_memory_access" in said  # r6 D12
    assert "1 timeout" in said
    assert "17-300 s each" in said
    code = [text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "code"]
    for call in ("record.kernel_outcomes(", "outcome_cause.run_scenarios("):
        assert "progress=" in next(c for c in code if call in c)
    engines = next(c for c in code if "record.record_engines_side_by_side(" in c)
    assert "progress=engine_log" in engines and 'engine_log.summary("the engines"' in engines
    log("engine a: refused (exit 1, 49.7 s): ValueError")  # an engine's line, as engines_side_by_side reports it
    assert log.lines[-1].startswith("engine a: refused") and "x: 4 runs" in log.summary("x")


def test_d5_the_side_by_side_engines_report_to_the_progress_they_are_given(monkeypatch, tmp_path):
    """01 gives its engines' lines to a ChildLog through record_engines_side_by_side's progress (it redirected
    stdout around the call before), which passes it on to engines_side_by_side."""
    from flexfix.measure.record import engines

    def side_by_side(names, runs, *, workers, progress, save_scenarios, save_runs):
        progress("engine a: ok (exit 0, 1.0 s): a")
        return pd.DataFrame([{"scenario": "a"}]), pd.DataFrame([{"engine": "r"}])

    monkeypatch.setattr(engines, "engines_side_by_side", side_by_side)
    monkeypatch.setattr(engines.results, "write_results", lambda *a, **k: None)
    said = []
    engines.record_engines_side_by_side(["a"], [], tmp_path, "cpu", workers=1, progress=said.append)
    assert said == ["engine a: ok (exit 0, 1.0 s): a"]


# 02: A7 the takeaway points to the exact counts, B5 the 0.20.2 file is named inline, C7 the figure has a caption.


def test_a7_b5_c7_notebook_02_states_exact_counts_names_its_file_and_reads_its_figure():
    nb = _md("02_apply_flexfix")
    assert "answered some wrongly" not in nb  # A7: 1 request of 17, said by the sentence under the tables
    assert "`data/README.md` names the recording" not in nb  # B5
    code = next(text(c) for c in cells("02_apply_flexfix") if "engine_scenarios_v0_20_2" in text(c))
    # Review 3 Honesty 10: the file is printed as the path read, not typed.
    assert "data/engine_scenarios_v0_20_2-cuda.json" not in code and "prov['parameters']" in code
    assert 'results.results_path(DATA_DIR, V0_20_2, "cuda").name' in code and "data/{v0_20_2_file}:" in code
    v, prov = schemas.recorded(DATA, "engine_scenarios_v0_20_2", schemas.ENGINE_SCENARIOS)
    assert prov["vllm"] == "0.20.2" and prov["parameters"]
    sources = [text(c) for c in cells("02_apply_flexfix")]
    fig = next(i for i, s in enumerate(sources) if s.startswith("plots.replay_errors(fixed_runs"))
    assert sources[fig + 1].startswith("*How to read it:*")  # C7


# D12: engine_status is the engine's, repeated on each row; D14: scenario (b) runs batch-invariant.


def test_d12_d14_engine_status_and_scenario_b_are_said_as_they_are():
    from flexfix.integration import engine

    nb01, nb02 = _md("01_reproduce_ima"), _md("02_apply_flexfix")
    for nb in (nb01, nb02):
        assert (
            "how the whole engine ended, repeated on" in nb.replace("\n", " ")
            or "`engine_status` is how the whole" in nb
        )
    b = engine.SCENARIOS["b"]
    assert b.batch_invariant and b.patch == "bi_only"
    assert "* (b) asks for `VLLM_BATCH_INVARIANT=1`" in nb01


# D18: the patch checks, when all pass, are a list of meanings, not a run-on report.


def test_d18_the_patch_checks_are_a_list_when_all_pass():
    from flexfix.edition.narrative import workarounds

    checks = pd.DataFrame([{"check": "apply() patched", "value": True}, {"check": "revert() reverted", "value": True}])
    said = workarounds.patch_cycle(checks)
    assert "In order:" not in said and said.startswith("**All 2 checks came out as they should:**")
    # round 22, D14: the meanings are the table's own column, not a list restating its rows
    shown = workarounds.checks_table(checks)
    assert list(shown["what it means"]) == ["apply() patched both", "revert() undid the patch"]


# A8: the positive control's GPU sentence has no parenthesis inside a parenthesis, and the live rerun's stock engine
# starts with the max_num_seqs of the recorded one (after A1, both 47), so the pointer to notebook 01 holds.


def test_a8_the_positive_control_sentence_reads_and_the_live_stock_engine_matches_the_recorded():
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.outcomes import engine_max_num_seqs
    from flexfix.edition.tables.workarounds import workaround_table
    from flexfix.measure import engine_sweep, record

    safety, safety_prov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    control, control_provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    said = workarounds.without_plugin(workaround_table(safety, cost), "a", "b", safety_prov, control_provs)
    assert "these checks (" not in said and "max_num_seqs` printed beside its rows" in said
    live = engine_sweep.parse_runs("tiny:stock:full", requests=(), every_request=(17, 32, 47))
    recorded_stock = [engine_max_num_seqs(r) for _, r in control.iterrows() if not bool(r["patched"])]
    from dataclasses import asdict

    assert {engine_max_num_seqs(pd.Series(asdict(r))) for r in live} == set(recorded_stock)
    nb = next(text(c) for c in cells("01_reproduce_ima") if "engine_sweep.parse_runs(" in text(c))
    assert '"tiny:stock:full,' in nb and "every_request=(17, 32, 47)" in nb


# D20: the edition's README gives each notebook's purpose and says which evidence is live and which recorded.


def test_d20_the_edition_readme_says_each_notebooks_purpose_and_its_recorded_evidence():
    import nbformat

    from flexfix.edition import publish

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 09 · Teaching a thing\n\nmore"),
        nbformat.v4.new_code_cell("x"),
    ]
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "stream", name="stdout", text="recorded on Old GPU (driver 1), torch 2, vLLM 0.20.0, commit abc, 2026\n"
        )
    ]
    purpose, evidence = publish.about(nb)
    assert purpose == "Teaching a thing"
    assert evidence.startswith("live, except 1 recorded result") and "Old GPU" in evidence
    nb.cells[1].outputs = []
    assert publish.about(nb)[1] == "live: every result was measured in this run"
    text = publish.readme([("09_x.ipynb", "run line", 3.0)], False, {"09_x.ipynb": publish.about(nb)})
    assert "| `09_x.ipynb` | Teaching a thing | live: every result was measured in this run |" in text
    assert "Written by `flexfix publish`: do not edit by hand." in text  # what it already said stays


# D8: the misread table's columns are defined before it, and the replays a GPU run never reaches are said.


def test_d8_the_misread_columns_are_defined_before_the_table():
    from flexfix.measure import outcome_cause

    sources = [text(c) for c in cells("01_reproduce_ima")]
    table = next(i for i, s in enumerate(sources) if "cause_tables.misread_summary(" in s)
    before = sources[table - 1]
    columns = cause_tables.misread_summary(outcome_cause.reads_table([0], 48)).columns
    for column in columns:
        assert f"`{column}`" in before, column
    assert "never reaches the later" in before


# D16: the check-patch table has a caption, and its rule (row stride K before, W_max after) holds on the recording.


def test_d16_the_check_patch_caption_states_a_rule_the_recording_follows():
    from flexfix.integration.releases import probe
    from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

    sources = [text(c) for c in cells("02_apply_flexfix")]
    table = next(i for i, s in enumerate(sources) if "tables.release_checks(release_checks)" in s)
    caption = sources[table + 1]
    assert caption.startswith("*How to read it:* one row per release") and "`None`" in caption
    bug, fix = probe._copy_semantics(copy_to_persistent_as_strided), probe._copy_semantics(copy_to_persistent)
    k, w = bug["strides"][0], fix["strides"][0]
    assert k == bug["shape"][1] and w > k  # the source's K, the buffer's W_max
    checks, _ = schemas.recorded(DATA, "vllm_release_patch_checks", schemas.PATCH_CHECKS, "cpu")
    for _, row in checks.iterrows():
        before, after = row["copy_before"], row["copy_after"]
        if row["release_class"] == "as_strided":
            assert before["strides"][0] == k and after["strides"][0] == w
        elif row["release_class"] == "sliced":
            assert before["strides"][0] == after["strides"][0] == w
        else:
            assert before is None and after is None


# D13: the one table counts the torch-only runs per copy, batch and outcome instead of a row per run.


def test_d13_the_one_table_counts_torch_only_runs():
    from flexfix.edition import tables
    from flexfix.measure import record

    kernel, _ = _kernel()
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.outcome_table(kernel, sanitizer, engines, this_run=kernel.assign(launch="graph"))
    torch_rows = table[table["experiment"] == "torch-only, graph launch"]
    groups = kernel.groupby(["copy", "batch", "status"]).ngroups
    assert len(torch_rows) == 2 * groups < 2 * len(kernel)
    assert torch_rows["case"].str.extract(r": (\d+) of")[0].astype(int).sum() == 2 * len(kernel)
    assert "one row per copy, batch and outcome" in _md("01_reproduce_ima")


# D15: the workaround section that opens 02 says whom it is for and where the fix starts.


def test_d15_the_opening_workaround_section_points_to_the_fix():
    sources = [text(c) for c in cells("02_apply_flexfix")]
    first = next(s for s in sources if s.startswith("## On an affected vLLM without the plugin"))
    assert 'start at the section "The fix, as a diff"' in first
    assert any(s.startswith("## The fix, as a diff") for s in sources)
