"""Figures for the notebooks.  Each function returns a matplotlib Figure (and imports
matplotlib inside, so importing flexfix never needs a display)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flexfix.repro import CRASHES

__all__ = [
    "storage_owners",
    "read_windows",
    "replay_errors",
    "category_heatmap",
    "max_diff_vs_batch",
    "ratio_lines",
    "throughput_points",
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


OUTCOME_COLOURS = {
    "ok": "#4c9a2a",
    "wrong_result": "#e0a100",
    "index_error": "#d9534f",
    "illegal_memory_access": "#8b0000",
    "refused": "#6c757d",
    "error": "#343a40",
    "timeout": "#6f42c1",
}


def storage_owners(layouts: Sequence, when: str = "replay"):
    """Heatmap of the persistent buffer's storage, one panel per copy: which query-block row
    wrote each cell at the capture or replay step (white: not written)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = _figure((10, 1.6 * len(layouts) + 0.8), len(layouts), 1, squeeze=False)
    g = max(lay.g for lay in layouts)
    cmap = ListedColormap(["white"] + [plt.cm.tab10(i) for i in range(g)])
    for ax, lay in zip(axes[:, 0], layouts):
        grid = lay.owner_capture if when == "capture" else lay.owner_replay
        ax.imshow(grid, cmap=cmap, vmin=-1.5, vmax=g - 0.5, aspect="auto", interpolation="nearest")
        k = lay.k_capture if when == "capture" else lay.k_replay
        stride = lay.capture_stride if when == "capture" else lay.replay_stride
        ax.set_title(f"{lay.copy_name}: {when} step, K={k}, view strides {stride}", fontsize=10)
        ax.set_ylabel("buffer row")
        ax.set_yticks(range(lay.g_max))
    axes[-1, 0].set_xlabel("buffer column (W_max cells per row)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i + 1)) for i in range(g)]
    fig.legend(handles, [f"query block {i}" for i in range(g)], loc="upper right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def read_windows(layouts: Sequence):
    """For each copy: the cells the captured kernel reads at replay, coloured by what they hold
    for the row that reads them: its own entry (green), another entry (orange), or a cell nothing
    wrote this step (red)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = _figure((10, 1.6 * len(layouts) + 0.8), len(layouts), 1, squeeze=False)
    cmap = ListedColormap(["#f2f2f2", "#4c9a2a", "#e0a100", "#d9534f"])
    for ax, lay in zip(axes[:, 0], layouts):
        grid = np.zeros(lay.g_max * lay.w_max, dtype=int)
        status = np.where(lay.never_written, 3, np.where(lay.misread, 2, 1))
        inside = lay.read_at < grid.size
        np.maximum.at(grid, lay.read_at[inside], status[inside])
        ax.imshow(
            grid.reshape(lay.g_max, lay.w_max), cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto", interpolation="nearest"
        )
        ax.set_title(
            f"{lay.copy_name}: replay K={lay.k_replay} read with capture strides {lay.capture_stride}", fontsize=10
        )
        ax.set_ylabel("buffer row")
        ax.set_yticks(range(lay.g_max))
    axes[-1, 0].set_xlabel("buffer column")
    labels = ["not read", "own entry", "another row's entry", "never written this step"]
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(4)], labels, loc="upper right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return fig


def replay_errors(table: pd.DataFrame, title: str):
    """Max |output - fp32 reference| at each step of each run (log scale); crashes marked."""

    fig, ax = _figure((8, 3.6))
    for _, run in table.iterrows():
        steps = run["records"]
        xs = list(range(len(steps)))
        ys = [s["max_error"] if s["max_error"] is not None else np.nan for s in steps]
        colour = "#4c9a2a" if run["copy"] == "sliced" else "#d9534f"
        ax.plot(
            xs, [max(y, 1e-8) for y in ys], "o-", color=colour, alpha=0.6, label=f"{run['copy']}, batch {run['batch']}"
        )
        for x, s in zip(xs, steps):
            if s["outcome"] != "ok":
                ax.annotate(s["outcome"].replace("_", " "), (x, 1e-1), fontsize=7, rotation=90, ha="center")
        if run["status"] == "illegal_memory_access":
            ax.annotate("IMA", (len(steps), 1e-1), color="#8b0000", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step (0 = capture)")
    ax.set_ylabel("max |out - reference|")
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.tight_layout()
    return fig


MATCH_COLOURS = {
    "bitwise equal": "#4c9a2a",
    "differs": "#e0a100",
    "wrong result": "#d9534f",
    "crash": "#8b0000",
    "error": "#6c757d",
    "tokens differ": "#d9534f",
    "not run": "#dddddd",
}


def category_heatmap(grid: pd.DataFrame, title: str, notes: pd.DataFrame | None = None):
    """Rows x columns coloured by the category names of ``grid`` (keys of ``MATCH_COLOURS``),
    with optional text in each cell (``notes``, same shape)."""
    import matplotlib.pyplot as plt
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
                ax.text(j, i, str(notes.iat[i, j]), ha="center", va="center", fontsize=7, color="white")
    ax.legend(
        [plt.Rectangle((0, 0), 1, 1, color=MATCH_COLOURS[n]) for n in names],
        names,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    ax.set_title(title, fontsize=10)
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
    evenly spaced column per measured size; log y).  Bitwise-equal cells sit on the floor line;
    crashed cells are crosses on top."""
    import matplotlib

    batches = sorted(table["batch"].unique())
    at = {b: i for i, b in enumerate(batches)}
    fig, ax = _figure((8, 3.8))
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
    ax.axhline(floor, color="grey", lw=0.8, ls=":")
    ax.text(0, floor * 1.5, "bitwise equal", fontsize=8, color="grey")
    ax.set_xticks(range(len(batches)), [str(b) for b in batches], fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (requests in the decode step)")
    ax.set_ylabel("max |in batch - alone|")
    ax.set_title(title + "  (x: crashed; a missing point: no number, see the grid)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


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
    """One line per value of ``by``: ``y`` against ``x`` (for speed-ups, overheads, fractions)."""

    fig, ax = _figure((7, 3.6))
    for key, part in table.groupby(by, sort=True):
        part = part.sort_values(x)
        ax.plot(part[x], part[y], "o-", label=f"{by} {key}", markersize=4)
    if reference is not None:
        ax.axhline(reference, color="grey", lw=0.8, ls=":")
    if logx:
        _batch_axis(ax, table[x])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def throughput_points(table: pd.DataFrame, title: str):
    """Output tokens per second, one panel per request count, one row per configuration: each
    engine is a dot at its median with a bar from its slowest to its fastest timed repetition, so
    the spread between and within engines is as visible as the differences between configurations."""
    import matplotlib

    counts = sorted(table["requests"].unique())
    settings = list(dict.fromkeys(table["setting"]))
    sources = list(dict.fromkeys(table["source"])) if "source" in table else [None]
    fig, axes = _figure((9, 0.8 + 0.38 * len(settings)), 1, len(counts), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], counts):
        for k, src in enumerate(sources):
            part = table[(table["requests"] == n) & ((table["source"] == src) if src else True)]
            if part.empty:
                continue
            colour = matplotlib.colormaps["tab10"](k % 10)
            y = [settings.index(s) + (k - (len(sources) - 1) / 2) * 0.12 for s in part["setting"]]
            reps = [[r["output_tokens"] / t for t in r["seconds"]] for _, r in part.iterrows()]
            ax.hlines(y, [min(r) for r in reps], [max(r) for r in reps], color=colour, lw=1.5, alpha=0.6)
            ax.plot(part["tokens_per_second"], y, "o", color=colour, markersize=5, label=src or "median")
        ax.set_title(f"{n} concurrent requests", fontsize=9)
        ax.set_xlabel("output tokens per second")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="recorded in")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
