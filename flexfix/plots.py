"""Figures for the notebooks.  Each function returns a matplotlib Figure (and imports
matplotlib inside, so importing flexfix never needs a display)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["storage_owners", "read_windows", "replay_errors"]

OUTCOME_COLOURS = {
    "ok": "#4c9a2a", "wrong_result": "#e0a100", "index_error": "#d9534f",
    "illegal_memory_access": "#8b0000", "refused": "#6c757d", "error": "#343a40", "timeout": "#6f42c1",
}


def storage_owners(layouts: Sequence, when: str = "replay"):
    """Heatmap of the persistent buffer's storage, one panel per copy: which query-block row
    wrote each cell at the capture or replay step (white: not written)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(len(layouts), 1, figsize=(10, 1.6 * len(layouts) + 0.8), squeeze=False)
    g = max(l.g for l in layouts)
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

    fig, axes = plt.subplots(len(layouts), 1, figsize=(10, 1.6 * len(layouts) + 0.8), squeeze=False)
    cmap = ListedColormap(["#f2f2f2", "#4c9a2a", "#e0a100", "#d9534f"])
    for ax, lay in zip(axes[:, 0], layouts):
        grid = np.zeros(lay.g_max * lay.w_max, dtype=int)
        status = np.where(lay.never_written, 3, np.where(lay.misread, 2, 1))
        inside = lay.read_at < grid.size
        np.maximum.at(grid, lay.read_at[inside], status[inside])
        ax.imshow(grid.reshape(lay.g_max, lay.w_max), cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto",
                  interpolation="nearest")
        ax.set_title(f"{lay.copy_name}: replay K={lay.k_replay} read with capture strides {lay.capture_stride}",
                     fontsize=10)
        ax.set_ylabel("buffer row")
        ax.set_yticks(range(lay.g_max))
    axes[-1, 0].set_xlabel("buffer column")
    labels = ["not read", "own entry", "another row's entry", "never written this step"]
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(4)], labels, loc="upper right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    return fig


def replay_errors(table: pd.DataFrame, title: str):
    """Max |output - fp32 reference| at each step of each run (log scale); crashes marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for _, run in table.iterrows():
        steps = run["records"]
        xs = list(range(len(steps)))
        ys = [s["max_error"] if s["max_error"] is not None else np.nan for s in steps]
        colour = "#4c9a2a" if run["copy"] == "sliced" else "#d9534f"
        ax.plot(xs, [max(y, 1e-8) for y in ys], "o-", color=colour, alpha=0.6,
                label=f"{run['copy']}, batch {run['batch']}")
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
