"""Teaching round 11, notebooks 03-05 (newcomer reading of the CPU execution, findings A/B/C/D of r0305): each fix
tied to the data or the source that generates the sentence, table or figure, on the CPU cells and the recorded GPU
cells alike."""

import json

import matplotlib
import matplotlib.pyplot
import pandas as pd
from test_teaching_round4_03_05 import DATA, NOTEBOOKS, _code, _markdown, _speed

from flexfix.edition import schemas, tables
from flexfix.edition.narrative import cost as cost_story
from flexfix.edition.narrative import invariance as story
from flexfix.measure import invariance, record
from flexfix.mechanism import paged

matplotlib.use("Agg")


def _gpu_kernel():
    return schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)


def _cells(configs, outcome="ok", equal=True):
    """Cells of ``configs`` at a few batch sizes and positions, all with one outcome."""
    rows = []
    for c in configs:
        for b in (1, 17):
            for p in ("first", "last"):
                ran = outcome == "ok"
                rows.append(
                    {"config": c, "batch": b, "position": p, "outcome": outcome}
                    | {"bitwise_equal": equal if ran else None, "max_abs_diff": 0.0 if ran and equal else None}
                    | {"max_error_vs_reference": 0.0 if ran else None, "detail": ""}
                )
    return pd.DataFrame(rows)


# A1: which configurations the two sweeps share is generated from both sweeps' cells, not typed as "the same".


def test_a1_shared_configurations_come_from_both_sweeps():
    gpu, provs = _gpu_kernel()
    cpu_names = [c.name for c in invariance.cpu_configs()]
    here = _cells(cpu_names, equal=False).assign(max_abs_diff=1e-7)
    said = str(story.shared_configs(here, gpu, "this run (CPU)", "the recording"))
    shared = sorted(set(cpu_names) & set(gpu["config"]))
    assert shared == ["flex, pytorch options, eager, sliced"]  # the data the sentence states
    assert f"The recording ran {gpu['config'].nunique()}:" in said
    assert f"1 of them is among the {len(cpu_names)} of this run (CPU) (`{shared[0]}`)" in said
    gpu_verdict = invariance.verdicts(gpu[gpu["config"] == shared[0]])["verdict"].iloc[0]
    assert gpu_verdict != "varies with the batch"
    assert f"`varies with the batch` in this run (CPU), `{gpu_verdict}` in the recording" in said
    # a GPU run of the same configurations: "the same", and whether the verdicts agree, from the cells
    same = str(story.shared_configs(gpu, gpu, "this run (GPU)", "the recording"))
    assert f"This run (GPU) ran the same {gpu['config'].nunique()}" in same and "same verdict in both" in same
    moved = gpu.copy()
    moved.loc[moved["config"] == "flex, vllm options, eager, sliced", "outcome"] = "error"
    apart = str(story.shared_configs(moved, gpu, "this run (GPU)", "the recording"))
    assert "`flex, vllm options, eager, sliced`: `kernel errors` in this run (GPU), `invariant`" in apart
    none = str(story.shared_configs(_cells(["analog, row softmax, eager, sliced"]), gpu, "x", "the recording"))
    assert "no configuration ran in both" in none
    md = _markdown("04_batch_invariance")
    assert "A sweep of the same configurations" not in md
    assert "story.shared_configs(kernel, gpu_kernel," in _code("04_batch_invariance")


# A2: the ratio table prints a ratio from 10 on with the decimal the sentences give it.


def test_a2_table_and_sentence_print_the_same_ratio():
    from flexfix.edition.tables.cost import round_sig

    ratios = pd.DataFrame({"batch": [1, 8], "context": [256, 256], "flex_over_sdpa": [9.582194 / 0.023573, 148.83]})
    shown = tables.significant(ratios)
    said = str(cost_story.flex_over_sdpa(ratios, "this run"))
    for value in shown["flex_over_sdpa"]:
        assert f"{value:.1f}x" in said  # the table's value is the sentence's
    assert shown["flex_over_sdpa"].tolist() == [406.5, 148.8]
    assert round_sig(9.5822) == 9.582 and round_sig(0.000319) == 0.000319 and round_sig(34.81) == 34.8


# A3: a direction held in every ratio but within the between-engine spread is a hint, in every sentence.


def test_a3_direction_within_the_spread_is_a_hint_everywhere():
    from flexfix.edition.narrative.cost_devices import beyond_spread

    speed = _speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    gpu = tables.timing_ratios(schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)[0], spread=True)
    line = str(cost_story.published(summary, gpu, "the recording", spread=spread))
    direction = line.split("**Direction.**")[1].split(". The cost")[0]
    for model in ("tiny", "variance"):
        row = summary.loc[(model, "full/piecewise")]
        _, beyond = beyond_spread(row, model, spread)
        held = int(row["below_1"]) in (0, int(row["ratios"]))
        part = direction.split(f"{model} model: ")[1].split(";")[0:2]
        hint = "a hint, within the between-engine spread" in ";".join(part)
        assert hint == (held and not beyond), (model, direction)
    md = " ".join(_markdown("05_cost").split())
    assert "a direction that holds in every ratio (all above 1, or all below) survives the noise" not in md
    assert "**and** beyond the spread between engines survives the noise" in md
    assert "within that spread is a hint" in md
    assert "here=here, spread=spread, answered=answered)" in _code("05_cost")  # round 22 D14


# B1 / D6: the page-count table names the cells (batch size, position) the sentence's batch sizes come from.


def _sweep():
    shape = paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)
    return invariance.SweepShape(shape, needle_len=120, capture_len=200)


def test_b1_d6_page_count_table_names_the_cells_the_sentence_states():
    from flexfix.edition.narrative import misread

    sweep = _sweep()
    cells = [("middle", 32, False), ("middle", 128, True), ("last", 48, True), ("first", 1, True)]
    table = pd.DataFrame(
        [
            {"config": "analog, row softmax, eager, sliced", "batch": b, "position": p, "outcome": "ok"}
            | {"bitwise_equal": eq}
            for p, b, eq in cells
        ]
    )
    shown = story.row_length_table(table, sweep)
    assert {misread.PAGES, misread.MOVED_AT, misread.EQUAL_AT} <= set(shown.columns)
    said = str(story.row_lengths(table, sweep))
    lo = int(shown.loc[shown["moved"] > 0, misread.PAGES].min())
    calm = shown[(shown["bitwise equal"] > 0) & (shown[misread.PAGES] >= lo)]
    batches = sorted({int(c.split()[0]) for cell in calm[misread.EQUAL_AT] for c in cell.split("; ")})
    from flexfix.edition.narrative import listing

    assert f"at {listing([str(b) for b in batches])} requests" in said  # checkable against the table's cells
    assert "32 middle" in shown[misread.MOVED_AT].tolist()
    for _, row in shown.iterrows():  # each count is the number of cells the row names
        for n, at in (("moved", misread.MOVED_AT), ("bitwise equal", misread.EQUAL_AT)):
            assert row[n] == (len(row[at].split("; ")) if row[at] else 0)
    # D6: "the query block's page count", not a third meaning of "row"
    assert "query block's page count" in said and "needle's row" not in said and "longer row" not in said
    md = " ".join(_markdown("04_batch_invariance").split())
    assert "whether a longer *row*" not in md and "page count of the needle's query block" in md


# C1: the crash legend's sample is the glyph drawn in the panels (hollow marker, x inside); on the CPU the stand-in's
# series are named `frozen`, as in the tables.


def _legend(fig):
    (legend,) = fig.legends
    return legend


def test_c1_crash_legend_sample_is_the_panel_glyph_and_frozen_is_named():
    from flexfix.edition import plots
    from flexfix.edition.plots.invariance_marks import CRASH_SIZE, CROSS_SIZE

    names = [c.name for c in invariance.cpu_configs()]
    cells = _cells(names).astype({"bitwise_equal": object})
    frozen = (cells["config"] == "analog, page-by-page softmax, frozen, as_strided") & (cells["batch"] == 17)
    cells.loc[frozen, "outcome"] = "index_error"
    cells.loc[frozen, ["bitwise_equal", "max_abs_diff", "max_error_vs_reference"]] = None
    fig = plots.max_diff_vs_batch(cells, "CPU")
    legend = _legend(fig)
    labels = [t.get_text() for t in legend.get_texts()]
    assert "frozen, as_strided" in labels and "graph, as_strided" not in labels
    assert "frozen" in legend.get_title().get_text()
    drawn = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() in ("no number: crash", "crash cross")]
    shape = next(ln for ln in drawn if ln.get_gid() == "no number: crash")
    cross = next(ln for ln in drawn if ln.get_gid() == "crash cross")
    assert shape.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0)) and cross.get_marker() == "x"
    assert shape.get_markersize() == CRASH_SIZE and cross.get_markersize() == CROSS_SIZE
    # the legend's sample: the hollow marker and the x, drawn one over the other (not a plain circle)
    handles, texts = fig.legends[0].legend_handles, labels
    crash_label = next(i for i, t in enumerate(texts) if t.startswith("crashed"))
    from flexfix.edition.plots.invariance_marks import no_number_handle

    pair = no_number_handle("crash", "#555555", "D")
    assert isinstance(pair, tuple) and [h.get_marker() for h in pair] == ["D", "x"]
    assert pair[0].get_markerfacecolor() == "white" and pair[0].get_markersize() == CRASH_SIZE
    assert handles[crash_label] is not None
    matplotlib.pyplot.close(fig)
    gpu, _ = _gpu_kernel()
    fig = plots.max_diff_vs_batch(gpu, "GPU")
    labels = [t.get_text() for t in _legend(fig).get_texts()]
    assert "graph, as_strided" in labels and not any(t.startswith("frozen") for t in labels)
    matplotlib.pyplot.close(fig)


def test_notebook_cells_still_parse():
    for stem in ("03_stride_layouts", "04_batch_invariance", "05_cost"):
        nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
        assert nb["nbformat"] == 4 and nb["nbformat_minor"] == 4
        assert all("id" not in c for c in nb["cells"])
