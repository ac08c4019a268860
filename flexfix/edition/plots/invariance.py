"""Notebook 04's figures: which configurations are bitwise batch-invariant, and how far the others move."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import figure, patch, text_colour, wrap
from flexfix.measure.outcomes import CRASHES

__all__ = [
    "MATCH_COLOURS",
    "CATEGORY_COLOURS",
    "MAX_DIFF_COLOURS",
    "LAUNCH_COPY_STYLES",
    "NO_NUMBER_Y",
    "category_heatmap",
    "max_diff_vs_batch",
]

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

# max_diff_vs_batch: one panel per kernel (and its options), one series per launch x copy with its own colour and
# marker, the same in every panel; cells with no number (a crash, a kernel error) are marked above the axes.
LAUNCH_COPY_STYLES = {
    "eager, sliced": ("blue", "#1f77b4", "o"),
    "eager, as_strided": ("green", "#2ca02c", "s"),
    "graph, sliced": ("purple", "#9467bd", "^"),
    "graph, as_strided": ("red", "#d62728", "D"),
}
MAX_DIFF_COLOURS = {
    "bitwise equal": ("grey", "#808080"),
    "crashed": ("the series' colour (grey in the legend)", "#555555"),
    "kernel error": ("the series' colour (grey in the legend)", "#555555"),
    **{name: (word, hex_) for name, (word, hex_, _) in LAUNCH_COPY_STYLES.items()},
}
NO_NUMBER_Y = 1.06  # the strip above each panel (axes fraction) where crashes and kernel errors are marked
NO_NUMBER_MARKERS = {"crash": "x", "error": "*"}  # markers no series uses


def category_heatmap(grid: pd.DataFrame, title: str, notes: pd.DataFrame | None = None):
    """Rows x columns coloured by the category names of ``grid`` (keys of ``CATEGORY_COLOURS``),
    with optional text in each cell (``notes``, same shape).  With notes, the legend says that a cell's colour
    is its worst outcome and, from ``notes.attrs["key"]``, how to read its text."""
    from matplotlib.colors import ListedColormap

    names = [n for n in MATCH_COLOURS if (grid == n).any().any()]
    codes = grid.apply(lambda col: col.map({n: i for i, n in enumerate(names)})).to_numpy(dtype=float)
    lines = max((str(n).count("\n") + 1 for n in notes.to_numpy().ravel()), default=1) if notes is not None else 1
    fig, ax = figure((4.5 + 0.5 * grid.shape[1], 1.2 + (0.28 + 0.14 * lines) * grid.shape[0]))
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
    legend_title = None
    if notes is not None:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                colour = text_colour(MATCH_COLOURS.get(grid.iat[i, j], "#ffffff"))
                ax.text(j, i, str(notes.iat[i, j]), ha="center", va="center", fontsize=8, color=colour)
        key = notes.attrs.get("key", "cell text: see the title")
        legend_title = "cell colour: its worst outcome\n" + key
    legend = ax.legend(
        [patch(MATCH_COLOURS[n]) for n in names],
        names,
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


def _panel_and_series(config: str) -> tuple[str, str]:
    """``"flex, vllm options, graph, as_strided"`` -> (``"flex, vllm options"``, ``"graph, as_strided"``); the
    CPU's frozen launch is drawn as the graph launch it stands for."""
    parts = config.split(", ")
    if len(parts) < 4:
        return config, "eager, sliced"
    launch = "graph" if parts[-2] == "frozen" else parts[-2]
    return ", ".join(parts[:-2]), f"{launch}, {parts[-1]}"


def max_diff_vs_batch(table: pd.DataFrame, title: str, floor: float = 1e-9):
    """Largest |needle in batch - needle alone| over the positions, against the batch size (one evenly spaced
    column per measured size; log y): one panel per kernel and its options, one series per launch and copy
    (:data:`LAUNCH_COPY_STYLES`: its own colour and marker, each series shifted a little sideways so that equal
    values stay visible side by side).  Bitwise-equal cells sit on the dotted floor line; cells with no number (a
    crash, a kernel that failed to build or run) are marked in the strip above the panel, outside the value axis."""
    from matplotlib.lines import Line2D

    batches = sorted(table["batch"].unique())
    at = {b: i for i, b in enumerate(batches)}
    keyed = table.assign(
        panel=[_panel_and_series(c)[0] for c in table["config"]],
        series=[_panel_and_series(c)[1] for c in table["config"]],
    )
    panels = list(dict.fromkeys(keyed["panel"]))
    fig, axes = figure((10, 1.9 + 2.3 * len(panels)), len(panels), 1, sharex=True, squeeze=False)
    top = max(float(table["max_abs_diff"].max(skipna=True) or 0) * 10, 1.0)
    shift = {name: (k - 1.5) * 0.16 for k, name in enumerate(LAUNCH_COPY_STYLES)}
    for ax, panel in zip(axes[:, 0], panels):
        for series, cells in keyed[keyed["panel"] == panel].groupby("series", sort=False):
            _, colour, marker = LAUNCH_COPY_STYLES[series]
            per_batch = cells.groupby("batch")["max_abs_diff"].max().dropna()
            xs = [at[b] + shift[series] for b in per_batch.index]
            ax.plot(
                xs,
                per_batch.clip(lower=floor),
                "-",
                marker=marker,
                color=colour,
                label=series,
                markersize=5,
                alpha=0.85,
                lw=1.2,
                markerfacecolor="none",
                markeredgewidth=1.3,
            )
            for outcome, mark in NO_NUMBER_MARKERS.items():
                bad = (
                    cells["outcome"].isin(CRASHES)
                    if outcome == "crash"
                    else ~cells["outcome"].isin(list(CRASHES) + ["ok", "wrong_result"])
                )
                where = sorted(cells[bad]["batch"].unique())
                if where:
                    ax.plot(
                        [at[b] + shift[series] for b in where],
                        [NO_NUMBER_Y] * len(where),
                        mark,
                        color=colour,
                        markersize=7,
                        markeredgewidth=1.5,
                        transform=ax.get_xaxis_transform(),
                        clip_on=False,
                        gid=f"no number: {outcome}",
                    )
        for k in range(0, len(batches), 2):  # every other batch column shaded: a shifted marker stays in its column
            ax.axvspan(k - 0.5, k + 0.5, color="#f2f2f2", zorder=0, lw=0)
        ax.axhline(floor, color=MAX_DIFF_COLOURS["bitwise equal"][1], lw=0.8, ls=":")
        ax.set_xticks(range(len(batches)), [str(b) for b in batches], fontsize=7)
        ax.set_xlim(-0.6, len(batches) - 0.4)
        ax.set_ylim(floor / 3, top)
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, top)
        ax.set_title(panel, fontsize=9, pad=14, loc="left")
        ax.set_ylabel("max |in batch - alone|", fontsize=8)
        ax.grid(axis="y", alpha=0.2)
    axes[-1][0].set_xlabel("batch size (requests in the decode step)", fontsize=8)
    handles = [
        Line2D([], [], color=c, marker=m, markerfacecolor="none", lw=1.2) for _, c, m in LAUNCH_COPY_STYLES.values()
    ]
    labels = list(LAUNCH_COPY_STYLES)
    handles.append(Line2D([], [], color=MAX_DIFF_COLOURS["bitwise equal"][1], lw=0.8, ls=":"))
    labels.append(f"bitwise equal (drawn at {floor:g})")
    if table["outcome"].isin(CRASHES).any():
        handles.append(
            Line2D(
                [],
                [],
                color=MAX_DIFF_COLOURS["crashed"][1],
                marker=NO_NUMBER_MARKERS["crash"],
                ls="none",
                markersize=7,
                markeredgewidth=1.5,
            )
        )
        labels.append("crashed: x above the panel, in its series' colour (no number)")
    if (~table["outcome"].isin(list(CRASHES) + ["ok", "wrong_result"])).any():
        handles.append(
            Line2D(
                [],
                [],
                color=MAX_DIFF_COLOURS["kernel error"][1],
                marker=NO_NUMBER_MARKERS["error"],
                ls="none",
                markersize=7,
            )
        )
        labels.append("kernel error: * above the panel, in its series' colour (no number)")
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower center",
        ncol=3,
        frameon=False,
        title="series: launch, copy (frozen: the CPU's stand-in for the graph); each shifted a little sideways inside "
        "its batch size's column (shaded every other column)",
        title_fontsize=8,
    )
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)
    fig.tight_layout(rect=(0, 0.7 / fig.get_figheight(), 1, 1))
    return fig
