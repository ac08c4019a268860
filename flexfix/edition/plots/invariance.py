"""Notebook 04's figures: which configurations are bitwise batch-invariant, and how far the others move."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.invariance_marks import (
    draw_no_number,
    mark_control,
    series_labels,
    series_title,
    struck_keys,
)
from flexfix.edition.plots.style import OUTCOME_WORDS, PALETTE, colour, figure, patch, text_colour, wrap
from flexfix.measure.outcomes import CRASHES

__all__ = [
    "MATCH_COLOURS",
    "CATEGORY_COLOURS",
    "MAX_DIFF_COLOURS",
    "MARKER_SYMBOLS",
    "LAUNCH_COPY_STYLES",
    "NO_NUMBER_Y",
    "ZERO_LABEL",
    "category_heatmap",
    "max_diff_vs_batch",
]

# category_heatmap (notebook 04's grids): colour word per category, each an outcome's colour of the whole edition
# (style.OUTCOME_WORDS): the kernel grid's categories, then the engine grid's.
_MATCH_WORDS = {
    "bitwise equal": OUTCOME_WORDS["ok"],
    "moved": OUTCOME_WORDS["moved"],
    "wrong result": OUTCOME_WORDS["wrong_result"],
    "crash": OUTCOME_WORDS["illegal_memory_access"],
    "error": OUTCOME_WORDS["error"],
    "logprobs differ": OUTCOME_WORDS["moved"],  # same tokens: a rounding-sized difference, not a wrong answer
    "tokens differ": OUTCOME_WORDS["index_error"],
    "not run": OUTCOME_WORDS["not_run"],
}
MATCH_COLOURS = {name: PALETTE[word] for name, word in _MATCH_WORDS.items()}
CATEGORY_COLOURS = {name: colour(word) for name, word in _MATCH_WORDS.items()}

# max_diff_vs_batch: one panel per kernel (and its options), one series per launch x copy with its own colour and
# marker, the same in every panel (colours no outcome uses); cells with no number (a crash, a kernel error) are
# marked above the axes, bitwise-equal cells (a difference of exactly 0, which a log axis cannot show) in a band of
# their own under it.
LAUNCH_COPY_STYLES = {
    "eager, sliced": (*colour("bluish green"), "o"),
    "eager, as_strided": (*colour("olive"), "s"),
    "graph, sliced": (*colour("purple"), "^"),
    "graph, as_strided": (*colour("reddish purple"), "D"),
}
# A count label under a marker starts with its series' marker as a text symbol: the labels stacked at one batch size are
# told apart by shape, not by their close colours alone.
MARKER_SYMBOLS = {"o": "\u25cb", "s": "\u25a1", "^": "\u25b3", "D": "\u25c7"}
MAX_DIFF_COLOURS = {
    "0 (bitwise equal)": ("the series' colour, in the grey band", PALETTE["light grey"]),
    "crashed": ("the series' colour, as its legend key", PALETTE["dark grey"]),
    "kernel error": ("the series' colour, as its legend key", PALETTE["dark grey"]),
    **{name: (word, hex_) for name, (word, hex_, _) in LAUNCH_COPY_STYLES.items()},
    "wrong result": ("the edition's wrong-result colour, filled", PALETTE[OUTCOME_WORDS["wrong_result"]]),
}
ZERO_LABEL = "0 (bitwise equal)"  # the y label of the band where bitwise-equal cells are drawn
NO_NUMBER_Y = 1.07  # the strip above each panel (axes fraction) where crashes and kernel errors are marked
NO_NUMBER_BAND = (1.0, 1.14)  # that strip, boxed and labelled NO_NUMBER_LABEL: outside the value axis
NO_NUMBER_LABEL = "no number"
NO_NUMBER_SPREAD = 0.25  # sideways step (batch columns) between the series' markers in that strip (r10 C1: none hidden)
NO_NUMBER_MARKERS = {"crash": "x", "error": "*"}  # the outcomes of the strip (a crash's x drawn in its series' shape)
TICK_CLEARANCE = 0.12  # no value tick label within this axes fraction of the strip's label: they never overlap


def category_heatmap(grid: pd.DataFrame, title: str, notes: pd.DataFrame | None = None, control=None, what=""):
    """Rows x columns coloured by the category names of ``grid`` (keys of ``CATEGORY_COLOURS``),
    with optional text in each cell (``notes``, same shape).  With notes, the legend says that a cell's colour
    is its worst outcome and, from ``notes.attrs["key"]``, how to read its text.  ``control``: a column that is a
    control, not a batch size (the needle alone again: ``what``), boxed and named in the legend (r21 C1)."""
    from matplotlib.colors import ListedColormap

    names = [n for n in MATCH_COLOURS if (grid == n).any().any()]
    codes = grid.apply(lambda col: col.map({n: i for i, n in enumerate(names)})).to_numpy(dtype=float)
    texts = [str(n) for n in notes.to_numpy().ravel()] if notes is not None else []
    lines = max((t.count("\n") + 1 for t in texts), default=1)
    chars = max((len(line) for t in texts for line in t.split("\n")), default=0)
    column = max(0.5, chars * 0.6 * 7 / 72 + 0.15)  # room for the widest line of cell text (7 pt), and a margin
    labels = max(len(line) for r in grid.index for line in str(r).split("\n")) * 0.6 * 8 / 72
    fig, ax = figure((labels + 2.8 + column * grid.shape[1], 1.2 + (0.28 + 0.13 * lines) * grid.shape[0]))
    ax.imshow(
        codes,
        cmap=ListedColormap([MATCH_COLOURS[n] for n in names]),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    for i, j in zip(*(grid == "error").to_numpy().nonzero()):  # error hatched: never read as the black of a crash
        ax.add_patch(_hatched((j - 0.5, i - 0.5)))
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index], fontsize=8)
    ax.set_xlabel(grid.columns.name or "")
    legend_title = None
    if notes is not None:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if grid.iat[i, j] == "error":  # dark text on a white box: white text on the white hatch was lost
                    ink, box = "black", dict(facecolor="white", edgecolor="none", pad=1.0, alpha=0.9)
                else:
                    ink, box = text_colour(MATCH_COLOURS.get(grid.iat[i, j], "#ffffff")), None
                ax.text(j, i, str(notes.iat[i, j]), ha="center", va="center", fontsize=7, color=ink, bbox=box)
        key = notes.attrs.get("key", "cell text: see the title")
        legend_title = "cell colour: its worst outcome\n" + key
    handles = [_hatched((0, 0)) if n == "error" else patch(MATCH_COLOURS[n]) for n in names]
    boxed = mark_control(ax, grid, control, what)
    legend = ax.legend(
        handles + ([boxed[0]] if boxed else []),
        names + ([boxed[1]] if boxed else []),
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        title=legend_title,
        title_fontsize=8,
    )
    legend._legend_box.align = "left"
    ax.set_title(wrap(title, fig.get_figwidth() * 0.9, 10), fontsize=10)
    fig.tight_layout()
    return fig


ERROR_HATCH = "///"  # an error cell of the heatmap: dark grey, hatched in light grey (a crash is solid black)


def _hatched(xy):
    """A cell (and legend swatch) of an error: dark grey with light hatching."""
    from matplotlib.patches import Rectangle

    return Rectangle(
        xy, 1, 1, facecolor=MATCH_COLOURS["error"], edgecolor=PALETTE["light grey"], hatch=ERROR_HATCH, lw=0
    )


def _panel_and_series(config: str) -> tuple[str, str]:
    """``"flex, vllm options, graph, as_strided"`` -> (``"flex, vllm options"``, ``"graph, as_strided"``); the
    CPU's frozen launch is drawn as the graph launch it stands for."""
    parts = config.split(", ")
    if len(parts) < 4:
        return config, "eager, sliced"
    launch = "graph" if parts[-2] == "frozen" else parts[-2]
    return ", ".join(parts[:-2]), f"{launch}, {parts[-1]}"


def _recordings(cells: pd.DataFrame) -> str:
    """What a panel's title adds where a series' cells come from more than one recording (a ``source`` column), as the
    heatmap's row label does (r0305 C12): ``"; graph, as_strided: 1 to 16 requests from kernel_invariance, ..."``."""
    if "source" not in cells:
        return ""
    said = []
    for series, part in cells.groupby("series", sort=False):
        if part["source"].nunique() > 1:
            parts = sorted(part.groupby("source", sort=False), key=lambda sp: sp[1]["batch"].min())
            spans = [f"{p['batch'].min()} to {p['batch'].max()} requests from {src}" for src, p in parts]
            said.append(f"{series}: " + ", ".join(spans))
    return "".join(f"; {s} (two recordings in one line)" for s in said)


def _no_number_band(ax) -> None:
    """The boxed strip above the panel where crashes and kernel errors are marked, labelled like a tick
    (``no number``) and cut off from the value axis by the panel's own frame."""
    from matplotlib.patches import Rectangle

    lo, hi = NO_NUMBER_BAND
    box = Rectangle((0, lo), 1, hi - lo, transform=ax.transAxes, facecolor="#f4f4f4", edgecolor="#777777", lw=1.0)
    box.set_clip_on(False)
    ax.add_patch(box)
    ax.text(-0.01, (lo + hi) / 2, NO_NUMBER_LABEL, transform=ax.transAxes, ha="right", va="center", fontsize=8)


def _mixed_cells(cells: pd.DataFrame) -> dict[int, str]:
    """Batch size -> its positions' outcomes counted (``"2= 1w"``, the marks of the heatmap: a wrong result is ``w``
    there and here, never a move), for the cells of one
    series whose positions did not all end the same way: the largest difference alone would hide the others."""
    from flexfix.edition.tables.invariance import POSITION_MARKS

    def kind(row) -> str:
        if row.outcome in CRASHES:
            return "crash"
        if row.outcome == "wrong_result":
            return "wrong result"
        if row.outcome != "ok":
            return "error"
        return "bitwise equal" if row.max_abs_diff == 0 else "moved"

    kinds = pd.Series([kind(r) for r in cells.itertuples()], index=cells.index)
    out = {}
    for batch, part in kinds.groupby(cells["batch"]):
        counts = part.value_counts()
        if len(counts) > 1:
            order = [k for k in POSITION_MARKS if k in counts]
            out[int(batch)] = " ".join(f"{counts[k]}{POSITION_MARKS[k]}" for k in order)
    return out


def _zero_band(ax, floor: float, top: float) -> None:
    """The log axis from ``floor`` up, with a band of its own at the bottom, labelled ``0 (bitwise equal)`` and cut
    off from the measured values by a solid line: a bitwise-equal cell (a difference of exactly 0) is drawn there,
    never at a value it did not have."""
    import numpy as np

    ax.set_yscale("log")
    ax.set_ylim(floor / 4, top)
    ax.axhspan(floor / 4, floor * 4, color=MAX_DIFF_COLOURS[ZERO_LABEL][1], zorder=0, lw=0)
    ax.axhline(floor * 4, color="#777777", lw=1.0)
    low, high = int(np.ceil(np.log10(floor * 40))), int(np.ceil(np.log10(top))) - 2  # top: two decades over the data
    span = np.log10(top) - np.log10(floor / 4)
    decades = [k for k in range(high, low - 1, -2) if (k - np.log10(floor / 4)) / span <= 1 - TICK_CLEARANCE]
    ax.set_yticks([floor] + [10.0**k for k in decades], [ZERO_LABEL] + [f"$10^{{{k}}}$" for k in decades])
    ax.minorticks_off()
    ax.tick_params(axis="y", labelsize=8)


STRIP_LINE = 11  # points between the count lines under a panel
STRIP_TOP = 20  # points from the panel's bottom edge to its first count line: under the batch-size tick labels
WRONG_COLOUR = PALETTE[OUTCOME_WORDS["wrong_result"]]  # a wrong result's marker: the outcome's colour of the edition


def _wrong_at_largest(cells: pd.DataFrame, per_batch: pd.Series) -> list[int]:
    """The batch sizes where a series' largest difference (the one its marker shows) is a wrong result."""
    wrong = cells[cells["outcome"] == "wrong_result"].groupby("batch")["max_abs_diff"].max()
    return [b for b in per_batch.index if b in wrong.index and per_batch[b] > 0 and wrong[b] == per_batch[b]]


def _count_strip(ax, rows: list[tuple[str, str, dict[int, str]]], at: dict) -> None:
    """Under the panel, outside its value axis, one line per series whose positions did not all end alike: the
    series' name on the left, then at each such batch size its positions counted per outcome (``2= 1w``)."""
    for r, (series, colour_, counts) in enumerate(rows):
        y = -(STRIP_TOP + STRIP_LINE * r)
        ax.annotate(series, (0, 0), xycoords="axes fraction", xytext=(-4, y), textcoords="offset points",
                    ha="right", va="top", fontsize=7, color=colour_, gid="mixed row")  # fmt: skip
        for batch, text in sorted(counts.items()):
            ax.annotate(text, (at[batch], 0), xycoords=("data", "axes fraction"), xytext=(0, y),
                        textcoords="offset points", ha="center", va="top", fontsize=7.5, color=colour_,
                        gid="mixed cell")  # fmt: skip


def _coinciding(ax, equal: dict[int, dict[float, list[str]]]) -> None:
    """Where two or more series had the same largest difference, their lines are drawn on top of each other: said
    in the panel, with the batch sizes, so that the series under the top one are not taken for missing."""
    same: dict[tuple[str, ...], list[int]] = {}
    for batch, values in sorted(equal.items()):
        for names in values.values():
            if len(names) > 1:
                same.setdefault(tuple(names), []).append(batch)
    if not same:
        return
    said = "; ".join(f"{' = '.join(names)} at {', '.join(map(str, b))}" for names, b in same.items())
    ax.text(0.01, 0.95, f"equal, lines on top of each other: {said}", transform=ax.transAxes, ha="left", va="top",
            fontsize=7, color="#333333", gid="coinciding")  # fmt: skip


def max_diff_vs_batch(table: pd.DataFrame, title: str, floor: float = 1e-9):
    """Largest |needle in batch - needle alone| over the positions, against the batch size (one evenly spaced
    column per measured size; log y): one panel per kernel and its options, one series per launch and copy
    (:data:`LAUNCH_COPY_STYLES`: its own colour and marker, each series shifted a little sideways so that equal
    values stay visible side by side).  Bitwise-equal cells (a difference of 0) are drawn in a grey band of their own
    at the bottom of each panel, labelled ``0 (bitwise equal)`` and cut off from the log axis (``floor`` places it,
    three decades under the smallest measured difference at most), so that no marker sits at a value nobody
    measured; cells with no number (a crash, a kernel that failed to build or run) are marked in the strip above the
    panel, outside the value axis.  A batch size whose positions ended apart has a marker in both places: in the
    band for its bitwise-equal positions, and at its largest difference for the others."""
    import numpy as np
    from matplotlib.lines import Line2D

    moved = table["max_abs_diff"][table["max_abs_diff"] > 0]
    floor = min(floor, float(moved.min()) / 1000) if len(moved) else floor
    batches = sorted(table["batch"].unique())
    at = {b: i for i, b in enumerate(batches)}
    keyed = table.assign(
        panel=[_panel_and_series(c)[0] for c in table["config"]],
        series=[_panel_and_series(c)[1] for c in table["config"]],
    )
    panels = list(dict.fromkeys(keyed["panel"]))
    fig, axes = figure((10, 1.9 + 2.3 * len(panels)), len(panels), 1, sharex=True, squeeze=False)
    largest = float(table["max_abs_diff"].max(skipna=True) or 0)
    top = 10.0 ** (int(np.ceil(np.log10(largest))) + 2) if largest > 0 else 1.0  # a labelled decade at or above it
    shift = {name: (k - 1.5) * 0.16 for k, name in enumerate(LAUNCH_COPY_STYLES)}
    strip_shift = {name: (k - 1.5) * NO_NUMBER_SPREAD for k, name in enumerate(LAUNCH_COPY_STYLES)}
    style = dict(markersize=5, alpha=0.85, lw=1.2, markerfacecolor="none", markeredgewidth=1.3)
    struck: dict[str, dict[str, tuple[str, str]]] = {}  # outcome -> series -> (marker, colour) as drawn (r12 C1)
    for ax, panel in zip(axes[:, 0], panels):
        mixed_rows: list[tuple[str, str, dict[int, str]]] = []  # the series whose positions did not all end alike
        equal: dict[int, dict[float, list[str]]] = {}  # batch -> largest difference -> the series that had it
        for series, cells in keyed[keyed["panel"] == panel].groupby("series", sort=False):
            _, colour_, marker = LAUNCH_COPY_STYLES[series]
            per_batch = cells.groupby("batch")["max_abs_diff"].max().dropna()
            xs = [at[b] + shift[series] for b in per_batch.index]
            measured = per_batch.where(per_batch > 0)  # NaN at 0: the line breaks there, it never dips to the band
            ax.plot(xs, measured, "-", marker=marker, color=colour_, label=series, **style)
            # a marker in the band wherever any position was bitwise equal, also at a batch whose largest
            # difference is drawn above it (r0305 C9): the equal positions are not hidden behind the worst one
            zero = (cells["max_abs_diff"] == 0).groupby(cells["batch"]).any().reindex(per_batch.index, fill_value=False)
            if zero.any():
                ax.plot(
                    [x for x, z in zip(xs, zero) if z],
                    [floor] * int(zero.sum()),
                    ls="none",
                    marker=marker,
                    color=colour_,
                    gid="bitwise equal",
                    **{k: v for k, v in style.items() if k != "lw"},
                )
            wrong = _wrong_at_largest(cells, per_batch)
            if wrong:  # the largest difference is a wrong result there: filled, in the outcome's colour
                struck.setdefault("wrong", {})[series] = (marker, colour_)
                ax.plot(
                    [at[b] + shift[series] for b in wrong],
                    [per_batch[b] for b in wrong],
                    ls="none",
                    marker=marker,
                    color=WRONG_COLOUR,
                    markeredgecolor=colour_,
                    markersize=6.5,
                    markeredgewidth=1.3,
                    zorder=3,
                    gid="wrong result",
                )
            mixed = _mixed_cells(cells)
            if mixed:
                mixed_rows.append((series, colour_, mixed))
            for batch, value in per_batch.items():
                if value > 0:
                    equal.setdefault(batch, {}).setdefault(float(value), []).append(series)
            for outcome in NO_NUMBER_MARKERS:
                bad = (
                    cells["outcome"].isin(CRASHES)
                    if outcome == "crash"
                    else ~cells["outcome"].isin(list(CRASHES) + ["ok", "wrong_result"])
                )
                where = sorted(cells[bad]["batch"].unique())
                if where:  # the series' own shape (r9 C2: told apart by shape, not colour alone)
                    xs = [at[b] + strip_shift[series] for b in where]
                    draw_no_number(ax, xs, NO_NUMBER_Y, outcome, marker, colour_)
                    struck.setdefault(outcome, {})[series] = (marker, colour_)
        _count_strip(ax, mixed_rows, at)
        _coinciding(ax, equal)
        for k in range(0, len(batches), 2):  # every other batch column shaded: a shifted marker stays in its column
            ax.axvspan(k - 0.5, k + 0.5, color="#fafafa", zorder=0, lw=0)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches], fontsize=7)
        ax.set_xlim(-0.6, len(batches) - 0.4)
        _zero_band(ax, floor, top)
        _no_number_band(ax)
        ax.set_title(wrap(panel + _recordings(keyed[keyed["panel"] == panel]), 9.5, 9), fontsize=9, pad=24, loc="left")
        ax.set_ylabel("max |in batch - alone|", fontsize=8)
        ax.grid(axis="y", alpha=0.2)
    below = sum(t.get_gid() == "mixed row" for t in axes[-1][0].texts)  # count lines under the lowest panel
    axes[-1][0].set_xlabel("batch size (requests in the decode step)", fontsize=8, labelpad=4 + STRIP_LINE * below)
    handles = [
        Line2D([], [], color=c, marker=m, markerfacecolor="none", lw=1.2) for _, c, m in LAUNCH_COPY_STYLES.values()
    ]
    labels = series_labels(table, list(LAUNCH_COPY_STYLES))  # the CPU's stand-in named `frozen`, as in the tables
    handles.append(patch(MAX_DIFF_COLOURS[ZERO_LABEL][1]))
    labels.append(
        f"{ZERO_LABEL}: a position with a difference of exactly 0, drawn in the grey band under the log axis\n"
        "(also where other positions of that batch size moved: the marker above is the largest of them)"
    )

    keys, key_labels, handler_map = struck_keys(
        struck, WRONG_COLOUR, list(LAUNCH_COPY_STYLES), lambda names: series_labels(table, names)
    )
    handles, labels = handles + keys, labels + key_labels  # r12 C1: the glyphs drawn, of the series that got them
    if any(t.get_gid() == "mixed cell" for ax in axes[:, 0] for t in ax.texts):
        handles.append(Line2D([], [], ls="none"))
        labels.append(
            "under a panel, one line per series whose positions did not all end alike:\ntheir outcomes counted "
            "as in the heatmap (= bitwise equal, ~ moved, w wrong result,\nE error, X crash); the marker above the "
            "band shows the largest difference, one in the band the bitwise-equal positions"
        )
    fig.legend(
        handles,
        labels,
        handler_map=handler_map,
        handlelength=4,  # room for several series' glyphs side by side in one key
        fontsize=8,
        loc="lower center",
        ncol=2,
        frameon=False,
        title=wrap(series_title(table), fig.get_figwidth() - 1, 8),
        title_fontsize=8,
    )
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)
    half = -(-len(labels) // 2)  # ncol=2: the legend fills its first column first
    rows = max(sum(label.count("\n") + 1 for label in part) for part in (labels[:half], labels[half:]))
    fig.tight_layout(rect=(0, (0.5 + 0.16 * rows) / fig.get_figheight(), 1, 1))  # room for the legend and its title
    return fig
