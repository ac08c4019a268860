"""Notebook 04's figures: which configurations are bitwise batch-invariant, and how far the others move."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import figure, patch, wrap
from flexfix.measure.outcomes import CRASHES

__all__ = ["MATCH_COLOURS", "CATEGORY_COLOURS", "MAX_DIFF_COLOURS", "category_heatmap", "max_diff_vs_batch"]

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


def category_heatmap(grid: pd.DataFrame, title: str, notes: pd.DataFrame | None = None):
    """Rows x columns coloured by the category names of ``grid`` (keys of ``CATEGORY_COLOURS``),
    with optional text in each cell (``notes``, same shape)."""
    from matplotlib.colors import ListedColormap

    names = [n for n in MATCH_COLOURS if (grid == n).any().any()]
    codes = grid.apply(lambda col: col.map({n: i for i, n in enumerate(names)})).to_numpy(dtype=float)
    fig, ax = figure((1.0 + 0.55 * grid.shape[1], 1.2 + 0.42 * grid.shape[0]))
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
    ax.legend([patch(MATCH_COLOURS[n]) for n in names], names, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(wrap(title, fig.get_figwidth() * 0.9, 10), fontsize=10)
    fig.tight_layout()
    return fig


def max_diff_vs_batch(table: pd.DataFrame, title: str, floor: float = 1e-9):
    """Largest |needle in batch - needle alone| over the positions, against the batch size (one
    evenly spaced column per measured size; log y).  Bitwise-equal cells sit on the dotted floor
    line; crashed cells are crosses along the top, in their configuration's colour."""
    import matplotlib
    from matplotlib.lines import Line2D

    batches = sorted(table["batch"].unique())
    at = {b: i for i, b in enumerate(batches)}
    fig, ax = figure((9, 3.8))
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
    ax.set_title(wrap(title, 5.0, 10), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color=floor_colour, lw=0.8, ls=":"))
    labels.append(f"bitwise equal (drawn at {floor:g})")
    if table["outcome"].isin(CRASHES).any():  # a crash marker only where something crashed
        handles.append(Line2D([], [], color=crash_colour, marker="x", ls="none", markersize=8))
        labels.append("crashed (top; a missing point: no number)")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
