"""Notebook 05's figures: timing ratios, and engine throughput per setting."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import SERIES_COLOURS, batch_axis, figure, wrap

__all__ = ["SERIES_MARKERS", "REFERENCE_STYLE", "ratio_lines", "throughput_points"]


SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")  # series i has marker i (with colour i)
REFERENCE_STYLE = "--"  # the reference line of ratio_lines: dashed, and named in the legend


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
    reference_label: str | None = None,
    logy: bool = False,
):
    """One line per value of ``by``: ``y`` against ``x`` (for speed-ups, overheads, fractions).  Line i has
    ``SERIES_COLOURS[i]`` and ``SERIES_MARKERS[i]``, hollow, each drawn smaller than the one before, so that series
    with equal values stay visible one inside the other; the legend, outside the axes, names them, and the dashed
    reference line (``reference_label``, else its value).  ``logy``: a log y axis, for fractions far below their
    reference line, so that small values are not flattened against zero."""
    fig, ax = figure((7.5, 3.6))
    groups = list(table.groupby(by, sort=True))
    for i, (key, part) in enumerate(groups):
        part = part.sort_values(x)
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)][1]
        size = 4 + 1.6 * (len(groups) - 1 - i)  # the first drawn is the largest
        ax.plot(
            part[x],
            part[y],
            "-",
            marker=SERIES_MARKERS[i % len(SERIES_MARKERS)],
            color=colour,
            label=f"{by} {key}",
            markersize=size,
            markerfacecolor="none",
            markeredgewidth=1.2,
            lw=1.2,
        )
    if reference is not None:
        ax.axhline(reference, color="grey", lw=1.0, ls=REFERENCE_STYLE, label=reference_label or f"{reference:g}")
    if logx:
        batch_axis(ax, table[x])
    if logy:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ticks = [m * 10.0**e for e in range(-6, 4) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.grid(axis="y", alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(wrap(title, 5.5, 10), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _run_names(table: pd.DataFrame) -> list[str]:
    """Each row's "run k": its model's k-th recorded file, in the order given (as the runs table numbers them)."""
    if "source" not in table:
        return ["run 1"] * len(table)
    names = {
        (m, src): f"run {i + 1}"
        for m, part in table.groupby("model", sort=False)
        for i, src in enumerate(part["source"].unique())
    }
    return [names[(m, src)] for m, src in zip(table["model"], table["source"])]


def throughput_points(table: pd.DataFrame, title: str):
    """Output tokens per second, one panel per request count, one row per configuration: each
    engine is a marker at its median with a bar from its slowest to its fastest timed repetition, so
    the spread between and within engines is as visible as the differences between configurations.
    Engines are named by run as the runs table names them ("run k": the model's k-th recorded file); run k has
    ``SERIES_COLOURS[k - 1]`` and ``SERIES_MARKERS[k - 1]``, and sits at its own height in the row."""
    counts = sorted(table["requests"].unique())
    settings = list(dict.fromkeys(table["setting"]))
    table = table.assign(run=_run_names(table))
    runs = sorted(set(table["run"]), key=lambda r: int(r.split()[-1]))
    fig, axes = figure((10, 1.2 + 0.5 * len(settings)), 1, len(counts), sharey=True, squeeze=False)
    step = 0.6 / max(len(runs), 1)
    for ax, n in zip(axes[0], counts):
        for k, run in enumerate(runs):
            part = table[(table["requests"] == n) & (table["run"] == run)]
            if part.empty:
                continue
            colour = SERIES_COLOURS[k % len(SERIES_COLOURS)][1]
            y = [settings.index(s) + (k - (len(runs) - 1) / 2) * step for s in part["setting"]]
            reps = [[r["output_tokens"] / t for t in r["seconds"]] for _, r in part.iterrows()]
            ax.hlines(y, [min(r) for r in reps], [max(r) for r in reps], color=colour, lw=1.5, alpha=0.7)
            marker = SERIES_MARKERS[k % len(SERIES_MARKERS)]
            ax.plot(part["tokens_per_second"], y, marker, ls="none", color=colour, markersize=5, label=run)
        for row in range(1, len(settings)):
            ax.axhline(row - 0.5, color="#dddddd", lw=0.6)
        ax.set_title(f"{n} concurrent requests", fontsize=9)
        ax.set_xlabel("output tokens per second")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(settings)), settings, fontsize=8)
    axes[0][0].set_ylim(len(settings) - 0.5, -0.5)
    handles = {}
    for ax in axes[0]:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    axes[0][-1].legend(
        [handles[r] for r in runs if r in handles],
        [r for r in runs if r in handles],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        title="each model's run\n(files: the runs table)",
        title_fontsize=8,
    )
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)
    fig.tight_layout()
    return fig
