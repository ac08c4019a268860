"""Teaching round 5, notebooks 03-05 (newcomer reading of the edition at 595743f, findings A/B/C/D): each fix tied to
the data or the source that generates the sentence, table or figure."""

from pathlib import Path

import pandas as pd
from test_teaching_round4_03_05 import DATA, _code, _markdown


def _exposed(outcome: str, launch: str = "graph") -> pd.DataFrame:
    rows = [
        {
            "config": f"flex, vllm options, {launch}, as_strided",
            "batch": b,
            "position": p,
            "outcome": outcome,
            "bitwise_equal": False,
            "max_abs_diff": None,
            "error": None,
            "detail": "",
        }
        for b in (17, 24)
        for p in ("first", "last")
    ]
    return pd.DataFrame(rows)


# A2: the sweeps that crashed and the ones that answered wrongly counted and named; the CPU analog's crash said to be
# its index error, with the sizes of the GPU run it stands beside.


def test_a2_crash_and_wrong_sweeps_are_counted_named_and_the_analog_crash_explained():
    from flexfix.edition import results
    from flexfix.edition.narrative import invariance as story
    from flexfix.measure import record

    _, provs = results.recorded_all(DATA, record.RECORDED_KERNEL_INVARIANCE)
    recorded = [p["parameters"] for p in provs]
    here = {
        "needle_len": 120,
        "capture_len": 200,
        "shape": "PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)",
    }
    sweeps = {
        "this run (H200)": _exposed("wrong_result"),
        "recorded (H100)": _exposed("illegal_memory_access"),
        "the CPU analogs": _exposed("index_error", "frozen"),
    }
    sizes = {"this run (H200)": here, "recorded (H100)": recorded, "the CPU analogs": here}
    text = str(story.crash_or_wrong(sweeps, sizes))
    assert "crashed in one sweep and answered wrongly in another" not in text
    assert (
        "crashed in 2 sweeps (recorded (H100) and the CPU analogs) and answered wrongly in 1 (this run (H200))" in text
    )
    assert "The crash of the CPU analogs is the frozen-launch analog's index error" in text
    assert "same sizes as this run (H200)" in text
    assert "Because recorded (H100) also ran with other sizes than this run (H200)" in text  # round 6, D14
    # the analog alone against a wrong answer: nothing about a GPU's sizes deciding it
    alone = {k: sweeps[k] for k in ("this run (H200)", "the CPU analogs")}
    text = str(story.crash_or_wrong(alone, sizes))
    assert "GPU or the sizes" not in text and "Which one a GPU gets" not in text
    assert 'sizes["the CPU analogs"] = sizes[here]' in _code("04_batch_invariance")


# A3, D7: the two distances and the fp32 reference defined in the verdict tables' column list, which every sweep's
# sentence points to, with the rule that makes a cell wrong rather than moved.


def test_a3_d7_the_two_distances_and_the_wrong_rule_are_defined_where_the_sentences_point():
    from flexfix.edition.narrative import invariance as story
    from flexfix.mechanism import kernel_repro

    text, code = _markdown("04_batch_invariance"), _code("04_batch_invariance")
    # round 22 D5: defined in *The needle*, before the first result that uses them
    assert "measured by **two distances**" in text and "**the fp32 reference**" in text
    assert "`flexfix.mechanism.paged.reference`" in text and "`flexfix.mechanism.kernel_repro.tolerance`" in text
    assert "is `wrong`; a cell within it that is not bitwise equal is `moved`" in " ".join(text.split())
    assert hasattr(kernel_repro, "tolerance")
    assert "this run's verdict table" not in code and code.count("defined_under=distances") == 3
    assert 'distances = "section *The needle*"' in code  # r6 D18
    assert "## The kernel-level sweep" in text
    said = str(story.kernel_sweep(_moved(), "t", defined_under="the verdict tables' columns (section *The kernel"))
    assert "Two distances per moved configuration" not in said  # round 9b, D4: said once, in the notebook


def _moved() -> pd.DataFrame:
    rows = [
        {
            "config": "analog, row softmax, eager, sliced",
            "batch": b,
            "position": "last",
            "outcome": "ok",
            "bitwise_equal": b == 1,
            "max_abs_diff": 0.0 if b == 1 else 3e-8,
            "max_error_vs_reference": 2e-7,
            "detail": "",
        }
        for b in (1, 8)
    ]
    return pd.DataFrame(rows)


# B1, D11, D12: the tiny model's invariance not put down to its size; BI=1 spelled out; the patch named as what lets
# every BI=1 engine run, not the variance model's alone.


def test_b1_d11_d12_the_engine_paragraph_scopes_size_and_names_every_bi1_engine():
    text = " ".join(_markdown("04_batch_invariance").split())
    assert "too small for batch variance" not in text
    assert "the tiny model gets shorter prompts (both printed above the table); which of those differences" in text
    assert "was not isolated" in text.split("the tiny model gets shorter prompts")[1][:200]
    assert "`BI=1` (`VLLM_BATCH_INVARIANT=1`: vLLM's batch-invariant mode asked for)" in text
    assert "The variance model with `VLLM_BATCH_INVARIANT=1` runs here" not in text
    assert "Every engine with `VLLM_BATCH_INVARIANT=1`, the tiny model's and the variance model's alike" in text


# C1: an engine's "same tokens, other logprobs" is a rounding-sized difference: the moved colour (yellow) in notebook
# 04's engine heatmap and in notebook 06's serving figure; orange is a wrong answer only.


def test_c1_logprobs_differ_is_drawn_moved_and_orange_is_wrong_results_only():
    from matplotlib.colors import to_hex

    from flexfix.edition.plots.invariance import CATEGORY_COLOURS
    from flexfix.edition.plots.serving import SERVING_KINDS
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    moved, wrong = to_hex(OUTCOME_COLOURS["moved"]), to_hex(OUTCOME_COLOURS["wrong_result"])
    assert to_hex(CATEGORY_COLOURS["logprobs differ"][1]) == moved
    assert to_hex(SERVING_KINDS["same tokens, other logprobs"]) == moved
    orange = [k for k, (_, h) in CATEGORY_COLOURS.items() if to_hex(h) == wrong]
    assert orange == ["wrong result"]
    assert wrong not in {to_hex(h) for h in SERVING_KINDS.values()}


# C2, C3: notebook 05's contexts, batch sizes and runs each have their own colour and marker pairs; the band's legend
# swatch is neutral grey and says the band takes its series' colour.


def _ratios(by_values, other, by, x):
    rows = [
        {by: v, x: o, "r": 1.0 + i + o / 100, "r_lo": 0.9 + i, "r_hi": 1.1 + i + o / 100}
        for i, v in enumerate(by_values)
        for o in other
    ]
    return pd.DataFrame(rows)


def _pairs(fig) -> set[tuple[str, str]]:
    from matplotlib.colors import to_hex

    return {
        (to_hex(ln.get_color()), str(ln.get_marker()))
        for ax in fig.axes
        for ln in ax.get_lines()
        if ln.get_marker() not in ("None", "", None) and len(ln.get_xdata()) > 0
    }


def test_c2_c3_contexts_batches_and_runs_never_share_a_colour_marker_pair_and_the_band_swatch_is_grey():
    from matplotlib.colors import to_hex

    from flexfix.edition import plots
    from flexfix.edition.plots import cost

    pairs = {}
    for panels in (False, True):
        ctx = plots.ratio_lines(_ratios((256, 1024, 4096, 8192), (1, 8, 16, 32), "context", "batch"), "batch", "r",
                                "context", "t", "y", panels=panels)  # fmt: skip
        bat = plots.ratio_lines(_ratios((1, 8, 16, 32), (256, 1024, 4096), "batch", "context"), "context", "r",
                                "batch", "t", "y", panels=panels)  # fmt: skip
        pairs["context"], pairs["batch"] = _pairs(ctx), _pairs(bat)
        assert len(pairs["context"]) == 4 and len(pairs["batch"]) == 4
        assert not pairs["context"] & pairs["batch"]
        assert not {m for _, m in pairs["context"]} & {m for _, m in pairs["batch"]}
        for fig in (ctx, bat):
            legends = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg] + list(fig.legends)
            entries = {t.get_text(): h for lg in legends for t, h in zip(lg.get_texts(), lg.legend_handles)}
            assert "shaded: how far the repetitions spread (quartiles)" not in entries
            swatch = entries[cost.BAND_LABEL]
            assert cost.BAND_LABEL.startswith("shaded, in the series' colour")
            assert to_hex(swatch.get_facecolor()) == cost.BAND_SWATCH
    runs = pd.DataFrame(
        [
            {"model": "m", "source": f"f{k}", "setting": s, "requests": 4, "output_tokens": 100,
             "seconds": [1.0, 1.1], "tokens_per_second": 95.0 + k}
            for k in range(4)
            for s in ("a", "b")
        ]
    )  # fmt: skip
    run_pairs = _pairs(plots.throughput_points(runs, "t"))
    assert len(run_pairs) == 4 and not run_pairs & (pairs["context"] | pairs["batch"])
    assert not {m for _, m in run_pairs} & {m for _, m in pairs["context"] | pairs["batch"]}


# D13: the printed method line names s as the element size of the KV-bytes formula below it, not as if defined already.


def test_d13_the_method_line_points_to_where_s_is_defined():
    from flexfix.measure import timing

    line = timing.method_line("cpu")
    assert "the s of the KV bytes" not in line and "(4 bytes an element: s in the KV bytes, below)" in line
    text = " ".join(_markdown("05_cost").split())
    assert text.index("## How the kernel is timed") < text.index("`s` the bytes of one element")


# D1, D2, D5 (notebook 03's words and table columns): K as 16 times the longest request's pages, kv_num_blocks,
# misread_fraction, K_capture and K_replay defined.


def test_d1_d2_d5_notebook_03_defines_k_kv_num_blocks_and_the_table_columns():
    text = " ".join(_markdown("03_stride_layouts").split())
    assert "16 entries per page of the step's longest request" not in text
    assert "**`K`** is 16 times the pages of the step's longest request: room for the pages of all 16 requests" in text
    words = text.split("**Words used below.**")[1].split("```")[0]
    assert "**`kv_num_blocks`** holds one count per query block" in words
    numbers = text.split("## The numbers")[1]
    assert "`misread_fraction` is `misread` over `cells_read`" in numbers
    assert (
        "`K_capture` and `K_replay` are the width `K` of `kv_indices` at the capture step and at the replay" in numbers
    )


# D4: the kinds of misread cell listed are the ones that occurred: "cells not written this step" only where some were.


def test_d4_the_misread_sentence_names_unwritten_cells_only_where_the_replay_read_some():
    from flexfix.edition.narrative import layouts

    def rows(never):
        return pd.DataFrame(
            [
                {"copy": "c", "K_capture": 16, "K_replay": 48, "row": g, "misread": 0 if g == 0 else 48,
                 "cells_read": 48, "never_written": 0 if g == 0 else never}
                for g in range(3)
            ]
        )  # fmt: skip

    wider = str(layouts.misreads(rows(0)))
    assert (
        "not written" not in wider
        and "(another row's entries or entries of their own row at another position)" in wider
    )
    narrower = str(layouts.misreads(rows(8)))
    assert "or cells not written this step: 16 of them, in query blocks 1 and 2 only)" in narrower  # r17 D6


# D14, D15, D16, D18, D19 (notebook 05's markdown): the batch-invariant launch each table uses, the ratio columns
# defined, the figures said to draw the recording, the target said to be a choice, the engines' processes as in 04.


def test_d14_d15_d16_d18_d19_notebook_05_defines_what_its_tables_and_figures_hold():
    from flexfix.edition import tables

    text = " ".join(_markdown("05_cost").split())
    assert "the ratios use the graph one, the L2 table both" not in text
    assert (
        "the ratio `bi_overhead` uses the graph replay; a GPU run's L2 table (after its ratios) shows both" in text
    )  # r14 B1
    columns = text.split("**The ratio columns**")[1].split("```")[0]
    for name in ("graph_speedup", "bi_overhead", "flex_over_sdpa", "flex_bw_fraction", "sdpa_bw_fraction"):
        assert f"`{name}`" in columns, name
    assert "`graph_speedup` is the time of `flex vllm eager` over that of `flex vllm graph`" in columns
    assert "`bi_overhead` the time of `flex batch_invariant graph` over that of `flex vllm graph`" in columns
    ratios = tables.timing_ratios(_recorded_timing())
    assert {"graph_speedup", "bi_overhead", "flex_over_sdpa", "flex_bw_fraction", "sdpa_bw_fraction"} <= set(ratios)
    assert "draw the recorded run, as the line above the first says" in text  # round 22 D13: said once, above
    assert "not told apart from it by this run" not in text
    assert "the target this project set" not in text and "not derived from a measurement" in text
    assert "in-process)" not in text and "each engine in its own child process" not in text  # round 22 D15


def _recorded_timing():
    from flexfix.edition import schemas

    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    return timing


# D8: bitwise-equal cells at `middle` past 16 requests explained from their needle index (still in query block 0).


def test_d8_bitwise_equal_middle_cells_are_said_to_have_their_needle_in_query_block_0():
    import sys

    from flexfix.edition.narrative import invariance as story

    sys.path.insert(0, str(Path(__file__).parent))
    from test_teaching_03_05 import _h200_like

    text = str(story.kernel_sweep(_h200_like(), "this run (cuda)"))
    assert "The bitwise-equal cells at `middle` are those of 17 and 24 requests, whose needle (index 8 and 12)" in text
    # an equal cell whose needle is past query block 0 would contradict the explanation: nothing is said then
    table = _h200_like()
    late = (table["position"] == "last") & (table["batch"] == 17) & table["config"].str.endswith("graph, as_strided")
    table.loc[late, ["outcome", "bitwise_equal", "max_abs_diff", "max_error_vs_reference"]] = ["ok", True, 0.0, 1e-3]
    assert "still falls in query block 0" not in str(story.kernel_sweep(table, "t"))


def test_review3_the_engine_heatmap_title_names_the_recording_gpu_from_its_provenance():
    """Review 3 Typed GPU names: 04's heatmap title took "H100" typed; it is tables.device_title of the provenances."""
    code = _code("04_batch_invariance")
    assert '"H100, vLLM 0.20.0' not in code
    assert 'title = f"{tables.device_title(device, provs)}, vLLM 0.20.0 + flexfix: needle alone' in code
    assert "plots.category_heatmap(grid, title, notes)" in code
