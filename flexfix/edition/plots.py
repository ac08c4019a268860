"""Figures for the notebooks.  Each function returns a matplotlib Figure (and imports
matplotlib inside, so importing flexfix never needs a display).

Each figure's legend says what its colours mean, and the colour words a caption may use for them
are exported here, one dict per figure (``FIGURE_COLOURS``): legend label, or the start of one ->
(colour word, hex)."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from flexfix.measure.repro import CRASHES

__all__ = [
    "storage_owners",
    "read_windows",
    "read_sources",
    "replay_errors",
    "category_heatmap",
    "max_diff_vs_batch",
    "ratio_lines",
    "throughput_points",
    "FIGURE_COLOURS",
    "STORAGE_OWNER_COLOURS",
    "READ_WINDOW_COLOURS",
    "REPLAY_ERROR_COLOURS",
    "CATEGORY_COLOURS",
    "MAX_DIFF_COLOURS",
    "SERIES_COLOURS",
]


def _figure(figsize, *grid, **kw):
    """A Figure outside pyplot's registry that renders itself as a PNG in a notebook: shown once,
    whatever the matplotlib backend (papermill runs with ``MPLBACKEND=agg``), and nothing is kept
    alive after the caller drops it."""
    import io

    from matplotlib.figure import Figure

    class NotebookFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            return buf.getvalue()

    fig = NotebookFigure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` (a conservative
    estimate of the width of a character), so that a long title never runs off the figure."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) if len(text) > chars else text


OUTCOME_COLOURS = {
    "ok": "#4c9a2a",
    "wrong_result": "#e0a100",
    "index_error": "#d9534f",
    "illegal_memory_access": "#8b0000",
    "refused": "#6c757d",
    "error": "#343a40",
    "timeout": "#6f42c1",
}

# The colours each figure uses, as a caption may name them: legend label -> (colour word, hex).
# A series' legend label starts with its key ("as_strided, batch 48 (5 runs)" -> "as_strided").

# storage_owners: query block g has colour g (cycled); no green, orange or red, which read_windows
# gives a meaning of their own.
STORAGE_OWNER_COLOURS = {
    "query block 0": ("blue", "#1f77b4"),
    "query block 1": ("purple", "#9467bd"),
    "query block 2": ("cyan", "#17becf"),
    "query block 3": ("brown", "#8c564b"),
    "query block 4": ("pink", "#e377c2"),
    "query block 5": ("olive", "#bcbd22"),
    "query block 6": ("grey", "#7f7f7f"),
    "not written": ("white", "#ffffff"),
}

# read_windows: what the cell a query block reads for entry j holds at the replay step.
READ_WINDOW_COLOURS = {
    "its own entry": ("green", "#4c9a2a"),
    "another entry of its own row": ("yellow", "#f2d13d"),
    "another row's entry": ("orange", "#e8780c"),
    "not written this step (left from the capture step)": ("red", "#d9534f"),
    "never written (the buffer's initial -1)": ("grey", "#8c8c8c"),
    "outside the buffer": ("black", "#000000"),
}

# replay_errors: one colour per copy for the measured errors; one per way a run crashed for the
# crosses in the "crashed" band; the tolerance line.
REPLAY_ERROR_COLOURS = {
    "sliced": ("green", "#4c9a2a"),
    "as_strided": ("red", "#d9534f"),
    "illegal memory access": ("dark red", "#8b0000"),
    "index error": ("black", "#212529"),
    "timeout": ("purple", "#6f42c1"),
    "error": ("grey", "#6c757d"),
    "refused": ("grey", "#6c757d"),
    "tolerance": ("grey", "#6c757d"),
}

# category_heatmap (notebook 04's grids): hex per category, and its colour word.
MATCH_COLOURS = {
    "bitwise equal": "#4c9a2a",
    "differs": "#e0a100",
    "wrong result": "#d9534f",
    "crash": "#8b0000",
    "error": "#6c757d",
    "tokens differ": "#d9534f",
    "not run": "#dddddd",
}
_MATCH_WORDS = {
    "bitwise equal": "green",
    "differs": "orange",
    "wrong result": "red",
    "crash": "dark red",
    "error": "grey",
    "tokens differ": "red",
    "not run": "light grey",
}
CATEGORY_COLOURS = {name: (_MATCH_WORDS[name], hex_) for name, hex_ in MATCH_COLOURS.items()}

# max_diff_vs_batch: each configuration has its own colour (matplotlib's tab20, in table order),
# named only by the legend; crosses at the top are crashed cells, in their configuration's colour.
MAX_DIFF_COLOURS = {
    "bitwise equal": ("grey", "#808080"),
    "crashed": ("black", "#000000"),
}

# ratio_lines and throughput_points: series i (in the legend's order) has colour i.
SERIES_COLOURS = (
    ("blue", "#1f77b4"),
    ("orange", "#ff7f0e"),
    ("green", "#2ca02c"),
    ("red", "#d62728"),
    ("purple", "#9467bd"),
    ("brown", "#8c564b"),
    ("pink", "#e377c2"),
    ("grey", "#7f7f7f"),
    ("olive", "#bcbd22"),
    ("cyan", "#17becf"),
)

FIGURE_COLOURS = {
    "storage_owners": STORAGE_OWNER_COLOURS,
    "read_windows": READ_WINDOW_COLOURS,
    "replay_errors": REPLAY_ERROR_COLOURS,
    "category_heatmap": CATEGORY_COLOURS,
    "max_diff_vs_batch": MAX_DIFF_COLOURS,
    "ratio_lines": dict(enumerate(SERIES_COLOURS)),
    "throughput_points": dict(enumerate(SERIES_COLOURS)),
}


def _patch(colour: str):
    """A legend swatch (with an outline, so that white shows)."""
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, facecolor=colour, edgecolor="#999999", linewidth=0.5)


# Notebook 03: where the rows live and where a captured kernel reads them.


def _owner_colour(g: int) -> str:
    blocks = [v for k, v in STORAGE_OWNER_COLOURS.items() if k.startswith("query block")]
    return blocks[g % len(blocks)][1]


def _row_ticks(n: int, panel_in: float) -> range:
    """Every row's tick where there is room for a label (about 0.18 inch each), else every k-th."""
    return range(0, n, max(1, int(np.ceil(n * 0.18 / panel_in))))


def _legend_blocks(g: int) -> tuple[list, list[str]]:
    """Legend swatches for the query blocks: one per colour (they repeat beyond that), then white."""
    shown = min(g, len(STORAGE_OWNER_COLOURS) - 1)
    labels = [f"query block {i}" for i in range(shown)]
    if g > shown:
        labels[-1] += f" (colours repeat every {shown})"
    return [_patch(_owner_colour(i)) for i in range(shown)] + [_patch("white")], labels + ["not written"]


def storage_owners(layouts: Sequence, when: str = "replay"):
    """Heatmap of the persistent buffer's storage, one panel per copy: which query-block row
    wrote each cell at the capture or replay step (white: not written).  Colours:
    ``STORAGE_OWNER_COLOURS``."""
    from matplotlib.colors import ListedColormap

    fig, axes = _figure((10, 1.6 * len(layouts) + 0.8), len(layouts), 1, squeeze=False)
    g = max(lay.g for lay in layouts)
    cmap = ListedColormap([STORAGE_OWNER_COLOURS["not written"][1]] + [_owner_colour(i) for i in range(g)])
    for ax, lay in zip(axes[:, 0], layouts):
        grid = lay.owner_capture if when == "capture" else lay.owner_replay
        ax.imshow(grid, cmap=cmap, vmin=-1.5, vmax=g - 0.5, aspect="auto", interpolation="nearest")
        k = lay.k_capture if when == "capture" else lay.k_replay
        stride = lay.capture_stride if when == "capture" else lay.replay_stride
        ax.set_title(f"{lay.copy_name}: {when} step, K={k}, view strides {stride}", fontsize=10)
        ax.set_ylabel("buffer row")
        ax.set_yticks(_row_ticks(lay.g_max, 1.0))
    axes[-1, 0].set_xlabel("buffer column (W_max cells per row)")
    fig.set_layout_engine("constrained", h_pad=0.12)
    fig.legend(*_legend_blocks(g), loc="outside right upper", fontsize=8)
    return fig


_NOTHING, _REPLAY, _CAPTURE = 0, 1, 2  # which step last wrote a storage cell
_OWN, _OWN_ROW, _OTHER_ROW, _STALE, _FILL, _OUTSIDE = range(len(READ_WINDOW_COLOURS))  # its order


def _storage_contents(lay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What each storage cell holds at the replay step, as three flat arrays: which step wrote it
    last (nothing / replay / capture), the row and the entry it holds (-1: none).  A row's entries
    lie in increasing storage order (positive strides), so the capture step's entry of a cell is
    its rank among the cells that row wrote."""
    size = lay.g_max * lay.w_max
    when, row, entry = np.zeros(size, int), np.full(size, -1), np.full(size, -1)
    captured = lay.owner_capture.reshape(-1)
    for r in np.unique(captured[captured >= 0]):
        cells = np.flatnonzero(captured == r)
        when[cells], row[cells], entry[cells] = _CAPTURE, r, np.arange(cells.size)
    rows, entries = np.indices(lay.cell_of.shape)
    cells = lay.cell_of.ravel()
    when[cells], row[cells], entry[cells] = _REPLAY, rows.ravel(), entries.ravel()
    return when, row, entry


def read_sources(lay) -> pd.DataFrame:
    """One row per query block ``g`` and entry ``j`` the captured kernel reads at replay: the
    storage cell, what it holds (``category``: a key of ``READ_WINDOW_COLOURS``) and whose entry
    that is (``holds_row``, ``holds_entry``, ``written_at``; -1 / "" where nothing is)."""
    when, row, entry = _storage_contents(lay)
    g, j = np.indices(lay.read_at.shape)
    cells = lay.read_at
    inside = cells < when.size
    at = np.where(inside, cells, 0)
    w, r, e = np.where(inside, when[at], -1), np.where(inside, row[at], -1), np.where(inside, entry[at], -1)
    names = list(READ_WINDOW_COLOURS)
    code = np.select(
        [w == -1, w == _NOTHING, w == _CAPTURE, cells == lay.cell_of, r == g],
        [_OUTSIDE, _FILL, _STALE, _OWN, _OWN_ROW],
        default=_OTHER_ROW,
    )
    return pd.DataFrame(
        {
            "g": g.ravel(),
            "j": j.ravel(),
            "cell": cells.ravel(),
            "category": [names[c] for c in code.ravel()],
            "code": code.ravel(),
            "holds_row": r.ravel(),
            "holds_entry": e.ravel(),
            "written_at": np.array(["outside", "", "replay", "capture"])[w.ravel() + 1],
        }
    )


def _runs(part: pd.DataFrame):
    """Runs of consecutive entries of one query block (rows of ``read_sources``) that read the
    same kind of cell, holding consecutive entries of one row: (first, last) record of each."""
    start = 0
    rows = part.to_dict("records")
    for i in range(1, len(rows) + 1):
        prev = rows[i - 1]
        if i < len(rows):
            cur = rows[i]
            same = cur["code"] == prev["code"] and cur["holds_row"] == prev["holds_row"]
            if same and (cur["code"] >= _FILL or cur["holds_entry"] == prev["holds_entry"] + 1):
                continue
        first = rows[start]
        yield first, prev
        start = i


def _run_label(first: dict, last: dict) -> str:
    """What a run of read cells holds, e.g. ``row 0: 32-47`` (the held row and entries)."""
    if first["code"] == _FILL:
        return "-1"
    if first["code"] == _OUTSIDE:
        return "outside"
    a, b = first["holds_entry"], last["holds_entry"]
    span = f"{a}-{b}" if b != a else f"{a}"
    return f"row {first['holds_row']}: {span}" + (" (capture step)" if first["code"] == _STALE else "")


def _label_runs(ax, sources: pd.DataFrame, k: int, fontsize: float = 7) -> None:
    """Write inside each misread run whose entries its cells hold, where the text fits."""
    fig = ax.get_figure()
    width_in = ax.get_position().width * fig.get_figwidth()
    height_in = ax.get_position().height * fig.get_figheight()
    per_cell = width_in / k
    if height_in / (sources["g"].max() + 1) < 0.15:
        return
    for _, part in sources.groupby("g"):
        for first, last in _runs(part):
            text = _run_label(first, last)
            room = (last["j"] - first["j"] + 1) * per_cell
            if first["code"] == _OWN or len(text) * 0.6 * fontsize / 72 + 0.08 > room:
                continue
            colour = "white" if first["code"] in (_STALE, _OUTSIDE) else "black"
            x = (first["j"] + last["j"]) / 2
            ax.text(x, first["g"], text, ha="center", va="center", fontsize=fontsize, color=colour)


def read_windows(layouts: Sequence):
    """For each copy, one row per query block ``g`` (the row the captured kernel reads for it at
    replay), one column per entry ``j`` it reads, coloured by what that cell holds at the replay
    step (``READ_WINDOW_COLOURS``): the block's own entry j (green), another entry of its own row
    (yellow) or another row's entry (orange), the capture step's leftover in a cell this step did
    not write (red), the buffer's initial -1 (grey).  Misread runs say which row's entries they
    hold; the right axis gives the storage cells each block reads."""
    from matplotlib.colors import ListedColormap

    g = max(lay.g for lay in layouts)
    panel_in = min(0.38 * g, 3.0)
    fig, axes = _figure((10, 1.3 + len(layouts) * (0.75 + panel_in)), len(layouts), 1, squeeze=False)
    colours = [hex_ for _, hex_ in READ_WINDOW_COLOURS.values()]
    present: set[int] = set()
    sources = [read_sources(lay) for lay in layouts]
    for ax, lay, src in zip(axes[:, 0], layouts, sources):
        codes = src["code"].to_numpy().reshape(lay.read_at.shape)
        present |= set(codes.ravel().tolist())
        cmap = ListedColormap(colours)
        ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, aspect="auto", interpolation="nearest")
        for row in range(1, lay.g):
            ax.axhline(row - 0.5, color="white", lw=2 if panel_in / g > 0.15 else 0.5)
        ax.set_title(
            f"{lay.copy_name}: replay K={lay.k_replay}, read with the capture strides {lay.capture_stride}", fontsize=10
        )
        rows = _row_ticks(lay.g, panel_in)
        ax.set_yticks(rows)
        ax.set_ylabel("query block\n(reading row)", fontsize=9)
        cells = ax.secondary_yaxis("right")
        cells.set_yticks(rows, [f"cells {lay.read_at[r, 0]}-{lay.read_at[r, -1]}" for r in rows], fontsize=8)
    axes[-1, 0].set_xlabel("entry read (j)")
    names = list(READ_WINDOW_COLOURS)
    shown = sorted(present)
    fig.set_layout_engine("constrained", h_pad=0.12)
    fig.legend(
        [_patch(colours[c]) for c in shown], [names[c] for c in shown], loc="outside lower center", fontsize=8, ncol=3
    )
    fig.draw_without_rendering()  # lay the figure out, so that the run labels know their room
    for ax, lay, src in zip(axes[:, 0], layouts, sources):
        _label_runs(ax, src, lay.k_replay)
    return fig


# Notebook 01: the error of each step, and where the runs crashed.


def _measured(records) -> list[float]:
    """The error of each step (floored at 1e-8 for the log axis); NaN where none was measured, so
    that the line breaks there instead of bridging a crashed step."""
    return [max(s["max_error"], 1e-8) if s.get("max_error") is not None else np.nan for s in records]


def _crash_steps(run) -> list[tuple[int, str]]:
    """(step, outcome) where a run crashed: each step whose record says so (the CPU analog goes on
    after an index error), and, when the run's status is a crash no record carries, the step after
    its last record: on a GPU an illegal memory access kills the process before that step reports."""
    records = list(run["records"])
    crashed = [(i, s["outcome"]) for i, s in enumerate(records) if s["outcome"] not in ("ok", "wrong_result")]
    status = run["status"]
    if status not in ("ok", "wrong_result") and status not in {o for _, o in crashed}:
        crashed.append((len(records), status))
    return crashed


def _tolerance(table: pd.DataFrame) -> tuple[float, str] | None:
    """The error above which a step is a wrong result, for the table's one device (None if mixed)."""
    devices = set(table["device"]) if "device" in table else set()
    if len(devices) != 1:
        return None
    import torch

    from flexfix.mechanism.kernel_repro import tolerance

    dtype = torch.bfloat16 if devices == {"cuda"} else torch.float32
    return tolerance(dtype), str(dtype).removeprefix("torch.")


def _crash_colour(outcome: str) -> str:
    return REPLAY_ERROR_COLOURS.get(outcome.replace("_", " "), ("grey", "#6c757d"))[1]


def _crash_band(band, table: pd.DataFrame) -> list[tuple[int, str]]:
    """Crosses in the top band at each step where runs crashed, one colour per outcome, with the
    number of runs beside them.  Returns (step, colour) for a vertical guide at each."""
    crashes = [(i, step, outcome) for i, (_, run) in enumerate(table.iterrows()) for step, outcome in _crash_steps(run)]
    counts = Counter((step, outcome) for _, step, outcome in crashes)
    outcomes = list(dict.fromkeys(o for _, o in sorted(counts)))
    for k, outcome in enumerate(outcomes):
        name, colour = outcome.replace("_", " "), _crash_colour(outcome)
        steps = sorted(s for s, o in counts if o == outcome)
        dx = (k - (len(outcomes) - 1) / 2) * 0.25
        runs = len({i for i, _, o in crashes if o == outcome})
        label = f"{name} ({runs} run{'s' if runs > 1 else ''})"
        band.plot([s + dx for s in steps], [0.5] * len(steps), "X", color=colour, ms=10, ls="none", label=label)
        for s in steps:
            if counts[(s, outcome)] > 1:
                band.text(s + dx + 0.1, 0.5, f"x{counts[(s, outcome)]}", va="center", fontsize=8, color=colour)
    if not counts:
        band.text(0.5, 0.5, "no run crashed", transform=band.transAxes, ha="center", va="center", color="grey")
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.set_ylabel("crashed", rotation=0, ha="right", va="center", fontsize=9)
    band.tick_params(labelbottom=False)
    return sorted({s: _crash_colour(o) for s, o in sorted(counts, reverse=True)}.items())


def replay_errors(table: pd.DataFrame, title: str):
    """Max |output - fp32 reference| at each step of each run (log scale), one colour per copy,
    and above it a "crashed" band with a cross at each step where runs crashed (named in the
    legend), including the step a GPU run died at before it could report.  The dashed line is the
    tolerance: a point above it is a wrong result.  Colours: ``REPLAY_ERROR_COLOURS``."""
    fig, (band, ax) = _figure((9, 4.2), 2, 1, sharex=True, gridspec_kw={"height_ratios": (1, 6)})
    steps = 1
    batches = sorted(table["batch"].unique())
    groups = table.groupby(["copy", "batch"], sort=False)
    for n, ((copy, batch), runs) in enumerate(groups):
        dx = (n - (len(groups) - 1) / 2) * 0.08  # side by side: equal errors (the capture step) stay visible
        colour = REPLAY_ERROR_COLOURS.get(copy, ("grey", "#6c757d"))[1]
        style = ("-", "--", ":", "-.")[batches.index(batch) % 4]
        label = f"{copy}, batch {batch} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        for i, (_, run) in enumerate(runs.iterrows()):
            ys = _measured(run["records"])
            shown = label if i == 0 else "_nolegend_"
            ax.plot(np.arange(len(ys)) + dx, ys, "o", ls=style, color=colour, alpha=0.6, label=shown)
            steps = max(steps, len(run["records"]), *(s + 1 for s, _ in _crash_steps(run)))
    for step, colour in _crash_band(band, table):
        ax.axvline(step, color=colour, lw=0.8, ls=":", alpha=0.6)
    tol = _tolerance(table)
    if tol is not None:
        ax.axhline(tol[0], color=REPLAY_ERROR_COLOURS["tolerance"][1], lw=0.8, ls="--", label=f"tolerance ({tol[1]})")
    ax.set_yscale("log")
    ax.set_xlim(-0.4, steps - 0.6)
    ax.set_xticks(range(steps))
    ax.set_xlabel("step (0 = capture, then replays)")
    ax.set_ylabel("max |out - reference|")
    band.set_title(_wrap(title, 6.5, 10), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    crash_handles, crash_labels = band.get_legend_handles_labels()
    ax.legend(handles + crash_handles, labels + crash_labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(h_pad=0.3)
    return fig


# Notebook 04: batch invariance.


def category_heatmap(grid: pd.DataFrame, title: str, notes: pd.DataFrame | None = None):
    """Rows x columns coloured by the category names of ``grid`` (keys of ``CATEGORY_COLOURS``),
    with optional text in each cell (``notes``, same shape)."""
    from matplotlib.colors import ListedColormap

    names = [n for n in MATCH_COLOURS if (grid == n).any().any()]
    codes = grid.apply(lambda col: col.map({n: i for i, n in enumerate(names)})).to_numpy(dtype=float)
    fig, ax = _figure((1.0 + 0.55 * grid.shape[1], 1.2 + 0.42 * grid.shape[0]))
    ax.imshow(
        codes,
        cmap=ListedColormap([MATCH_COLOURS[n] for n in names]),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index], fontsize=8)
    ax.set_xlabel(grid.columns.name or "")
    if notes is not None:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                colour = "black" if grid.iat[i, j] == "not run" else "white"
                ax.text(j, i, str(notes.iat[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.legend([_patch(MATCH_COLOURS[n]) for n in names], names, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(_wrap(title, fig.get_figwidth() * 0.9, 10), fontsize=10)
    fig.tight_layout()
    return fig


def _batch_axis(ax, values) -> None:
    """A log2 x axis labelled with the values measured, not with powers of two."""
    ticks = sorted(set(int(v) for v in values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
    ax.minorticks_off()


def max_diff_vs_batch(table: pd.DataFrame, title: str, floor: float = 1e-9):
    """Largest |needle in batch - needle alone| over the positions, against the batch size (one
    evenly spaced column per measured size; log y).  Bitwise-equal cells sit on the dotted floor
    line; crashed cells are crosses along the top, in their configuration's colour."""
    import matplotlib
    from matplotlib.lines import Line2D

    batches = sorted(table["batch"].unique())
    at = {b: i for i, b in enumerate(batches)}
    fig, ax = _figure((9, 3.8))
    top = max(float(table["max_abs_diff"].max(skipna=True) or 0) * 10, 1.0)
    for i, (config, cells) in enumerate(table.groupby("config", sort=False)):
        colour = matplotlib.colormaps["tab20"](i % 20)
        per_batch = cells.groupby("batch")["max_abs_diff"].max()
        ax.plot(
            [at[b] for b in per_batch.index],
            per_batch.clip(lower=floor),
            "o-",
            color=colour,
            label=config,
            alpha=0.8,
            markersize=4,
        )
        crashed = cells[cells["outcome"].isin(CRASHES)]["batch"].unique()
        ax.plot([at[b] for b in crashed], [top] * len(crashed), "x", color=colour, markersize=8)
    floor_colour, crash_colour = MAX_DIFF_COLOURS["bitwise equal"][1], MAX_DIFF_COLOURS["crashed"][1]
    ax.axhline(floor, color=floor_colour, lw=0.8, ls=":")
    ax.set_xticks(range(len(batches)), [str(b) for b in batches], fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (requests in the decode step)")
    ax.set_ylabel("max |in batch - alone|")
    ax.set_title(_wrap(title, 5.0, 10), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color=floor_colour, lw=0.8, ls=":"))
    labels.append(f"bitwise equal (drawn at {floor:g})")
    if table["outcome"].isin(CRASHES).any():  # a crash marker only where something crashed
        handles.append(Line2D([], [], color=crash_colour, marker="x", ls="none", markersize=8))
        labels.append("crashed (top; a missing point: no number)")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


# Notebook 05: cost.


def ratio_lines(
    table: pd.DataFrame,
    x: str,
    y: str,
    by: str,
    title: str,
    ylabel: str,
    *,
    logx: bool = True,
    reference: float | None = 1.0,
):
    """One line per value of ``by``: ``y`` against ``x`` (for speed-ups, overheads, fractions).
    Line i has ``SERIES_COLOURS[i]``; the legend, outside the axes, names them."""
    fig, ax = _figure((7.5, 3.6))
    for i, (key, part) in enumerate(table.groupby(by, sort=True)):
        part = part.sort_values(x)
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)][1]
        ax.plot(part[x], part[y], "o-", color=colour, label=f"{by} {key}", markersize=4)
    if reference is not None:
        ax.axhline(reference, color="grey", lw=0.8, ls=":")
    if logx:
        _batch_axis(ax, table[x])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, 5.5, 10), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def throughput_points(table: pd.DataFrame, title: str):
    """Output tokens per second, one panel per request count, one row per configuration: each
    engine is a dot at its median with a bar from its slowest to its fastest timed repetition, so
    the spread between and within engines is as visible as the differences between configurations.
    Source file i has ``SERIES_COLOURS[i]``."""
    counts = sorted(table["requests"].unique())
    settings = list(dict.fromkeys(table["setting"]))
    sources = list(dict.fromkeys(table["source"])) if "source" in table else [None]
    fig, axes = _figure((10, 1.2 + 0.38 * len(settings)), 1, len(counts), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], counts):
        for k, src in enumerate(sources):
            part = table[(table["requests"] == n) & ((table["source"] == src) if src else True)]
            if part.empty:
                continue
            colour = SERIES_COLOURS[k % len(SERIES_COLOURS)][1]
            y = [settings.index(s) + (k - (len(sources) - 1) / 2) * 0.12 for s in part["setting"]]
            reps = [[r["output_tokens"] / t for t in r["seconds"]] for _, r in part.iterrows()]
            ax.hlines(y, [min(r) for r in reps], [max(r) for r in reps], color=colour, lw=1.5, alpha=0.6)
            ax.plot(part["tokens_per_second"], y, "o", color=colour, markersize=5, label=src or "median")
        ax.set_title(f"{n} concurrent requests", fontsize=9)
        ax.set_xlabel("output tokens per second")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="recorded in", title_fontsize=8)
    fig.suptitle(_wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)
    fig.tight_layout()
    return fig
