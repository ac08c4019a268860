"""Teaching round 12, notebooks 03-05 (newcomer reading of the published H200 edition, findings of r0305): each fix
tied to the data or the source that generates the sentence, table or figure."""

import re

import pandas as pd
from test_teaching_round4_03_05 import DATA, _code, _markdown, _recorded_timing, _speed

from flexfix.edition import anchors, schemas, tables
from flexfix.measure import record

# A1 (05): the 'what differs' lines are said for the engine rows and the kernel rows apart, each from its own run.


def _kernel_runs(with_here: bool):
    from flexfix.measure.timing import DecodeCase

    timing, ratios, prov = _recorded_timing()
    runs = [(tables.recorded_where(prov), prov["parameters"].get("case"), ratios)]
    here = ratios if with_here else ratios.drop(columns=["graph_speedup", "bi_overhead"])
    runs.append(("this run (GPU X)" if with_here else "this run (CPU)", DecodeCase(8, 2, 64), here))
    return runs, prov


def test_a1_engine_and_kernel_rows_have_their_own_setup_lines():
    from flexfix.edition.narrative.cost_published import head_shape, setups_differ

    _, provs = schemas.recorded(DATA, record.RECORDED_THROUGHPUT_TABLES, schemas.ENGINE_SWEEPS)
    engine_gpu = tables.recorded_where(provs)
    runs, prov = _kernel_runs(with_here=True)
    said = str(setups_differ(engine_gpu, runs))
    engine = next(line for line in said.splitlines() if line.startswith("* **Our engine rows**"))
    kernel = next(line for line in said.splitlines() if line.startswith("* **Our kernel rows**"))
    assert engine_gpu in engine and "output tokens per second" in engine and "random weights" in engine
    assert "this run (GPU X)" not in engine and "head dim" not in engine
    recorded = head_shape(prov["parameters"]["case"])
    assert recorded is not None
    assert f"{recorded[0]} query heads, {recorded[1]} KV heads, head dim {recorded[2]}" in kernel
    assert ("Llama-3-8B's head shape" in kernel) == (recorded == anchors.PR_36298["heads"])
    assert "8 query heads, 2 KV heads, head dim 64: not Llama-3-8B's head shape" in kernel  # this run's own shape
    assert "time of one decode-attention call" in kernel and "random weights" not in kernel
    # a run without graph replay (CPU) quotes no kernel ratio: it is not named among the kernel rows
    cpu = str(setups_differ(engine_gpu, _kernel_runs(with_here=False)[0]))
    assert "this run (CPU)" not in cpu and tables.recorded_where(prov) in cpu
    md = " ".join(_markdown("05_cost").split())
    assert "everything else differs: a B200 against an H100" not in md
    assert "cost_published.setups_differ(" in _code("05_cost")


# C1 (04): each legend key of the line figure is the glyph drawn, in the marker and colour of the series that got it.


def test_c1_legend_keys_are_the_series_glyphs_drawn():
    import matplotlib

    matplotlib.use("Agg")
    from flexfix.edition import plots
    from flexfix.edition.plots.invariance import LAUNCH_COPY_STYLES

    table, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    fig = plots.max_diff_vs_batch(table, "t")
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    drawn = {}  # gid -> {(marker, colour)} of the strip marks drawn in the panels
    for ax in fig.axes:
        for line in ax.get_lines():
            if str(line.get_gid()).startswith("no number"):
                drawn.setdefault(line.get_gid(), set()).add(
                    (line.get_marker(), matplotlib.colors.to_hex(line.get_color()))
                )
    assert drawn, "the recorded sweep has crashes and kernel errors"
    from matplotlib.lines import Line2D

    from flexfix.edition.plots.style import PALETTE

    keys = {(h.get_marker(), matplotlib.colors.to_hex(h.get_color())) for h in legend.findobj(Line2D)}
    for gid, glyphs in drawn.items():
        assert glyphs <= keys, (gid, glyphs - keys)  # every glyph drawn in the strip has its key
    assert PALETTE["dark grey"].lower() not in {c for _, c in keys}  # no generic grey key
    for text in texts:
        if text.startswith(("crashed", "kernel error")):
            gid = "no number: crash" if text.startswith("crashed") else "no number: error"
            named = re.search(r"\(([^)]*)\)", text).group(1)
            for series, (_, colour_, marker) in LAUNCH_COPY_STYLES.items():
                assert (series in named.split("; ")) == (  # r14 C1: series apart by "; "
                    (marker, colour_.lower()) in drawn[gid]
                ), (series, named)
    import matplotlib.pyplot as plt

    plt.close(fig)


# D1 (04): the graph launch paragraph in three points; D3: both outcomes said first, and not predicted.


def test_d1_d3_graph_launch_points_and_crash_or_wrong_lead():
    md = " ".join(_markdown("04_batch_invariance").split())
    for point in ("**What this sweep does**", "**What vLLM does**", "**Crash or wrong answer**"):
        assert point in md
    section = md[md.index("## Crash or wrong answer, sweep by sweep") :]
    assert section.index("say first what these sweeps got") < section.index("**What these sweeps cannot say.**")
    from flexfix.edition.narrative import invariance as story

    cell = {"batch": 32, "position": "middle", "bitwise_equal": False, "max_abs_diff": 1.0, "max_ref_diff": 1.0}
    crash = pd.DataFrame(
        [cell | {"config": "flex, vllm options, graph, as_strided", "outcome": "illegal_memory_access"}]
    )
    wrong = pd.DataFrame([cell | {"config": "flex, vllm options, graph, as_strided", "outcome": "wrong_result"}])
    both = str(story.crash_or_wrong({"a": crash, "b": wrong}))
    one = str(story.crash_or_wrong({"a": crash}))
    assert "1 wrong result" in both and both.startswith("**Both outcomes happen in this edition's sweeps**")
    assert "Both outcomes happen" not in one and one.startswith("**Every cell exposed to the misread crashed")


# D4 (04): the page-count question answered first, before its table.


def test_d4_page_count_question_first():
    from flexfix.edition.narrative import invariance as story
    from flexfix.measure import invariance
    from flexfix.mechanism import paged

    sweep = invariance.SweepShape(
        paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048), needle_len=120, capture_len=200
    )
    rows = [("middle", 32, False), ("middle", 128, True)]
    table = pd.DataFrame(
        [
            {"config": "analog, row softmax, eager, sliced", "batch": b, "position": p, "outcome": "ok"}
            | {"bitwise_equal": eq}
            for p, b, eq in rows
        ]
    )
    said = str(story.row_lengths(table, sweep))
    assert said.startswith("**Does a larger page count of the needle's query block make a kernel move?** Why ask")
    assert "**Answer:** **no**" in said  # r14 D3: why asked, then the answer
    alone = str(story.row_lengths(table[table["batch"] == 32], sweep))
    assert "**not ruled out**" in alone
    code = _code("04_batch_invariance")
    assert code.index("story.row_lengths(analog, sweep)") < code.index("story.row_length_table(analog, sweep)")


# D5 (05): the replay's speed-up under the flushed timing, from the warm and flushed medians.


def _flushed_effect() -> pd.DataFrame:
    """An L2 table in which the flushed replay saves far less than the warm one at 1 request of 256 tokens."""
    rows = [("flex vllm eager", 1, 0.100, 0.023), ("flex vllm graph", 1, 0.0206, 0.0205)]
    rows += [("flex vllm eager", 8, 0.10, 0.09), ("flex vllm graph", 8, 0.05, 0.05)]
    return pd.DataFrame(
        [{"impl": i, "batch": b, "context": 256, "kv_MB": 1.0, "warm_ms": w, "flushed_ms": f} for i, b, w, f in rows]
    )


def test_d5_replay_speedup_flushed_from_the_medians():
    from flexfix.edition.narrative.cost_l2 import replay_flushed

    effect = _flushed_effect()
    said = str(replay_flushed(effect))
    assert f"against {0.100 / 0.0206:.1f}x warm" in said and "1 request of 256 tokens" in said
    assert f"is {0.023 / 0.0205:.1f}x, against" in said and "back to back" in said
    held = effect.assign(flushed_ms=effect["warm_ms"])
    assert "held under the flushed timing too" in str(replay_flushed(held))
    assert str(replay_flushed(effect.iloc[:0])) == ""
    assert "cost_l2.replay_flushed(tables.l2_effect(kernel))" in _code("05_cost")


# D6 (05): the engine-level answer first, from the ratio summary and the spread between engines.


def test_d6_engine_answer_first():
    from flexfix.edition.narrative.cost_answer import engine_answer

    speed = _speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    said = str(engine_answer(speed))
    for model in ("tiny", "variance"):
        row = summary.loc[(model, "BI1/BI0")]
        n, below = int(row["ratios"]), int(row["below_1"])
        if 0 < below < n:
            assert f"{model} model: both ways across runs ({n - below} of {n} above 1;" in said
        piece = summary.loc[(model, "full/piecewise")]
        if int(piece["below_1"]) == 0:
            most = float(spread.xs(model, level="model")["between_engines"].max())
            hint = float(piece["lowest"]) <= most
            assert (f"against up to {most:.2f}x between engines), but within" in said) == hint
    code = _code("05_cost")
    assert code.index("cost_answer.engine_answer(speed)") < code.index("tables.throughput_spread(speed)")


# D8 (04, 05): the CPU branch is a marked note or generated for the device, not mixed into the GPU prose.


def test_d8_cpu_sentences_are_a_marked_note():
    md05 = " ".join(_markdown("05_cost").split())
    assert "a CPU run has no L2 table" not in md05 and "a CPU run does not." not in md05
    assert "CPU run: no CUDA graphs and no L2 flush" in _code("05_cost")  # round 22 D11: printed on a CPU run only
    md04 = " ".join(_markdown("04_batch_invariance").split())
    assert "on a CPU, its eager path and the CPU analog kernels" not in md04
    assert 'if device == "cuda":\n    print(\n        "GPU: flex_attention compiled' in _code("04_batch_invariance")
