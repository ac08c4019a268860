"""Teaching round 7, notebooks 01 and 02: a newcomer's reading of a CPU execution of the current sources (findings
A1-D12 of r0102). Each test ties a sentence, table or figure to the data it states."""

import pandas as pd
from matplotlib.colors import to_hex
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel

from flexfix.edition import glossary, schemas, tables
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.edition.tables.outcomes import ChildLog, every_request_dispatch
from flexfix.measure import engine_sweep, record


def _cell(stem, start):
    found = [text(c) for c in cells(stem) if text(c).startswith(start)]
    assert len(found) == 1, (stem, start, len(found))
    return found[0]


def _code(stem, needle):
    found = [text(c) for c in cells(stem) if c["cell_type"] == "code" and needle in text(c)]
    assert len(found) == 1, (stem, needle, len(found))
    return found[0]


# A1: the recordings ran on more than one GPU; the introduction names none of them, the provenance lines do.


def test_a1_the_introduction_names_no_gpu_the_recordings_do_not_share():
    _, kernel_prov = _kernel()
    _, cause_prov = cause_tables.recorded(DATA)
    gpus = {kernel_prov["device_name"], cause_prov["device_name"]}
    intro = _cell("01_reproduce_ima", "# 01 · Reproducing the illegal memory access")
    if len(gpus) > 1:  # the recordings name different GPUs: naming one would contradict the other
        assert "recorded on an H100" not in intro and "recorded on an H200" not in intro
    assert "shows the outcomes recorded on GPUs" in intro and "names the GPU it ran on" in intro
    md = "\n".join(text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "markdown")
    assert "## What the H100 recorded" not in md and "## The torch-only runs as recorded on a GPU" in md
    # the placement recording kept no vLLM version: its line says so instead of "vLLM None"
    line = tables.provenance_line(dict(cause_prov, vllm=None))
    assert "vLLM None" not in line and "vLLM not recorded" in line


# A2: the caption promises the seed-by-seed comparison only where the sentence makes it (a GPU run).


def test_a2_the_recorded_errors_caption_promises_what_the_sentence_says():
    kernel, kernel_prov = _kernel()
    where = tables.recorded_where(kernel_prov)
    on_cpu = str(reproduce.faces(kernel, "this run (cpu)", kernel, where, "cpu", None, kernel_prov))
    on_gpu = str(reproduce.faces(kernel, "this run (cuda)", kernel, where, "cuda", kernel_prov, kernel_prov))
    assert "Seed by seed" not in on_cpu and "Seed by seed" in on_gpu
    caption = _cell("01_reproduce_ima", "*How to read it:* as the figure of this run above.")
    assert "says whether it draws the same crosses as this run's figure, seed by seed" not in caption
    assert "says how the recorded runs ended; on a GPU it also compares them with this run's, seed by seed" in caption


# A3, A4: the driver's list is compared with the direct reads, from the recorded rows; the default arm is named.


def test_a3_a4_the_driver_list_is_compared_with_the_reads_and_the_plain_default_arm_is_named():
    runs, prov = cause_tables.recorded(DATA)
    said = str(cause_story.outcome_cause(runs, tables.recorded_where(prov)))
    strided = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16)]
    read = strided[strided["touch"].notna() & (strided["placement"] == "default")]
    plain = strided[
        strided["touch"].isna() & (strided["placement"] == "default") & (strided["v_placement"] == "default")
    ]
    unlisted = sum(
        (not (r["front_v_mapped"] if r["touch"] == "v" else r["front_k_mapped"])) and r["touch_result"] == "read"
        for _, r in read.iterrows()
    )
    assert f"The driver's list against a direct read, in the {len(read)} runs with the caches `default`" in said
    assert f"{unlisted} runs read those bytes without a fault where the driver listed no allocation" in said
    assert "nobody read directly" not in said
    assert f"for the {len(plain)} runs of the plain `default` placement, which read nothing themselves" in said
    table = cause_tables.placement_table(runs)
    assert any(str(i).endswith("then read in front of V") for i in table.index)  # the rows the caption cites
    caption = _cell("01_reproduce_ima", "*How to read it:* one row per scenario")
    assert "no output here compares the two" not in caption
    assert "`... then read\nin front of K` and `... then read in front of V`" in caption
    assert "counted in the paragraph above\nthe figure" in caption  # r0102 round 8, D18: no quoted sentence


# A5, D11: the torch-only runs' log line points at the table that counts their status; equal times said once.


def test_a5_d11_the_child_log_names_its_table_and_says_equal_times_once():
    log = ChildLog()
    for s in ("ok", "ok", "index_error"):
        log(f"run: {s} (exit 0, 2.0 s)")
    said = log.summary("the torch-only runs", "in the summary table of the next section")
    assert "(about 2 s each)" in said and "2-2 s" not in said
    assert said.endswith("their status in the summary table of the next section: 2 ok, 1 index_error")
    log("run: ok (exit 0, 5.0 s)")
    assert "(2-5 s each)" in log.summary("x")
    code = _code("01_reproduce_ima", "kernel_log.summary(")
    assert 'kernel_log.summary("the torch-only runs", "in the summary table of the next section")' in code
    # the step table comes right after that line; the status counts are the next section's outcome_summary
    assert "tables.outcome_summary(kernel_runs)" in _code("01_reproduce_ima", "display(tables.outcome_summary(kernel")


# A6: notebook 02's every-request sentence says where the stock control died and which counts it covers.


def test_a6_the_control_covers_only_the_batches_it_completed():
    every, provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    said = str(workarounds.fix_on_every_request(rows, dispatch, tables.recorded_where(provs), every))
    stock = every[every["engine"].str.endswith("stock")].iloc[0]
    done = sorted({int(n) for n in rows[rows["engine"].str.endswith("stock")]["requests"]})
    rest = [int(n) for n in stock["every_request"] if int(n) not in done]
    assert stock["status"] != "ok" and rest  # the recorded stock engine died before its last batch
    assert f"before it completed the batch of {rest[0]}" in said
    assert f"So the control covers {done[0]} requests only" in said
    assert "same model and request counts" not in said
    assert "workarounds.fix_on_every_request(every_rows, every_dispatch, tables.recorded_where(provs), every)" in (
        _code("02_apply_flexfix", "fix_on_every_request(")
    )


# B7: the takeaway claims on 0.21.0 only what the check-patch table shows.


def test_b7_the_0_21_0_claim_is_about_apply_only():
    take = _cell("02_apply_flexfix", "## Takeaways")
    assert "(checked on 0.21.0)" not in take
    assert "`apply()` changed nothing on vLLM 0.21.0, the one fixed release it was run against" in take  # r13 B2
    assert "neither `revert()` nor an engine was run on 0.21.0" in take


# C8: the crosses of "no answer", their run counts, the dotted lines and the dotted line's legend sample are black.


def test_c8_crosses_labels_and_dotted_lines_are_the_crash_black_on_cpu_too():
    from test_plots import cpu_index_errors

    from flexfix.edition import plots
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    black = to_hex(OUTCOME_COLOURS["illegal_memory_access"])
    for table in (cpu_index_errors(), _kernel()[0]):
        fig = plots.replay_errors(table, "t")
        band, ax = fig.axes[0], fig.axes[1]
        crosses = [ln for ln in band.get_lines() if ln.get_marker() == "X"]
        assert crosses and {to_hex(ln.get_color()) for ln in crosses} == {black}
        counts = [t for t in band.texts if t.get_text().endswith(("run", "runs"))]
        assert counts and {to_hex(t.get_color()) for t in counts} == {black}
        guides = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata()) == 2]
        assert guides and {to_hex(ln.get_color()) for ln in guides} == {black}
        legend = ax.get_legend()
        sample = [h for h, t in zip(legend.get_lines(), legend.get_texts()) if t.get_text().startswith("dotted line")]
        assert [to_hex(h.get_color()) for h in sample] == [black]
    caption = _cell("01_reproduce_ima", "*How to read it:* a point is one step's largest error")  # r0102 round 8, C11
    assert "on CPU the index error that stands for it" in " ".join(caption.split())


# C9: the read-window caption names no colour of the outcome figures.


def test_c9_the_read_window_caption_names_no_colour_of_another_figure():
    caption = _cell("01_reproduce_ima", "*How to read it:* query block 0 starts")
    assert "however close" not in caption and "blue" not in caption
    assert "not outcomes; every figure of this notebook has a legend of its own" in caption  # round 22, D9


# D10, D11, D12: scenarios and patched rows defined where first met; the decides-section in plain order; 02's columns.


def test_d10_scenario_d_and_the_patched_rows_are_defined_where_they_appear():
    capture = _cell("01_reproduce_ima", "## At which `K` vLLM captures its decode graphs")
    assert "scenario (d) below" not in capture
    assert "stock vLLM 0.20.0 with nothing changed" in capture
    table = _cell("01_reproduce_ima", "*Where each line comes from:*")
    assert "where the recordings shown hold one, is" in table  # conditional (r0102 round 8, A4)
    assert "notebook 02 introduces the fix" in table
    every = _cell("01_reproduce_ima", "**Why the batches and engines differ.**")  # after the outcome (round 12, D4)
    assert "with flexfix's fix applied, which notebook 02 introduces" in every


def test_d11_the_decides_section_says_question_method_and_where_each_answer_is():
    intro = _cell("01_reproduce_ima", "**The question.** Can the same seeds")
    # round 22, D9: the paragraph of where each answer sits is gone; the method says what comes first and next
    order = [intro.index(h) for h in ("**The question.**", "**The method.**", "**The misread cells.**")]
    assert order == sorted(order) and "**Where each answer is.**" not in intro
    assert "What do they hold?" not in intro
    below = _cell("01_reproduce_ima", "So any later step whose longest sequence")
    assert "the replays its guard flags" not in below and "a check run before each FULL graph replay" in below


def test_d12_the_workaround_caption_and_the_engine_files_are_matched_to_their_rows():
    caption = _cell("02_apply_flexfix", "*How to read it:* `differed` counts")
    assert "the checks of the patched engine are in the section on the patched engine below" not in caption
    assert "the patched engine was not checked at these request counts in the file of the checks" in caption
    runs, provs = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    assert len(provs) == len(record.RECORDED_ENGINE_TABLES)
    shown = tables.engine_summary(runs)
    assert set(shown["recorded_in"].str.split(",").str[0]) <= set(record.RECORDED_ENGINE_TABLES)
    for stem in ("01_reproduce_ima", "02_apply_flexfix"):
        code = _code(stem, "RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)")
        assert (
            "zip(record.RECORDED_ENGINE_TABLES," in code and 'print(f"{name}: {tables.provenance_line(prov)}")' in code
        )
    assert isinstance(shown, pd.DataFrame)
