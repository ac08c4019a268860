"""Notebook 03's figures: where the ``kv_indices`` rows live in the persistent buffer, and what a captured kernel
reads for each entry at a replay step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flexfix.edition.plots.style import PALETTE, SERIES_WORDS, colour, figure, patch, text_colour, wrap

__all__ = [
    "STORAGE_OWNER_COLOURS",
    "READ_WINDOW_COLOURS",
    "READ_WINDOW_HATCHES",
    "storage_owners",
    "read_sources",
    "read_windows",
]

# The colours each figure uses, as a caption may name them: legend label -> (colour word, hex).
# A series' legend label starts with its key ("as_strided, batch 48 (5 runs)" -> "as_strided").

# storage_owners: query block g has colour g (cycled): series colours, none of which read_windows (or any figure's
# outcomes) gives a meaning of its own.
STORAGE_OWNER_COLOURS = {
    **{f"query block {g}": colour(word) for g, word in enumerate(SERIES_WORDS)},
    "not written": ("white", "#ffffff"),
}

# read_windows: what the cell a query block reads for entry j holds at the replay step: a kind of cell, not an outcome,
# so a palette of its own, drawn in notebooks 01 and 03 beside figures whose colours mean something else: no hue of it
# is near an outcome's (style.OUTCOME_COLOURS: blue right, orange wrong, black a crash, ...), a copy's
# (plots.replays.REPLAY_ERROR_COLOURS: bluish green sliced, reddish purple as_strided) or a query block's of
# storage_owners (SERIES_WORDS), r0305 C13 (tests/test_teaching_round7_03_05.py measures the distances): cream its own
# entry (light, and not white, which storage_owners gives to "not written"), light cyan another entry of its own row
# (not light brown, which read as the orange of "silently wrong", r0102 C2 of round 15, nor pink, which read as the
# reddish purple of query block 0 in the storage figures beside it, r17 C3), dark brown another row's entry,
# grey a cell this step did not write; the initial fill and reads past the buffer take white and grey, hatched
# (READ_WINDOW_HATCHES), so that no two kinds look alike.
READ_WINDOW_COLOURS = {
    "its own entry": colour("cream"),
    "another entry of its own row": colour("light cyan"),
    "another row's entry": colour("dark brown"),
    "not written this step (left from the capture step)": colour("grey"),
    "never written (the buffer's initial -1)": ("white, dotted", "#ffffff"),
    "outside the buffer": ("grey, crossed", PALETTE["grey"]),
}
READ_WINDOW_HATCHES = {"never written (the buffer's initial -1)": "...", "outside the buffer": "xxx"}
_HATCH_INK = {"never written (the buffer's initial -1)": PALETTE["grey"], "outside the buffer": "#ffffff"}

# What the legend adds to each kind's name: what it holds, and what a label inside a run says (what follows from it
# is the text's to say, r0305 C4).
READ_WINDOW_NOTES = {
    "another entry of its own row": ": one of its query block's pages (of any of its requests), at another position",
    "another row's entry": ": a page of another query block's requests",
    "not written this step (left from the capture step)": ": a label 'block r: a-b (capture step)' means these cells "
    "hold query block r's entries a-b as the capture step wrote them, not this step's",
}


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
    return [patch(_owner_colour(i)) for i in range(shown)] + [patch("white")], labels + ["not written"]


def _outline_unwritten(ax, grid: np.ndarray) -> None:
    """A thin grey outline round every cell no row wrote: white on a white page would read as background (r0305
    C13); the legend's "not written" swatch has the same outline."""
    from matplotlib.patches import Rectangle

    for row, col in zip(*np.nonzero(np.asarray(grid) < 0)):
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, ec=PALETTE["grey"], lw=0.5, gid="not written"))


def storage_owners(layouts: Sequence, when: str = "replay"):
    """Heatmap of the persistent buffer's storage, one panel per copy: which query-block row
    wrote each cell at the capture or replay step (white: not written).  Colours:
    ``STORAGE_OWNER_COLOURS``."""
    from matplotlib.colors import ListedColormap

    fig, axes = figure((10, 1.6 * len(layouts) + 0.8), len(layouts), 1, squeeze=False)
    g = max(lay.g for lay in layouts)
    cmap = ListedColormap([STORAGE_OWNER_COLOURS["not written"][1]] + [_owner_colour(i) for i in range(g)])
    for ax, lay in zip(axes[:, 0], layouts):
        grid = lay.owner_capture if when == "capture" else lay.owner_replay
        ax.imshow(grid, cmap=cmap, vmin=-1.5, vmax=g - 0.5, aspect="auto", interpolation="nearest")
        _outline_unwritten(ax, grid)
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
    """What a run of read cells holds, e.g. ``block 0: 32-47`` (the query block whose entries, i.e. the row of
    ``kv_indices``, and which entries): "block", not "row", which the storage figures use for a buffer row (r15 D8)."""
    if first["code"] == _FILL:
        return "-1"
    if first["code"] == _OUTSIDE:
        return "outside"
    a, b = first["holds_entry"], last["holds_entry"]
    span = f"{a}-{b}" if b != a else f"{a}"
    return f"block {first['holds_row']}: {span}" + (" (capture step)" if first["code"] == _STALE else "")


def _label_runs(ax, sources: pd.DataFrame, k: int, fontsize: float = 10) -> None:
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
            ink = text_colour(list(READ_WINDOW_COLOURS.values())[first["code"]][1])
            x = (first["j"] + last["j"]) / 2
            ax.text(x, first["g"], text, ha="center", va="center", fontsize=fontsize, color=ink)


def _run_boundaries(ax, sources: pd.DataFrame) -> None:
    """A thin white line between two consecutive runs of one kind in a block's row (``block 0: 32-47`` then
    ``block 1: 0-31``, both another row's entries): one colour, yet two runs, each with its own label."""
    for g, part in sources.groupby("g"):
        runs = list(_runs(part))
        for (_, before), (after, _) in zip(runs, runs[1:]):
            if before["code"] == after["code"]:
                x = after["j"] - 0.5
                ax.plot([x, x], [g - 0.5, g + 0.5], color="white", lw=1.2, solid_capstyle="butt", gid="run boundary")


def read_windows(layouts: Sequence):
    """For each copy, one row per query block ``g`` (the row the captured kernel reads for it at
    replay), one column per entry ``j`` it reads, coloured by what that cell holds at the replay
    step (``READ_WINDOW_COLOURS``, ``READ_WINDOW_HATCHES``): the block's own entry j, another entry of its own
    row or another row's entry, the capture step's leftover in a cell this step did not write, the buffer's
    initial -1, outside the buffer.  Misread runs
    say which row's entries they hold; the right axis gives the storage cells each block reads."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    g = max(lay.g for lay in layouts)
    panel_in = min(0.38 * g, 3.0)
    fig, axes = figure((10, 1.9 + len(layouts) * (0.75 + panel_in)), len(layouts), 1, squeeze=False)  # legend room
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
        for name, hatch in READ_WINDOW_HATCHES.items():  # the hatched kinds: their cells drawn over
            for row, col in zip(*np.nonzero(codes == list(READ_WINDOW_COLOURS).index(name))):
                ax.add_patch(
                    Rectangle(
                        (col - 0.5, row - 0.5), 1, 1, fill=False, hatch=hatch, lw=0, ec=_HATCH_INK[name], gid=name
                    )
                )
        _run_boundaries(ax, src)
        ax.set_title(
            f"{lay.copy_name}: replay K={lay.k_replay}, read with the capture strides {lay.capture_stride}", fontsize=10
        )
        rows = _row_ticks(lay.g, panel_in)
        ax.set_yticks(rows)
        ax.set_ylabel("query block g\n(row g of kv_indices)", fontsize=9)
        cells = ax.secondary_yaxis("right")
        cells.set_yticks(rows, [f"storage cells {lay.read_at[r, 0]}-{lay.read_at[r, -1]}" for r in rows], fontsize=9)
        ax.set_xlabel("entry read (j)")  # every panel, the top one too
    names = list(READ_WINDOW_COLOURS)
    shown = sorted(present)
    fig.set_layout_engine("constrained", h_pad=0.12)
    handles = [patch(colours[c]) for c in shown]
    for handle, c in zip(handles, shown):
        if names[c] in READ_WINDOW_HATCHES:
            handle.set_hatch(READ_WINDOW_HATCHES[names[c]])
            handle.set_edgecolor(_HATCH_INK[names[c]])
    fig.legend(
        handles,
        [wrap(names[c] + READ_WINDOW_NOTES.get(names[c], ""), 4.3, 8) for c in shown],
        loc="outside lower center",
        fontsize=8,
        ncol=2,
        title="what the cell read for entry j holds at the replay step (a kind of cell, not an outcome)",
        title_fontsize=8,
    )
    fig.draw_without_rendering()  # lay the figure out, so that the run labels know their room
    for ax, lay, src in zip(axes[:, 0], layouts, sources):
        _label_runs(ax, src, lay.k_replay)
    return fig
