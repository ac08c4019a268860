"""Every public figure, drawn from the recorded data in data/ (and notebook 03's default layouts), must
show its message: no text on top of other text, nothing off the figure, crashes visible, and the
colours its legend names those ``plots`` exports for captions."""

import functools
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

from flexfix.edition import plots, results, tables
from flexfix.measure import engine_sweep, record
from flexfix.mechanism import layouts
from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

DATA = Path(__file__).resolve().parents[1] / "data"
TOUCH_PX = 1.0  # boxes may share this much (anti-aliased edges), no more


# Inputs, built as the notebooks build them.


COPIES = [(copy_to_persistent_as_strided, "as_strided (vLLM 0.20.0)"), (copy_to_persistent, "sliced (fix)")]


def notebook03_layouts(k_replay: int, g: int = 3, g_max: int = 4, w_max: int = 64, k_capture: int = 32) -> list:
    """Notebook 03's defaults: G=3, G_MAX=4, W_MAX=64, K_CAPTURE=32."""
    return [
        layouts.stride_layout(c, n, g=g, g_max=g_max, w_max=w_max, k_capture=k_capture, k_replay=k_replay)
        for c, n in COPIES
    ]


def many_blocks() -> list:
    """A bigger buffer than the notebook's: twelve query blocks, 256 cells a row."""
    return notebook03_layouts(200, g=12, g_max=16, w_max=256, k_capture=160)


def step(outcome: str, error: float | None) -> dict:
    return {"step": "", "K": 0, "G": 3, "max_error": error, "outcome": outcome}


def run(copy: str, seed: int, status: str, steps: list[dict], device: str = "cuda") -> dict:
    return {"copy": copy, "batch": 48, "seed": seed, "device": device, "status": status, "records": steps}


def gpu_died_at_first_replay() -> pd.DataFrame:
    """The H100 shape: an as_strided run reports its capture step, then the process dies."""
    return pd.DataFrame([run("as_strided", 0, "illegal_memory_access", [step("ok", 3e-3)])])


def live_gpu_wrong_results() -> pd.DataFrame:
    """A fresh GPU run that went wrong without crashing (the same step wrong in every run)."""

    def wrong(seed):
        return [step("ok", 3e-3)] + [step("wrong_result", 1.0 + seed + i / 10) for i in range(4)]

    ok = [step("ok", 3e-3 + i * 1e-4) for i in range(5)]
    rows = [run("as_strided", s, "wrong_result", wrong(s)) for s in range(5)]
    return pd.DataFrame(rows + [run("sliced", s, "ok", ok) for s in range(5)])


def cpu_index_errors() -> pd.DataFrame:
    """The CPU analog's shape: index errors at replays (the run goes on), one late wrong result."""
    steps = [step("ok", 5e-7), step("index_error", None), step("index_error", None), step("wrong_result", 2.9)]
    return pd.DataFrame(
        [run("as_strided", s, "index_error", steps, "cpu") for s in range(3)]
        + [run("sliced", s, "ok", [step("ok", 5e-7)] * 4, "cpu") for s in range(3)]
    )


@functools.cache
def recorded(name: str) -> pd.DataFrame:
    return results.recorded(DATA, name)[0]


@functools.cache
def recorded_all(names: tuple[str, ...]) -> pd.DataFrame:
    return results.recorded_all(DATA, list(names))[0]


def throughput_table() -> pd.DataFrame:
    engine = recorded_all(tuple(record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES))
    speed = engine_sweep.throughput_rows(engine)
    return speed.assign(setting=[tables.engine_label(r) for _, r in speed.iterrows()])


def figures():
    """(name, thunk) for each public figure function, with representative inputs."""

    def kernel_inv():
        return recorded_all(tuple(record.RECORDED_KERNEL_INVARIANCE))

    def ratios():
        return tables.timing_ratios(recorded("decode_timing"))

    long_title = "H100, vLLM 0.20.0 + flexfix: output tokens per second (dot: an engine's median; bar: its slowest"
    return [
        ("storage_owners capture", lambda: plots.storage_owners(notebook03_layouts(48), when="capture")),
        ("storage_owners replay", lambda: plots.storage_owners(notebook03_layouts(48), when="replay")),
        ("read_windows grow", lambda: plots.read_windows(notebook03_layouts(48))),
        ("read_windows shrink", lambda: plots.read_windows(notebook03_layouts(16))),
        ("read_windows one block", lambda: plots.read_windows(notebook03_layouts(48, g=1))),
        ("read_windows many blocks", lambda: plots.read_windows(many_blocks())),
        ("storage_owners many blocks", lambda: plots.storage_owners(many_blocks())),
        ("replay_errors H100", lambda: plots.replay_errors(recorded("ima_kernel"), "H100, CUDA-graph replay")),
        ("replay_errors wrong", lambda: plots.replay_errors(live_gpu_wrong_results(), "cuda: max error per step")),
        ("replay_errors cpu", lambda: plots.replay_errors(cpu_index_errors(), "cpu: max error per step, batch 48")),
        ("category_heatmap kernel", lambda: plots.category_heatmap(*kernel_grid(kernel_inv()))),
        ("category_heatmap engine", lambda: plots.category_heatmap(*engine_grid())),
        ("max_diff_vs_batch", lambda: plots.max_diff_vs_batch(kernel_inv(), "H100: how far the needle moves")),
        ("ratio_lines batch", lambda: plots.ratio_lines(ratios(), "batch", "graph_speedup", "context", "H100", "x")),
        ("ratio_lines context", lambda: plots.ratio_lines(ratios(), "context", "flex_bw_fraction", "batch", "t", "f")),
        ("throughput_points", lambda: plots.throughput_points(throughput_table(), long_title + " repetition)")),
        ("serving_figure", lambda: plots.serving_figure(serving_run(), "recorded on NVIDIA H100 80GB HBM3")),
        ("guard_invariant", lambda: plots.guard_invariant(notebook03_layouts(48))),
        ("guard_invariant one block", lambda: plots.guard_invariant(notebook03_layouts(48, g=1))),
    ]


def serving_run() -> pd.DataFrame:
    return results.recorded(DATA, "serve")[0]


def kernel_grid(table):
    grid, notes = tables.kernel_grid(table)
    return grid, "H100: needle alone vs in a batch (cell text: positions bitwise equal)", notes


def engine_grid():
    grid, notes = tables.engine_grid(engine_sweep.invariance_rows(recorded_all(tuple(record.RECORDED_SWEEP_TABLES))))
    return grid, "H100: needle alone vs N", notes


FIGURES = dict(figures())


def drawn(fig: Figure):
    """Drawn once for all the checks of a figure: again only if it changed since (matplotlib's ``stale`` flag)."""
    if getattr(fig, "_drawn_here", (None,))[0] is not fig.canvas or fig.stale:
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        fig._drawn_here = (fig.canvas, fig.canvas.get_renderer())
    return fig._drawn_here[1]


# Which text is on the figure, and where.


def _tick_labels(fig: Figure) -> dict[int, tuple[object, bool]]:
    """id(label) -> (its axis, whether its tick is inside the view, i.e. drawn)."""
    out = {}
    for axis in fig.findobj(matplotlib.axis.Axis):
        lo, hi = sorted(axis.get_view_interval())
        slack = (hi - lo) * 1e-9
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            shown = lo - slack <= tick.get_loc() <= hi + slack
            for label in (tick.label1, tick.label2):
                out[id(label)] = (axis, shown)
    return out


def _annotation_drawn(text: Annotation) -> bool:
    """An annotation whose point lies outside its axes is clipped (annotation_clip)."""
    if text.axes is None or text.xycoords != "data":
        return True
    x, y = text.axes.transData.transform(text.xy)
    return text.axes.bbox.contains(x, y)


def texts(fig: Figure) -> list[tuple[Text, object, object]]:
    """(text, its window extent, its tick axis or None) for each non-empty text drawn."""
    renderer = drawn(fig)
    ticks = _tick_labels(fig)
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        axis, shown = ticks.get(id(text), (None, True))
        if not shown or (isinstance(text, Annotation) and not _annotation_drawn(text)):
            continue
        out.append((text, text.get_window_extent(renderer), axis))
    return out


def overlaps(fig: Figure) -> list[str]:
    """Pairs of drawn texts whose boxes overlap by more than TOUCH_PX in both directions."""
    found = texts(fig)
    bad = []
    for i, (a, box_a, _) in enumerate(found):
        for b, box_b, _ in found[i + 1 :]:
            w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if w > TOUCH_PX and h > TOUCH_PX:
                bad.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return bad


def off_figure(fig: Figure) -> list[str]:
    frame = fig.bbox
    return [
        repr(t.get_text())
        for t, box, _ in texts(fig)
        if box.x0 < frame.x0 - TOUCH_PX
        or box.y0 < frame.y0 - TOUCH_PX
        or box.x1 > frame.x1 + TOUCH_PX
        or box.y1 > frame.y1 + TOUCH_PX
    ]


# The figures.


def legends_over_axes(fig: Figure) -> list[str]:
    """Legends (all drawn beside the axes here) that cover part of a plotting area."""
    renderer = drawn(fig)
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    bad = []
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            w = min(box.x1, ax.bbox.x1) - max(box.x0, ax.bbox.x0)
            h = min(box.y1, ax.bbox.y1) - max(box.y0, ax.bbox.y0)
            if w > TOUCH_PX and h > TOUCH_PX:
                bad.append(f"legend {[t.get_text() for t in legend.get_texts()][:2]} covers {ax.get_title()!r}")
    return bad


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_text_never_overlaps_and_stays_on_the_figure(name):
    fig = FIGURES[name]()
    assert isinstance(fig, Figure)
    assert texts(fig), "a figure with no text explains nothing"
    assert overlaps(fig) == []
    assert off_figure(fig) == []
    assert legends_over_axes(fig) == []


def test_the_checks_can_fail():
    """Overlapping texts and a text off the figure are caught (the checks are not vacuous)."""
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.text(0.5, 0.5, "wrong result", transform=ax.transAxes)
    ax.text(0.52, 0.5, "wrong result", transform=ax.transAxes)
    ax.set_title("a title far too long for a figure three inches wide, so it runs off both sides")
    assert overlaps(fig) and off_figure(fig)


def _markers_at(fig: Figure, x: float) -> list:
    """Visible marker artists with a point at data x, drawn inside their axes."""
    drawn(fig)
    found = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_visible() or line.get_marker() in (None, "", "None", " "):
                continue
            for px, py in zip(line.get_xdata(), line.get_ydata()):
                if np.isfinite(py) and abs(px - x) < 0.3 and ax.bbox.contains(*ax.transData.transform((px, py))):
                    found.append(line)
    return found


def legend_labels(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("table", [gpu_died_at_first_replay(), recorded("ima_kernel")], ids=["synthetic", "H100"])
def test_a_run_that_died_at_its_first_replay_shows_a_cross_there(table):
    """The H100 as_strided runs report the capture step, then the process dies: the figure must show
    where, and say how, not only a lone point at step 0."""
    crashed = table[table["status"] == "illegal_memory_access"]
    fig = plots.replay_errors(crashed, "died")
    assert _markers_at(fig, 1.0), "nothing drawn at step 1, where every run crashed"
    assert any(label.startswith("illegal memory access") for label in legend_labels(fig))
    assert 1 in [int(t) for t in fig.axes[-1].get_xticks()]


def test_cpu_index_errors_are_crosses_at_their_steps_and_wrong_results_are_points():
    fig = plots.replay_errors(cpu_index_errors(), "cpu")
    assert _markers_at(fig, 1.0) and _markers_at(fig, 2.0)
    assert any(label.startswith("index error (3 runs)") for label in legend_labels(fig))
    texts_drawn = [t.get_text() for t, _, _ in texts(fig)]
    assert not any("wrong result" in t for t in texts_drawn), "a wrong result is a measured point, not a label"


def test_replay_error_steps_are_integers():
    fig = plots.replay_errors(live_gpu_wrong_results(), "t")
    drawn(fig)
    ticks = fig.axes[-1].get_xticks()
    assert list(ticks) == list(range(5))


# What read_windows says: per reading query block.


def test_read_windows_are_per_query_block_and_block_0_is_read_right():
    for lay in notebook03_layouts(48) + notebook03_layouts(16):
        src = plots.read_sources(lay)
        assert len(src) == lay.g * lay.k_replay
        assert (src[src["g"] == 0]["category"] == "its own entry").all()
        grid = src["code"].to_numpy().reshape(lay.read_at.shape)
        assert ((grid != 0) == lay.misread).all()
        assert ((grid >= 3) == lay.never_written).all()


def test_read_windows_name_what_the_misread_cells_hold():
    grow, shrink = notebook03_layouts(48)[0], notebook03_layouts(16)[0]
    src = plots.read_sources(grow).set_index(["g", "j"])
    assert src.loc[(1, 0), "category"] == "another row's entry" and src.loc[(1, 0), "holds_row"] == 0
    assert src.loc[(1, 0), "holds_entry"] == 32
    assert src.loc[(1, 16), "category"] == "another entry of its own row" and src.loc[(1, 16), "holds_entry"] == 0
    src = plots.read_sources(shrink).set_index(["g", "j"])
    assert src.loc[(2, 0), "category"] == "not written this step (left from the capture step)"
    assert (src.loc[(2, 0), "holds_row"], src.loc[(2, 0), "written_at"]) == (2, "capture")
    fig = plots.read_windows(notebook03_layouts(48))
    assert fig.axes[0].get_ylabel().startswith("query block")
    assert fig.axes[-1].get_xlabel().startswith("entry read")
    assert "block 0: 32-47" in [t.get_text() for t, _, _ in texts(fig)]


def test_read_windows_tell_the_initial_fill_and_reads_past_the_buffer():
    """Cells no step wrote (they hold the buffer's initial -1) and reads past its end have their own colours."""
    lay = layouts.Layout(
        copy_name="synthetic",
        g=2,
        g_max=2,
        w_max=4,
        k_capture=2,
        k_replay=2,
        capture_stride=(4, 1),
        replay_stride=(2, 1),
        owner_capture=np.array([[0, 0, -1, -1], [1, 1, -1, -1]]),
        owner_replay=np.array([[0, 0, 1, 1], [-1, -1, -1, -1]]),
        cell_of=np.array([[0, 1], [2, 3]]),
        read_at=np.array([[0, 1], [6, 8]]),
    )
    src = plots.read_sources(lay).set_index(["g", "j"])
    assert src.loc[(1, 0), "category"] == "never written (the buffer's initial -1)"
    assert src.loc[(1, 1), "category"] == "outside the buffer"
    assert lay.never_written[1].all()
    fig = plots.read_windows([lay])
    assert {"never written (the buffer's initial -1)", "outside the buffer"} <= set(legend_labels(fig))
    assert overlaps(fig) == [] and off_figure(fig) == []


# Colours: what a legend shows is what plots exports for captions.


def _handle_colour(handle) -> str:
    if isinstance(handle, matplotlib.lines.Line2D):
        colour = handle.get_markerfacecolor() if handle.get_linestyle() in ("None", "none", "") else handle.get_color()
        return to_hex(colour)
    return to_hex(handle.get_facecolor())


def _legend_colours(fig: Figure) -> list[tuple[str, str]]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [
        (text.get_text(), _handle_colour(handle))
        for legend in legends
        for text, handle in zip(legend.get_texts(), legend.legend_handles)
    ]


@pytest.mark.parametrize(
    "name, figure",
    [
        ("read_windows", "read_windows grow"),
        ("read_windows", "read_windows shrink"),
        ("storage_owners", "storage_owners replay"),
        ("guard_invariant", "guard_invariant"),
        ("replay_errors", "replay_errors H100"),
        ("replay_errors", "replay_errors cpu"),
        ("category_heatmap", "category_heatmap kernel"),
        ("category_heatmap", "category_heatmap engine"),
    ],
)
def test_legend_colours_are_the_exported_ones(name, figure):
    colours = plots.FIGURE_COLOURS[name]
    for label, colour in _legend_colours(FIGURES[figure]()):
        keys = [k for k in colours if label.startswith(k)]
        assert keys, f"{label!r} is not named in plots.FIGURE_COLOURS[{name!r}]"
        assert colour == to_hex(colours[max(keys, key=len)][1]), label


def test_the_guard_picture_gives_the_guards_own_verdict():
    stock, fixed = FIGURES["guard_invariant"]().axes[:2]
    assert stock.get_title().endswith("the guard refuses the replay") and fixed.get_title().endswith("lets it replay")
    # one query block: a row stride that addresses nothing, whichever copy
    assert all(a.get_title().endswith("lets it replay") for a in FIGURES["guard_invariant one block"]().axes[:2])


# Teaching round 3 (issue #26): one test per fixed figure defect, each failing on the figure as it was.


def test_a_mixed_heatmap_cell_shows_every_outcome_and_the_legend_says_colour_is_the_worst():
    """C1: a cell coloured 'error' that also holds moved positions says so in its text, and the legend says that the
    colour is the worst outcome of the cell (the old cell text counted only the bitwise-equal positions)."""
    table = recorded_all(tuple(record.RECORDED_KERNEL_INVARIANCE))
    grid, notes = tables.kernel_grid(table)
    cells = table[(table.config == "flex, pytorch options, graph, sliced") & (table.batch == 16)]
    assert grid.loc["flex, pytorch options, graph, sliced", 16] == "error"
    assert set(cells.outcome) == {"ok", "error"} and not cells.bitwise_equal.fillna(False).any()
    assert notes.loc["flex, pytorch options, graph, sliced", 16] == "2/3 ~\n1/3 E"
    for (config, batch), group in table.groupby(["config", "batch"]):
        row = next(r for r in notes.index if r.split("\n")[0] == config)
        counts = [part.split(" ")[0].split("/") for part in notes.loc[row, batch].split("\n")]
        assert sum(int(n) for n, _ in counts) == len(group) and {int(m) for _, m in counts} == {len(group)}
    fig = plots.category_heatmap(grid, "t", notes)
    drawn_texts = [t.get_text() for t, _, _ in texts(fig)]
    assert "2/3 ~\n1/3 E" in drawn_texts
    title = fig.axes[0].get_legend().get_title().get_text()
    assert "worst outcome" in title and "~ moved" in title and "E error" in title


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_gid() is None and ln.get_marker() not in (None, "", "None")]


def test_max_diff_series_are_few_per_panel_and_each_has_its_own_colour_and_marker():
    """C2: one panel per kernel; inside a panel at most four series, no two with the same colour or marker (the old
    figure drew twelve series of tab20 in one axes, light/dark pairs of near-identical hues)."""
    for table in (recorded_all(tuple(record.RECORDED_KERNEL_INVARIANCE)),):
        fig = plots.max_diff_vs_batch(table, "t")
        assert len(fig.axes) == 3
        styles = set()
        for ax in fig.axes:
            lines = _data_lines(ax)
            assert 1 <= len(lines) <= 4
            colours = [to_hex(ln.get_color()) for ln in lines]
            markers = [ln.get_marker() for ln in lines]
            assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
            # equal values stay visible: the series of one batch size are drawn side by side
            xs = [round(ln.get_xdata()[0] % 1, 3) for ln in lines]
            assert len(set(xs)) == len(xs)
            styles |= {(to_hex(ln.get_color()), ln.get_marker(), ln.get_label()) for ln in lines}
        assert len({c for c, _, _ in styles}) == len({label for _, _, label in styles})  # a colour means one series


def test_crash_markers_sit_outside_the_value_axis():
    """C3: crashed cells (and kernel errors) are marked in a strip above the panel (axes fraction > 1), never at a
    value on the log axis where a wrong result's error could sit."""
    table = recorded_all(tuple(record.RECORDED_KERNEL_INVARIANCE))
    fig = plots.max_diff_vs_batch(table, "t")
    drawn(fig)
    marks = [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("no number")]
    assert {ln.get_gid() for ln in marks} == {"no number: crash", "no number: error"}
    for ln in marks:
        ax = ln.axes
        assert ln.get_transform() == ax.get_xaxis_transform() and all(y > 1 for y in ln.get_ydata())
    for ax in fig.axes:  # nothing with a crash's marker inside the data area
        assert not [ln for ln in _data_lines(ax) if ln.get_marker() == "x"]
    crashed = table[table.outcome == "illegal_memory_access"].groupby("config").batch.nunique().sum()
    assert sum(len(ln.get_xdata()) for ln in marks if ln.get_gid() == "no number: crash") == crashed


def test_the_reference_line_is_dashed_and_named_and_equal_series_stay_visible():
    """C4: the text calls the 0.5 reference a dashed line: it is dashed and the legend names it; series with equal
    values (batch 1, 8 and 16 coincide) have distinct hollow markers, each smaller than the one drawn before."""
    ratios = tables.timing_ratios(recorded("decode_timing"))
    fig = plots.ratio_lines(ratios, "context", "flex_bw_fraction", "batch", "t", "f", reference=0.5,
                            reference_label="half the copy bandwidth")  # fmt: skip
    ax = fig.axes[0]
    ref = [ln for ln in ax.get_lines() if ln.get_label() == "half the copy bandwidth"]
    assert len(ref) == 1 and ref[0].get_linestyle() == "--"
    assert "half the copy bandwidth" in legend_labels(fig)
    series = [ln for ln in ax.get_lines() if ln.get_label().startswith("batch ")]
    assert len(series) == 6 and len({ln.get_marker() for ln in series}) == 6
    assert all(ln.get_markerfacecolor() == "none" for ln in series)
    sizes = [ln.get_markersize() for ln in series]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_every_serving_stage_is_a_visible_bar_with_its_counts():
    """C5: a stage of one request (the stream) is as wide as one of 128: shares of the stage, not requests on a 0-128
    axis; the counts are written beside each bar."""
    from flexfix.edition.plots import serving as serving_plots

    table = serving_run()
    fig = plots.serving_figure(table, "t")
    ax = fig.axes[0]
    totals: dict[float, float] = {}
    for bar in ax.patches:
        y = round(bar.get_y() + bar.get_height() / 2, 3)
        inset = 2 * serving_plots.INSET if bar.get_linestyle() == ":" else 0  # round 7: the not-run box, off the spines
        totals[y] = totals.get(y, 0) + bar.get_width() + inset
    stages = [s for _, r in table.iterrows() for s in r["records"] if s["stage"] != "alone"]
    assert len(totals) == len(stages) and all(abs(w - 100) < 1e-9 for w in totals.values())
    assert ax.get_xlim() == (0, 100)
    said = [t.get_text() for t, _, _ in texts(fig)]
    assert "1 not run (of 1)" in said and "48 errors (of 48)" in said


# Teaching round 4: what a newcomer reading only the published edition could not tell.


def test_the_engine_heatmap_counts_the_runs_of_each_outcome_in_every_cell():
    """1: the engine heatmap wrote no counts; now every cell says how many of its runs came to each outcome, of how
    many (``1/1 ~``), with the largest logprob difference where they differed, and the legend says how to read it."""
    rows = engine_sweep.invariance_rows(recorded_all(tuple(record.RECORDED_SWEEP_TABLES)))
    grid, notes = tables.engine_grid(rows)
    fig = plots.category_heatmap(grid, "t", notes)
    drawn_texts = [t.get_text() for t, _, _ in texts(fig)]
    shown = 0
    for label in grid.index:
        for n in grid.columns:
            if grid.loc[label, n] == "not run":
                continue
            text = notes.loc[label, n]
            assert text in drawn_texts, (label, n)
            counts = [line.split(" ")[0] for line in text.split("\n") if "/" in line]
            assert counts and all(c.split("/")[1] == counts[0].split("/")[1] for c in counts)
            shown += 1
    assert shown == len(rows)
    moved = [t for t in drawn_texts if t.startswith("1/1 ~\n")]  # a run whose logprobs moved says by how much
    assert moved and all(float(t.split("\n")[1]) > 0 for t in moved)
    title = fig.axes[0].get_legend().get_title().get_text()
    assert "runs per outcome" in title and "worst outcome" in title
    # a cell of several runs says how many had each outcome
    two = pd.concat([rows, rows.assign(logprobs_bitwise_equal=False, max_abs_logprob_diff=0.5)], ignore_index=True)
    _, notes = tables.engine_grid(two)
    assert set(notes.iloc[0].str.split("\n").str[0]) <= {"1/2 =", "1/2 ~"} and "1/2 =\n1/2 ~\n0.5" in set(notes.iloc[0])


def _linear(hex_):
    c = np.array(matplotlib.colors.to_rgb(hex_))
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


# Machado, Oliveira & Fernandes (2009), severity 1: what a protanope and a deuteranope see, on linear RGB.
CVD = {
    "protan": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
    "deutan": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
}


def _seen(hex_, vision):
    lin = np.clip(CVD[vision] @ _linear(hex_), 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


OUTCOME_FIGURES = ["category_heatmap", "max_diff_vs_batch", "replay_errors", "read_windows", "storage_owners"]


@pytest.mark.parametrize("name", OUTCOME_FIGURES + ["outcome_grid"])
def test_no_two_colours_of_a_figure_look_alike_to_a_red_green_colour_blind_reader(name):
    """2: the figures told outcomes apart by red and green (wrong result red, correct green; as_strided red, sliced
    green), which a protanope or deuteranope sees as one colour.  Every two colours a figure gives different meanings
    stay apart in simulated protan and deutan vision (the old red/green pair came to 0.09 apart, every pair now is at
    least 0.15 apart)."""
    from flexfix.edition.plots.outcome_cause import OUTCOME_CAUSE_COLOURS

    colours = OUTCOME_CAUSE_COLOURS if name == "outcome_grid" else plots.FIGURE_COLOURS[name]
    hexes = sorted({to_hex(h) for _, h in colours.values()})
    for vision in CVD:
        for i, a in enumerate(hexes):
            for b in hexes[i + 1 :]:
                apart = float(np.linalg.norm(_seen(a, vision) - _seen(b, vision)))
                assert apart >= 0.15, (name, vision, a, b, apart)
    assert float(np.linalg.norm(_seen("#4c9a2a", "deutan") - _seen("#d9534f", "deutan"))) < 0.15  # the old pair


def test_an_outcome_has_one_colour_in_every_figure_and_no_series_takes_it():
    """1 and 2: red meant "wrong result" in one figure, "graph, as_strided" or "not written this step" in another.
    Now the same outcome has the same colour in every figure, and no series (a copy, a launch, a query block) uses an
    outcome's colour."""
    from flexfix.edition.plots.invariance import LAUNCH_COPY_STYLES
    from flexfix.edition.plots.outcome_cause import OUTCOME_CAUSE_COLOURS
    from flexfix.edition.plots.style import OUTCOME_COLOURS, PALETTE

    same = [
        ("ok", [("category_heatmap", "bitwise equal"), ("outcome_grid", "correct")]),
        (
            "wrong_result",
            [("category_heatmap", "wrong result"), ("outcome_grid", "silently wrong"),
             ("replay_errors", "silently wrong answer")],
        ),
        ("moved", [("category_heatmap", "moved"), ("category_heatmap", "logprobs differ")]),  # r0305 C1: not orange
        ("illegal_memory_access", [("category_heatmap", "crash"), ("outcome_grid", "illegal memory access"),
                                   ("replay_errors", "illegal memory access"),
                                   ("replay_errors", "index error")]),  # the CPU analog's cross: the crash's black
        ("index_error", [("category_heatmap", "tokens differ")]),
    ]  # fmt: skip
    figures = {**plots.FIGURE_COLOURS, "outcome_grid": OUTCOME_CAUSE_COLOURS}
    for outcome, where in same:
        for figure, label in where:
            assert to_hex(figures[figure][label][1]) == to_hex(OUTCOME_COLOURS[outcome]), (figure, label)
    series = [h for _, h, _ in LAUNCH_COPY_STYLES.values()]
    series += [plots.REPLAY_ERROR_COLOURS[c][1] for c in ("sliced", "as_strided")]
    series += [h for k, (_, h) in plots.STORAGE_OWNER_COLOURS.items() if k.startswith("query block")]
    assert not {to_hex(h) for h in series} & {to_hex(h) for h in OUTCOME_COLOURS.values()}
    assert {to_hex(h) for h in series} <= set(PALETTE.values())
    # the read-window figure draws kinds of cell, not outcomes, nor query blocks: no colour of either (r0102 C1)
    kinds = {to_hex(h) for _, h in plots.READ_WINDOW_COLOURS.values()}
    assert not kinds & ({to_hex(h) for h in OUTCOME_COLOURS.values()} | {to_hex(h) for h in series})


def test_bitwise_equal_cells_sit_in_a_band_of_their_own_labelled_zero_and_the_legend_says_graph_not_frozen():
    """3: bitwise-equal cells were drawn at 1e-9 on the log axis, like a measured value, and the legend said "frozen",
    which the text never defined.  Now they sit in a band under the axis, labelled ``0 (bitwise equal)`` and cut off
    by a line; no series line dips into it; the legend names the launch as the text does."""
    from flexfix.edition.plots.invariance import ZERO_LABEL

    table = recorded_all(tuple(record.RECORDED_KERNEL_INVARIANCE))
    fig = plots.max_diff_vs_batch(table, "t")
    drawn(fig)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0] == ZERO_LABEL
        zero = ax.get_yticks()[0]
        measured = [y for ln in _data_lines(ax) for y in ln.get_ydata() if y == y]
        assert measured == [] or min(measured) > zero * 10  # the series lines hold measured values only
        band = [ln for ln in ax.get_lines() if ln.get_gid() == "bitwise equal"]
        assert band and all(y == zero for ln in band for y in ln.get_ydata())
        assert ax.get_ylim()[0] < zero < ax.get_yticks()[1] / 10
    said = " ".join(legend_labels(fig)) + " ".join(lg.get_title().get_text() for lg in fig.legends)
    assert "frozen" not in said and "capture step" in said and ZERO_LABEL in said
