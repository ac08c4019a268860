"""Teaching round 8, notebooks 01 and 02: a newcomer's reading of the published GPU edition (findings A1-D19 of
r0102). Each test ties a sentence, table or figure to the data or source it states."""

import inspect

import numpy as np
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel

from flexfix.edition import glossary, plots, schemas, tables
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.edition.tables.outcomes import every_request_dispatch
from flexfix.edition.tables.workarounds import workaround_table
from flexfix.measure import engine_sweep, record


def _cell(stem, start):
    found = [text(c) for c in cells(stem) if text(c).startswith(start)]
    assert len(found) == 1, (stem, start, len(found))
    return found[0]


def _markdown(stem):
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "markdown")


def _flat(s):
    return " ".join(s.split())


INTRO = "# 01 · Reproducing the illegal memory access"


# A1, A2, A5, D17: what a graph freezes; whose row stride; "in part"; no "each defined once".


def test_a1_a2_a5_d17_the_introduction_says_what_is_frozen_and_whose_stride():
    intro = _flat(_cell("01_reproduce_ima", INTRO))
    assert "only these two are frozen" not in intro
    assert "the pointers, shapes and strides" in intro and "What goes wrong here is the row stride" in intro
    assert "reads, in part, cells meant for other query blocks" in intro
    words = _flat(_cell("01_reproduce_ima", "## Words first"))
    assert "is the buffer's row stride" not in words and "row stride of the `kv_indices` view" in words
    assert "each defined once" not in _markdown("01_reproduce_ima")


def test_a5_the_misread_rows_read_some_of_their_own_entries():
    """The data behind "in part": rows g >= 1 read cells of their own too (the misread table's `own`)."""
    from flexfix.measure import outcome_cause

    reads = cause_tables.misread_summary(outcome_cause.reads_table([0], 48))
    assert int(reads["own"].sum()) > 0 and int(reads["other_page"].sum()) > 0


# A3: the objective no longer ties the count to FULL replays; the bold line names its engines and points below.


def test_a3_the_first_fault_line_names_the_crash_threshold_engines():
    intro = _flat(_cell("01_reproduce_ima", INTRO))
    assert "depends on which batches replay a full graph" not in intro
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    threshold = tables.threshold_table(engines)
    said = str(reproduce.crash_threshold(threshold))
    firsts = threshold[threshold["outcome"] != "completed"]["requests"]
    # r22 D6: the first fault is said once, in the short answer; the paragraph after it says what it is not
    assert f"These crash-threshold engines first faulted at {int(firsts.min())}" in said.split("\n\n")[0]
    assert "\n\n**What that first fault is, and is not.**" in said
    assert "Nor is it the fewest requests that can fault" in said and "every-request engines" in said
    # and there is an engine that died at fewer requests: the every-request stock engine, before its batch of 32
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    died = [r for _, r in every.iterrows() if r["status"] != "ok"]
    assert died and "before it completed the batch of" in str(reproduce.every_request(every, rows))


# A4: the "patched rows stand beside the stock rows" claim is conditional on the rows shown.


def test_a4_the_patched_rows_are_named_only_where_present():
    table = _flat(_cell("01_reproduce_ima", "*Where each line comes from:*"))
    assert "stand only beside the stock rows" not in table
    assert "where the recordings shown hold one" in table


# A6, B7, B8: the takeaways and the workaround line say what the data shows.


def test_a6_b8_the_takeaways_claim_no_more_than_was_checked():
    from flexfix.edition.narrative import workaround_control  # r17 A2: 02's last takeaway is generated

    md = _flat(_markdown("02_apply_flexfix") + workaround_control.takeaway(None, None, None))
    assert "that no request differed there is true by construction" not in md
    assert "that this bug cannot occur there is true by construction" in md
    assert "of batches past 16 as alone" not in md and "every request of batches past 16 answered" not in md
    assert "answered every request of the batches checked" in md  # round 20, D13: said once


def test_b7_the_workaround_line_says_no_request_differed():
    safety, safety_prov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    ways = workaround_table(safety, cost)
    said = str(workarounds.without_plugin(ways, "here", "there", safety_prov))
    settings = ways[~ways["vLLM setting"].str.startswith("FLEXFIX_PATCH")]
    differed = [c for c in ways.columns if "differed" in str(c)]
    safe = [w for w, r in settings.iterrows() if all(str(r[c]).startswith("0 of ") for c in differed)]
    assert f"**Without the plugin, no request differed in {len(safe)} setting" in said
    assert "kept stock 0.20.0 correct" not in said


def test_b8_the_evidence_names_the_batches_it_checked():
    every, provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    said = str(workarounds.fix_on_every_request(rows, dispatch, "here", every))
    batches = sorted({int(n) for n in rows[rows["engine"].str.endswith("patched")]["requests"]})
    assert f"every request of the batches of {', '.join(map(str, batches[:-1]))}" in said
    assert str(batches[-1]) in said


# B9, B10: the PR history is an external reference; the refusal is cited from vLLM's source.


def test_b9_the_pr_history_is_an_external_reference():
    cell = _flat(_cell("02_apply_flexfix", "Only the `as_strided` releases need flexfix"))
    assert "external reference, not a finding of this repository" in cell
    assert "(https://github.com/vllm-project/vllm/pull/36298)" in cell


def test_b10_the_refusal_is_cited_from_vllms_source_and_the_recorded_scenario():
    cell = _flat(_cell("02_apply_flexfix", "Two routes, both with `VLLM_BATCH_INVARIANT=1`"))
    assert "`AttentionBackend.validate_configuration` (`vllm/v1/attention/backend.py`)" in cell
    from vllm.v1.attention import backend

    source = inspect.getsource(backend.AttentionBackend.validate_configuration)
    assert "supports_batch_invariance()" in source and "batch invariance not supported" in source
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    a = engines[engines["scenario"] == "a"]
    assert len(a) and set(a["status"]) == {"refused"}


# C11, C12: the points sit near their step; the copy colours are named as drawn; the legend is below the plot.


def test_c11_c12_points_stay_near_their_step_and_the_legend_sits_below():
    from matplotlib.colors import to_hex

    from flexfix.edition.plots.replays import MAX_SHIFT, REPLAY_ERROR_COLOURS

    assert MAX_SHIFT < 0.5  # within half a step (round 10, C1 widened it from 0.15 so that rings can be counted)
    kernel, _ = _kernel()
    fig = plots.replay_errors(kernel, "t")
    band, ax = fig.axes[0], fig.axes[1]
    for line in ax.get_lines() + band.get_lines():
        xs = np.asarray(line.get_xdata(), dtype=float)
        if len(xs):
            assert np.abs(xs - np.round(xs)).max() <= MAX_SHIFT + 1e-9, line.get_label()
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent().transformed(fig.transFigure.inverted())
    axes = ax.get_position()
    assert legend.y1 <= axes.y0 and axes.width > 0.6  # below the plot, which keeps most of the width
    # as drawn: the as_strided series is Okabe-Ito's reddish purple, a pink; the captions call it pink
    assert to_hex(REPLAY_ERROR_COLOURS["as_strided"][1]) == "#cc79a7"
    md = _markdown("01_reproduce_ima")
    assert "purple the `as_strided` one" not in md and "green and purple are the copies" not in md
    assert "pink the `as_strided` one" in _flat(md) and "bluish green and pink are the copies" in _flat(md)


# C13: the grid's hatched legend entry uses the placement table's word.


def test_c13_the_grid_legend_uses_the_tables_word_for_a_fault_in_its_own_read():
    from flexfix.edition.plots.outcome_cause import PROBE_FAULT, outcome_grid

    assert PROBE_FAULT == cause_tables.OWN_READ_FAULT
    runs, _ = cause_tables.recorded(DATA)
    fig = outcome_grid(runs, "t")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert not any("illegal memory access in its own read" in label for label in labels)


# D15: the revert section says what check_cycle does first.


def test_d15_check_cycle_is_said_to_revert_first_as_it_does():
    from flexfix.integration import vllm_patch

    source = inspect.getsource(vllm_patch.check_cycle)
    assert source.index("revert()") < source.index('"before: copy keeps the destination')
    cell = _flat(_cell("02_apply_flexfix", "## Revert, and the context manager"))
    assert "first reverts the patch if it is applied" in cell and "applies it again if it found it applied" in cell


# D16: the outcome summary's columns carry no name that reads as the batch column's.


def test_d16_the_outcome_summary_has_no_columns_name():
    kernel, _ = _kernel()
    summary = tables.outcome_summary(kernel)
    assert summary.columns.name is None and "status" not in summary.to_html().split("<tbody>")[0]


# D19: the plugin and the positive control are defined before the first table uses them.


def test_d19_the_first_section_defines_plugin_and_positive_control():
    cell = _flat(_cell("02_apply_flexfix", "## On an affected vLLM without the plugin"))
    assert "The plugin is flexfix's fix loaded into vLLM 0.20.0 at start-up" in cell
    assert "a positive control is a run where the bug is known to show" in cell


# D18: the driver's list against a read, in plain words; the grid caption points at a paragraph, not a quoted sentence.


def test_d18_the_driver_list_sentence_says_runs_and_reads_plainly():
    from flexfix.edition.narrative import outcome_cause as cause_story

    runs, prov = cause_tables.recorded(DATA)
    said = str(cause_story.outcome_cause(runs, tables.recorded_where(prov)))
    assert "read without a fault where it listed" not in said
    read = runs[runs["touch"].notna() & (runs["placement"] == "default") & (runs["copy"] == "as_strided")]
    read = read[read["batch"] > 16]
    clean = int((read["touch_result"] == "read").sum())
    assert clean and "read those bytes without a fault where the driver listed" in said
    caption = _cell("01_reproduce_ima", "*How to read it:* one row per scenario")
    assert "(its sentence" not in caption
