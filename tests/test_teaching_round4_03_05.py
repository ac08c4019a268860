"""Teaching round 4, notebooks 03-05 (newcomer reading of the edition at 09dcedd, findings A/B/C/D): each fix tied to
the data or the source that generates the sentence, table or figure."""

import json
from pathlib import Path

from flexfix.edition import schemas, tables
from flexfix.edition.narrative import cost

DATA = "data"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _markdown(stem: str) -> str:
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _code(stem: str) -> str:
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def _recorded_timing():
    timing, prov = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    return timing, tables.timing_ratios(timing), prov


# A1: the read rate rose LESS than the query blocks doubled; the programs against the SMs, from printed values.


def test_a1_a_rise_short_of_the_doubling_is_said_as_less_and_set_against_the_sms():
    timing, ratios, prov = _recorded_timing()
    heads = cost.recorded_heads(prov)
    assert heads == 32  # DecodeCase(num_heads=32, ...) as its provenance prints it
    per_batch = ratios.groupby("batch")["flex_bw_fraction"].median()
    assert per_batch[128] / per_batch[64] < 1.8  # the step the sentence must call short
    said = cost.kernel_timing(timing, ratios, "the H100", heads=heads, sms=132)
    assert "does not explain the whole rise" not in said and "not in proportion" not in said
    assert "less than the query blocks doubled at 64 to 128" in said
    assert "128 programs at 64 requests" in said and "256 programs at 128 requests" in said
    assert "against this GPU's 132 SMs" in said and "at 64 requests the programs already about fill the SMs" in said
    assert ".." not in said
    # where the recording kept no SM count, nothing is compared with one
    said = cost.kernel_timing(timing, ratios, "the H100", heads=heads)
    assert "did not keep its GPU's SM count" in said and "about fill" not in said
    # far from the SM count, the fill is not claimed
    assert "about fill" not in cost.kernel_timing(timing, ratios, "the H100", heads=heads, sms=1000)


def test_a1_the_bandwidth_bullet_no_longer_says_the_explanation_covers_only_part():
    text = _markdown("05_cost")
    assert "covers only part of the rise" not in text and "falls short of the doubling" not in text
    assert "Once the programs about fill the SMs" in " ".join(text.split())
    code = _code("05_cost")
    assert "sms=story.sm_count(device)" in code and "heads=story.recorded_heads(prov)" in code


# A6: the kernel ranges next to the published numbers say which run they come from.


def test_a6_the_published_comparison_labels_the_kernel_ranges_with_their_run():
    _, ratios, prov = _recorded_timing()
    from flexfix.edition.narrative.cost import published

    summary = tables.ratio_summary(_speed())
    where = tables.recorded_where(prov)
    said = published(summary, ratios, where)
    assert f"the attention kernel alone ({where}), eager launch time over replay time" in said  # round 6, A3
    assert f"The attention kernel alone ({where}), a time ratio" in said
    code = _code("05_cost")  # r9 A1; round 22 D14: the engine answer is pointed to
    assert "story.published(summary, gpu_bands, timed_where, here=here, spread=spread, answered=answered)" in code


def _speed():
    from flexfix.edition import results
    from flexfix.measure import engine_sweep, record

    table, _ = results.recorded_all(DATA, record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES)
    speed = engine_sweep.throughput_rows(table)
    return speed.assign(setting=[tables.engine_label(r) for _, r in speed.iterrows()])


# A2, A5, D13 (04): the recorded H100 sweep is not this run's sweep; its sizes differ, said from the parameters.


def _exposed(kind_outcome: str, batches=(17, 24)):
    import pandas as pd

    c = "flex, vllm options, graph, as_strided"
    rows = [
        {
            "config": c,
            "batch": b,
            "position": p,
            "outcome": kind_outcome,
            "bitwise_equal": False,
            "max_abs_diff": 0.9 if kind_outcome == "wrong_result" else None,
            "max_error_vs_reference": None,
            "detail": "",
        }
        for b in batches
        for p in ("first", "last")
    ]
    return pd.DataFrame(rows)


def test_a2_crash_or_wrong_names_the_sizes_the_sweeps_differ_in_and_not_the_gpu():
    from flexfix.edition import results
    from flexfix.edition.narrative import invariance as story
    from flexfix.measure import record

    _, provs = results.recorded_all(DATA, record.RECORDED_KERNEL_INVARIANCE)
    recorded = [p["parameters"] for p in provs]
    assert story.sweep_sizes(recorded)["num_pages"] == 8192 and story.sweep_sizes(recorded)["needle_len"] == 300
    here = {
        "needle_len": 120,
        "capture_len": 200,
        "shape": "PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)",
    }
    sweeps = {"this run (H200)": _exposed("wrong_result"), "recorded (H100)": _exposed("illegal_memory_access")}
    text = str(story.crash_or_wrong(sweeps, {"this run (H200)": here, "recorded (H100)": recorded}))
    assert "The same misread" not in text and "These are not the same sweep" in text
    assert "other sizes (this run (H200) and recorded (H100): `needle_len` 120 and 300; " in text
    assert "`num_pages` 2048 and 8192)" in text
    assert "cannot tell whether the GPU or the sizes made the bug crash" in text  # round 6, D14
    assert "this run (H200): 4 cells exposed to the misread, 4 wrong results" in text
    # the same sizes: nothing said about sizes
    same = str(story.crash_or_wrong(sweeps, {"this run (H200)": recorded[0], "recorded (H100)": recorded}))
    assert "not the same sweep" not in same and "GPU or the sizes" not in same


def test_a2_d13_notebook_04_prints_and_records_its_sizes_and_passes_them():
    code, text = _code("04_batch_invariance"), _markdown("04_batch_invariance")
    assert '"shape": str(sweep.paged)' in code and "story.crash_or_wrong(sweeps, sizes)" in code
    assert 'print(f"sweep sizes: {sweep.paged}' in code
    assert "The same sweep on the GPU" not in text and "sizes of its own" in text


# A3, A7, B1-B5, D17 (04 markdown): each claim scoped to what 03-04 show, or pointed at the section that shows it.


def _flat(stem: str) -> str:
    return " ".join(_markdown(stem).split())


def test_a3_the_narrower_replay_reads_this_steps_rows_first_then_unwritten_cells():
    text = _flat("04_batch_invariance")
    assert "`as_strided` copy, cells this step did not write" not in text
    assert "what they hold at this sweep's own widths" in text  # r16 B1: computed at its widths, printed


def test_a7_the_frozen_name_is_said_where_it_is_printed():
    text = _flat("04_batch_invariance")
    assert "Everywhere else this notebook, its figures and its paragraphs call both" not in text
    assert "heatmap row labels" in text and "this notebook's own text calls both the *graph* launch" in text


def test_b_claims_04_are_scoped_to_what_was_measured():
    text = _flat("04_batch_invariance")
    assert "large enough for the matmuls' reduction strategy to change" not in text  # B2
    assert "was observed to vary" in text
    assert "is what PR #40842 made possible for FlexAttention" not in text  # B1
    assert "nothing in this notebook runs the unpatched engine" in text
    assert "*The real engine*" not in text and "*The real vLLM 0.20.0 engine*" in text  # D17
    assert "All of it ran through the replayed, sliced" not in text and "labelled `patched`" in text  # B4
    assert "is batch-invariant at the kernel level already" not in text  # B5
    assert "bitwise invariant in every cell of these sweeps" in text
    assert "says where notebook 01 measures what decides" in text  # B3 (round 22 D6: pointed to once)
    assert "*misread windows at these widths*" in text  # r16 B1: computed, printed


# A3, A4, D19, D21, D23 (03): the misread windows as the table counts them, the columns defined.


def _layout_table():
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    def lay(kc, kr):
        return layouts.stride_layout(
            copy_to_persistent_as_strided, "as_strided", g=3, g_max=4, w_max=64, k_capture=kc, k_replay=kr
        )

    return layouts.layout_table([lay(16, 48), lay(32, 16)])


def test_a3_a4_03_says_what_the_misread_windows_hold_as_the_table_counts_them():
    table = _layout_table()
    shrink = table[table.K_replay < table.K_capture].set_index("row")
    assert shrink.loc[1, "misread"] > 0 and shrink.loc[1, "never_written"] == 0  # block 1: this step's entries
    assert shrink.loc[2, "never_written"] > 0  # only the later block reads unwritten cells
    text = _flat("03_stride_layouts")
    assert "narrower than its capture reads (cells that nothing wrote at that step)" not in text
    # round 22 D3: the takeaway no longer re-lists what the windows hold (the figures, the table and the sentence
    # under it do, from the layouts: round 22 D2); it says the widths decide it, 04's too
    assert "What a misread window holds depends on the widths" in text
    assert "notebook 04's kernel sweep also replays narrower than its capture, at widths of its own" in text


def test_d19_d21_d23_03_columns_defined_lead_plain():
    from flexfix.edition.narrative import layouts as story

    table = _layout_table()
    assert "replay_write_stride" in table and "replay_stride" not in table
    text = _flat("03_stride_layouts")
    assert "`replay_write_stride` is the row stride the copy writes" in text and "`row` is the query block" in text
    assert "a **page** holding 16 tokens'" in text
    said = str(story.misreads(table))
    assert "**" not in said and said.startswith("In short: ")


# C1, C2, C5 (04 figures): counts under the panel, wrong results told apart, coinciding lines said.


def _h200_cells():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_teaching_03_05 import _h200_like

    return _h200_like()


def test_c1_count_labels_sit_under_the_panel_not_in_its_data_area_and_are_readable():
    from flexfix.edition import plots

    fig = plots.max_diff_vs_batch(_h200_cells(), "t")
    fig.canvas.draw()
    counts = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "mixed cell"]
    assert counts
    for t in counts:
        ax = t.axes
        box = t.get_window_extent()
        assert box.y1 < ax.get_window_extent().y0  # under the panel's value axis
        assert t.get_fontsize() >= 7 and t.get_text()[0] not in "\u25cb\u25a1\u25b3\u25c7"


def test_c2_a_wrong_result_is_a_filled_marker_in_the_outcome_colour_with_a_legend_entry():
    from matplotlib.colors import to_hex

    from flexfix.edition import plots
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    table = _h200_cells()
    fig = plots.max_diff_vs_batch(table, "t")
    wrong = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "wrong result"]
    assert wrong and all(to_hex(ln.get_markerfacecolor()) == to_hex(OUTCOME_COLOURS["wrong_result"]) for ln in wrong)
    n_wrong_batches = table[table.outcome == "wrong_result"].groupby("config").batch.nunique().sum()
    assert sum(len(ln.get_xdata()) for ln in wrong) == n_wrong_batches
    said = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert any(t.startswith("wrong result (misread)") for t in said)
    # no wrong result, no such marker or legend entry
    ok = table[table.outcome != "wrong_result"]
    fig = plots.max_diff_vs_batch(ok, "t")
    assert not [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "wrong result"]


def test_c5_series_with_equal_values_are_said_to_lie_on_top_of_each_other():
    from flexfix.edition import plots
    from flexfix.measure import record

    kernel, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    fig = plots.max_diff_vs_batch(kernel, "t")
    notes = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "coinciding"]
    pytorch = kernel[kernel.config.str.startswith("flex, pytorch options")]
    per = pytorch[pytorch.max_abs_diff > 0].groupby(["config", "batch"]).max_abs_diff.max().unstack(0)
    shared = [b for b, row in per.iterrows() if row.dropna().duplicated().any()]
    assert shared and len(notes) == 1 and notes[0].endswith(" at " + ", ".join(map(str, shared)))


def test_c7_the_batch_invariance_figure_title_fits_one_line():
    import re

    from flexfix.edition import plots

    _, ratios, prov = _recorded_timing()
    (title,) = re.findall(r'f"\{tables.device_title\(device, prov\)\}: (batch-invariant[^"]*)"', _code("05_cost"))
    title = f"{tables.device_title('cuda', prov)}: {title}"
    fig = plots.ratio_lines(ratios, "batch", "bi_overhead", "context", title, "t", min_span=0.1, panels=True)
    assert "\n" not in fig._suptitle.get_text()


# D1, D4 (05): this run's GPU against the recording, and what the flex / SDPA figure shows, generated.


def test_d1_the_gpus_compared_say_whether_each_kernel_followed_the_copy_bandwidth():
    timing, ratios, _ = _recorded_timing()
    faster = timing.copy()
    faster["copy_GBps"] = faster["copy_GBps"] * 1.42  # a GPU with more bandwidth: SDPA follows it, flex does not
    sdpa = faster["impl"] == "sdpa dense"
    faster.loc[sdpa, "median_ms"] = faster.loc[sdpa, "median_ms"] / 1.42
    said = cost.compare_runs(faster, tables.timing_ratios(faster), "this run (H200)", timing, ratios, "the H100")
    copy = timing["copy_GBps"].iloc[0]
    assert f"{copy * 1.42:.0f} GB/s here and {copy:.0f} GB/s there, 1.42x" in said
    assert "would take about 0.70x the time. Dense SDPA took 0.70x" in said and "flex's did not" in said
    same = cost.compare_runs(timing, ratios, "this run", timing, ratios, "the H100")
    assert "1.00x" in same and "flex's did not" not in same  # the same bandwidth: nothing to tell apart
    assert "story.compare_runs(kernel, ratios, here, gpu, gpu_ratios" in _code("05_cost")


def test_compare_runs_checks_both_timed_the_same_case():
    """Review 3 Honesty 5: the head layout (DecodeCase) and the (batch, context) cases of both runs are compared."""
    from flexfix.measure import timing as timing_mod

    timing, ratios, prov = _recorded_timing()
    same = cost.compare_runs(timing, ratios, "this run", timing, ratios, "there", timing_mod.DecodeCase(), prov)
    assert "not compared" not in same and "head layout" not in same and "1.00x" in same
    other = timing_mod.DecodeCase(num_heads=64)
    said = cost.compare_runs(timing, ratios, "this run", timing, ratios, "there", other, prov)
    assert "not compared, they timed other head layouts" in said and "1.00x" not in said
    unknown = cost.compare_runs(timing, ratios, "this run", timing, ratios, "there")
    assert "Whether both timed the same head layout is not recorded" in unknown
    fewer = timing[timing["batch"] != timing["batch"].max()]
    said = cost.compare_runs(
        fewer, tables.timing_ratios(fewer), "this run", timing, ratios, "there", timing_mod.DecodeCase(), prov
    )
    n, m = len(tables.timing_ratios(fewer)), len(ratios)
    assert f"This run timed {n} (batch, context) cases and the recording {m}, {n} of them both" in said
    assert "story.compare_runs(kernel, ratios, here, gpu, gpu_ratios, tables.recorded_where(prov), case, prov)" in (
        _code("05_cost")
    )


def test_compare_runs_requires_the_sdpa_fraction_it_reads():
    """Review 3 Bugs: _times read sdpa_bw_fraction without requiring it."""
    import pytest

    from flexfix.edition.checks import DataError

    timing, ratios, _ = _recorded_timing()
    with pytest.raises(DataError, match="sdpa_bw_fraction"):
        cost.compare_runs(timing, ratios.drop(columns="sdpa_bw_fraction"), "this run", timing, ratios, "there")


def test_d4_the_flex_over_sdpa_figure_is_read_from_its_table():
    _, ratios, _ = _recorded_timing()
    said = cost.flex_over_sdpa(ratios, "the H100")
    peak = ratios.loc[ratios[ratios.context == 8192]["flex_over_sdpa"].idxmax()]
    assert f"largest {peak['flex_over_sdpa']:.1f}x at {int(peak['batch'])}" in said
    assert f"in {int((ratios.flex_over_sdpa > 1).sum())} of {len(ratios)} cases" in said
    assert "story.flex_over_sdpa(ratios," in _code("05_cost")


# D8 (05): the spread table's median row leaves the times blank, and the L2 table's columns say their direction.


def test_d8_the_spread_median_row_has_no_nan_and_the_l2_columns_say_flushed_over_warm():
    import pandas as pd

    timing, _, _ = _recorded_timing()
    spread = tables.timing_spread(timing)
    last = spread.iloc[-1]
    assert last["impl"].startswith("median over all") and not last.isna().any()
    assert (last[["median_ms", "q25_ms", "q75_ms"]] == "").all()
    both = pd.concat([timing.assign(l2="warm"), timing.assign(l2="flushed", median_ms=timing["median_ms"] * 1.1)])
    summary = tables.l2_effect_summary(both)
    at = [c for c in summary.columns if "median at" in c]
    assert at and all(c.startswith("flushed/warm, median at ") for c in at)
    assert (summary[at].round(3) == 1.1).all().all()


# D9, D10, D11, D16 (04): the verdict columns defined before the first table, the cell count spelled out, the words
# defined, the two distances defined once.


def test_d9_d11_04_defines_the_verdict_columns_and_its_words_before_the_first_table():
    nb = json.loads((NOTEBOOKS / "04_batch_invariance.ipynb").read_text())
    sources = ["".join(c["source"]) for c in nb["cells"]]
    first_table = next(i for i, s in enumerate(sources) if "display(kernel_verdicts(kernel))" in s)
    before = " ".join(" ".join(sources[:first_table]).split())
    for column in ("`crashed`", "`errors`", "`moved`", "`wrong`", "`ran`", "`max_abs_diff`", "`verdict`"):
        assert column in before
    assert "beside a `crashes` verdict, a `0` means the cells that ran were bitwise equal" in before
    # round 22 D10: the null page, never used in 04's text, is no longer among the words (its parameter says it)
    for word in ("**`-1` pad**", "**`BLOCK_M`**", "**`BLOCK_N`**", "**`IS_DIVISIBLE=False`**"):
        assert word in before


def test_d10_the_cells_exposed_are_counted_as_configurations_x_batches_x_positions():
    import sys

    from flexfix.edition.narrative import invariance as story

    sys.path.insert(0, str(Path(__file__).parent))
    from test_teaching_03_05 import _h200_like

    text = str(story.kernel_sweep(_h200_like(), "this run"))
    assert "the 42 cells (2 configurations x 7 batch sizes x 3 positions) came to" in text


def test_d16_the_two_distances_are_defined_once_and_referred_to_after():
    import sys

    from flexfix.edition.narrative import invariance as story

    sys.path.insert(0, str(Path(__file__).parent))
    from test_teaching_03_05 import _mixed

    first = str(story.kernel_sweep(_mixed(), "t"))
    later = str(story.kernel_sweep(_mixed(), "t", defined_under="this run's verdict table"))
    assert story.REFERENCE in first and story.REFERENCE not in later
    assert "Two distances per moved configuration" not in later  # round 9b, D4: said once, in the notebook
    assert _code("04_batch_invariance").count("defined_under=distances") == 3  # round 5, A3: the column list


def test_d6_the_engine_workload_is_stated_from_the_records():
    from flexfix.measure.engine_sweep import PROMPT_LENGTHS

    speed = _speed()
    said = cost.engine_workload(speed)
    per = set((speed["output_tokens"] / speed["requests"]).round(1))
    assert len(per) == 1 and f"{per.pop():g} output tokens each" in said  # round 21 B2: greedy is said as this code's
    lo, hi = PROMPT_LENGTHS["variance"]
    assert "variance: 48 and 128 concurrent requests" in said and f"prompts of {lo} to {hi} random token ids" in said
    assert "story.engine_workload(speed, engine_table)" in _code("05_cost")  # round 22 A2: the engines' samplings


def test_d18_04_opening_reads_right_in_a_gpu_edition_and_a_cpu_one():
    text = _flat("04_batch_invariance")
    assert "Without a GPU, the kernel-level sweep runs on CPU" not in text
    assert "runs on the device this edition ran on (its first output says which)" in text


def test_d4_a_peak_at_the_first_batch_is_said_once():
    import pandas as pd

    ratios = pd.DataFrame({"batch": [1, 8], "context": [256, 256], "flex_over_sdpa": [442.1, 128.5]})
    said = cost.flex_over_sdpa(ratios, "this run (CPU)")
    assert "256 tokens: largest 442.1x at 1, 128.5x at 8." in said and said.count("442.1x") == 1
