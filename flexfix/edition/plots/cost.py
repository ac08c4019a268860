"""Notebook 05's figures: timing ratios, and engine throughput per setting."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.cost_marks import (
    MISS_LABEL,
    STAR_PT,
    STAR_TITLE_PAD,
    keep_band,
    median_style,
    settle_note,
    spread_bar,
    star_strip,
)
from flexfix.edition.plots.style import SERIES_COLOURS, batch_axis, figure, wrap

__all__ = ["SERIES_MARKERS", "SERIES_LINESTYLES", "FAMILIES", "REFERENCE_STYLE", "ratio_lines", "throughput_points"]


SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")  # series i has marker i (with colour i)
# series i also has line style i; plain dashes are left to the reference line, so that no series reads as it
SERIES_LINESTYLES = ("-", "-.", ":", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1, 1, 1)))
# Each kind of series of notebook 05 keeps its own colour and marker pairs, so that a pair never means a context in one
# figure and a batch size or a run in another: per kind, the order of SERIES_COLOURS' colours and its markers (no
# marker shared between kinds).  Contexts and batch sizes share no colour at all (r19 C2: pink was context 256 in one
# figure, batch 32 in the next): contexts have the first four (a fifth context takes the first colour again, its
# marker and line style apart), batch sizes six others.  ratio_lines picks the kind by its ``by`` column.
FAMILIES = {
    "context": ((0, 1, 2, 3), SERIES_MARKERS[:4] + ("d", "8")),
    "batch": ((4, 5, 7, 8, 6, 9), ("v", "P", "X", "<", "p", "H")),
    # runs: the first four of four hues far apart (wine, dark green, olive, dark brown; purple beside wine read as one
    # hue, r0305 C11, and so did reddish purple, r16 C1); every marker a closed shape, drawn hollow (a line marker lay
    # on its own spread bar and vanished, r16 C1): a pentagon pointing down and a triangle turned on its side are
    # polygons no other kind uses
    "run": ((5, 4, 2, 6, 0, 3), (">", "h", "*", (5, 0, 180), (3, 0, 45), (4, 0, 22.5))),
}
REFERENCE_STYLE = "--"  # the reference line of ratio_lines: dashed, and named in the legend
LABEL_GAP = 0.075  # direct labels: the least vertical distance between two, in axes fraction


def family_style(kind: str, i: int) -> tuple[str, str]:
    """Series i of a kind (``FAMILIES``; any other kind is drawn as contexts are): its colour (hex) and marker."""
    colours, markers = FAMILIES.get(kind, FAMILIES["context"])
    return SERIES_COLOURS[colours[i % len(colours)]][1], markers[i % len(markers)]


def _series_style(i: int, n: int, kind: str = "context") -> dict:
    """Series i of n of a kind: its colour, marker and line style, hollow markers each smaller than the one drawn
    before (so that equal values stay visible one inside the other)."""
    colour, marker = family_style(kind, i)
    return dict(
        color=colour,
        marker=marker,
        ls=SERIES_LINESTYLES[i % len(SERIES_LINESTYLES)],
        markersize=4 + 1.6 * (n - 1 - i),
        markerfacecolor="none",
        markeredgewidth=1.2,
        lw=1.2,
    )


def _spread_apart(ys: list[float], gap: float) -> list[float]:
    """Heights (axes fraction) moved apart as little as possible so that neighbours are at least ``gap`` apart and
    all stay within [gap/2, 1 - gap/2], in their order."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [min(max(ys[i], gap / 2), 1 - gap / 2) for i in order]
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] + gap)
    overflow = out[-1] - (1 - gap / 2) if out else 0
    if overflow > 0:
        out = [v - overflow for v in out]
        for k in range(len(out) - 2, -1, -1):
            out[k] = min(out[k], out[k + 1] - gap)
    placed = [0.0] * len(ys)
    for k, i in enumerate(order):
        placed[i] = out[k]
    return placed


def _label_ends(ax, ends: list[tuple[float, float, str, str]], logx: bool) -> None:
    """Each series named at its last point, to the right of it (the x axis widened for it), labels moved apart
    vertically where their lines end close together, with a thin leader from the point to a label that moved."""
    ax.set_ylim(ax.get_ylim())  # autoscaling done and frozen: the positions below are the drawn ones
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 2.2 if logx else hi + 0.3 * (hi - lo))
    to_axes = ax.transAxes.inverted()
    points = [to_axes.transform(ax.transData.transform((x, y))) for x, y, _, _ in ends]
    heights = _spread_apart([float(p[1]) for p in points], LABEL_GAP)
    for (px, py), h, (_, _, text, colour) in zip(points, heights, ends):
        ax.text(px + 0.03, h, text, transform=ax.transAxes, va="center", fontsize=7, color=colour)
        if abs(h - py) > 0.01:  # a leader from the point to a label that moved (a line, not part of the text)
            ax.plot([px + 0.005, px + 0.027], [py, h], transform=ax.transAxes, color=colour, lw=0.6, alpha=0.6)


def _log_ticks(ax) -> None:
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ticks = [m * 10.0**e for e in range(-6, 4) for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.grid(axis="y", alpha=0.2)


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
    panels: bool = False,
    min_span: float | None = None,
    sharey: bool = True,
    bars: bool = False,
):
    """One line per value of ``by``: ``y`` against ``x`` (for speed-ups, overheads, fractions).  Line i has
    the colour and marker i of the kind ``by`` names (``FAMILIES``; hollow, each drawn smaller than the one before) and
    ``SERIES_LINESTYLES[i]``, and its name written at its last point; the legend, outside the axes, names them too,
    and the dashed reference line (``reference_label``, else "reference: <value>").  ``logy``: a log y axis, for
    fractions far below their reference line, so that small values are not flattened against zero.

    Where ``table`` has ``<y>_lo`` and ``<y>_hi`` (:func:`flexfix.edition.tables.timing_ratios` with ``spread``),
    each line has a shaded band between them, in its colour: how far the timed repetitions spread the ratio, named in
    the legend.  ``min_span``: the y axis spans at least the reference times (1 - min_span) to (1 + min_span), so
    that noise close to the reference is not stretched into structure.

    ``panels``: small multiples instead, for series that lie on top of each other: one panel per value of ``by``
    (titled with it), that series in its colour, marker and line style, every other series in light grey behind it
    for comparison; shared axes, so heights compare across panels.  ``sharey=False``: each panel its own y axis, for
    series whose ranges differ by far (r0305 C8: 1.0-1.5x beside 8x would sit on the reference line), its range
    taken from its own series, band and reference only (r9 C1): the grey lines are cut at its edges.

    ``bars``: each point's band drawn as an error bar of its own, not a shaded area between points (which suggests
    crossings of the reference between batch sizes), and, with ``reference`` 1, a filled star (in a strip above the
    axes, off the value axis: r20 C1) over each point whose
    band misses 1 as printed: the rows of :func:`flexfix.edition.tables.cost.bands_missing_one`, the cases of the
    table :func:`flexfix.edition.tables.cost.bi_band_cases` (r13 C1: a band missing 1 by 0.0003 looks as if it
    touched the line)."""
    groups = [(key, part.sort_values(x)) for key, part in table.groupby(by, sort=True)]
    ref_label = reference_label or (f"reference: {reference:g}" if reference is not None else None)
    if panels:
        args = (groups, x, y, by, title, ylabel, logx, reference, ref_label, logy, min_span, sharey)
        return _ratio_panels(*args, bars=bars)
    fig, ax = figure((7.5, 3.6))
    ends = []
    for i, (key, part) in enumerate(groups):
        style = _series_style(i, len(groups), by)
        ax.plot(part[x], part[y], label=f"{by} {key}", **style)
        _band(ax, part, x, y, style["color"], bars, reference, name=f"{by} {key}")
        ends.append((part[x].iloc[-1], part[y].iloc[-1], f"{by} {key}", style["color"]))
    if reference is not None:
        ax.axhline(reference, color="grey", lw=1.0, ls=REFERENCE_STYLE, label=ref_label)
    if logx:
        batch_axis(ax, table[x])
    _min_span(ax, reference, min_span)
    if logy:
        _log_ticks(ax)
    _label_ends(ax, ends, logx)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(wrap(title, 5.5, 10), fontsize=10, pad=STAR_TITLE_PAD if bars and reference == 1.0 else None)
    handles = _neutral_band(dict(zip(*reversed(ax.get_legend_handles_labels()))))  # the band named once

    def place(note: dict) -> None:
        both = handles | note
        ax.legend(both.values(), both.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()

    settle_note([ax], place)
    return fig


BAND_LABEL = "shaded, in the series' colour: how far the repetitions spread (quartiles)"
BAND_ALPHA = 0.25
BAND_SWATCH = "#999999"  # the band's legend swatch: grey, since each band takes its own series' colour


def _neutral_band(handles: dict) -> dict:
    """The legend's handles with the band's swatch in neutral grey (it was the first series' colour)."""
    from matplotlib.patches import Patch

    if MISS_LABEL in handles:  # the star in grey too: each panel's star takes its series' colour
        from matplotlib.lines import Line2D

        star = dict(ls="none", marker="*", markersize=STAR_PT, color=BAND_SWATCH, markeredgecolor="black")
        handles[MISS_LABEL] = Line2D([], [], markeredgewidth=0.6, label=MISS_LABEL, **star)
    if BAND_LABEL in handles:
        handles[BAND_LABEL] = Patch(facecolor=BAND_SWATCH, alpha=BAND_ALPHA, edgecolor="none", label=BAND_LABEL)
    return handles


BAR_LABEL = "bar, in the series' colour: how far the repetitions spread (quartiles)"


def _band(
    ax, part: pd.DataFrame, x: str, y: str, colour: str, bars: bool = False, reference=None, name: str = ""
) -> None:
    """The shaded band of one series, where its table has one; with ``bars``, an error bar per point and a star on
    each point whose band misses 1 (see :func:`ratio_lines`)."""
    if not {f"{y}_lo", f"{y}_hi"} <= set(part):
        return
    if bars:
        from flexfix.edition.tables.cost import bands_missing_one

        low, high = (part[y] - part[f"{y}_lo"]).clip(lower=0), (part[f"{y}_hi"] - part[y]).clip(lower=0)
        ax.errorbar(
            part[x], part[y], yerr=[low, high], fmt="none", ecolor=colour, elinewidth=1.4, capsize=4, label=BAR_LABEL
        )
        if reference == 1.0:
            off = bands_missing_one(part, y)
            if not off.empty:
                star_strip(ax, off[x], colour, MISS_LABEL)  # r20 C1: off the value axis
        return
    ax.fill_between(part[x], part[f"{y}_lo"], part[f"{y}_hi"], color=colour, alpha=BAND_ALPHA, lw=0, label=BAND_LABEL)
    series = ax.get_lines()[-1] if ax.get_lines() else None  # the series just drawn: its markers cover the band
    cover = series.get_markersize() + series.get_markeredgewidth() if series is not None else 0.0
    keep_band(ax, part[x], part[f"{y}_lo"], part[f"{y}_hi"], cover=cover, name=name)


def _min_span(ax, reference: float | None, min_span: float | None) -> None:
    """The y axis widened, where it is narrower, to reference x (1 -/+ min_span)."""
    if min_span is None or reference is None:
        return
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, reference * (1 - min_span)), max(hi, reference * (1 + min_span)))


def _others(by: str, sharey: bool) -> str:
    """The legend's name of the grey lines; with ``sharey=False`` they run off a panel's own range, cut at its edge,
    and the legend says so (r10 C2: they do not show where a panel sits among the others)."""
    return f"the other {by} values" + ("" if sharey else " (clipped: each panel has its own y range)")


def _own_ylim(ax, part: pd.DataFrame, y: str, reference: float | None, logy: bool) -> None:
    """One panel's y range from its own series, its band and the reference line, with a margin (r9 C1)."""
    cols = [c for c in (y, f"{y}_lo", f"{y}_hi") if c in part]
    values = pd.concat([part[c] for c in cols]).astype(float).dropna()
    if reference is not None:
        values = pd.concat([values, pd.Series([float(reference)])])
    lo, hi = float(values.min()), float(values.max())
    if logy and lo > 0:
        pad = (hi / lo) ** 0.08 if hi > lo else 1.1
        ax.set_ylim(lo / pad, hi * pad)
    else:
        pad = (hi - lo) * 0.08 if hi > lo else max(abs(hi), 1.0) * 0.05
        ax.set_ylim(lo - pad, hi + pad)


def _ratio_panels(
    groups, x, y, by, title, ylabel, logx, reference, ref_label, logy, min_span=None, sharey=True, bars=False
):
    """:func:`ratio_lines` as small multiples: one panel per series, the others in grey behind it."""
    n = len(groups)
    cols = 2 if n == 4 else min(3, n)
    rows = -(-n // cols)
    fig, axes = figure((3.1 * cols + 0.6, 2.3 * rows + 1.3), rows, cols, sharex=True, sharey=sharey, squeeze=False)
    flat = list(axes.flat)
    for i, (ax, (key, part)) in enumerate(zip(flat, groups)):
        for j, (_, rest) in enumerate(groups):
            if j != i:
                ax.plot(rest[x], rest[y], "-", color="grey", alpha=0.35, lw=1.0, label=_others(by, sharey))
        style = _series_style(i, n, by)
        ax.plot(part[x], part[y], label=f"{by} {key}", **{**style, "markersize": 6, "ls": "-"})
        _band(ax, part, x, y, style["color"], bars, reference, name=f"{by} {key}")
        if reference is not None:
            ax.axhline(reference, color="grey", lw=1.0, ls=REFERENCE_STYLE, label=ref_label)
        pad = STAR_TITLE_PAD if bars and reference == 1.0 else None  # room for the stars' strip (r20 C1)
        ax.set_title(f"{by} {key}", fontsize=9, color=style["color"], pad=pad)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[:n]:
        if logx:
            batch_axis(ax, pd.concat([p[x] for _, p in groups]))
        ax.tick_params(labelbottom=True)
    if not sharey:  # each panel's range from its own series and band, not the grey lines (r9 C1: they are clipped)
        for ax, (_, part) in zip(flat, groups):
            _own_ylim(ax, part, y, reference, logy)
    for ax in flat[: 1 if sharey else n]:  # shared axes: one panel sets them all
        _min_span(ax, reference, min_span)
        if logy:
            _log_ticks(ax)
    if logy and sharey:
        for ax in flat[1:n]:
            ax.grid(axis="y", alpha=0.2)
    if not sharey:
        for ax in flat[:n]:
            ax.tick_params(labelleft=True)
    for r in range(rows):
        axes[r][0].set_ylabel(ylabel, fontsize=8)
    for ax in flat[max(0, n - cols) : n]:
        ax.set_xlabel(x)
    handles = {}
    for ax in flat[:n]:  # every panel's: the stars of bars=True may be in any of them
        handles.update({k: v for k, v in zip(*reversed(ax.get_legend_handles_labels())) if k not in handles})
    handles = _neutral_band(handles)
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)

    def place(note: dict) -> None:
        for legend in list(fig.legends):
            legend.remove()
        both = handles | note
        shown = [k for k in (_others(by, sharey), ref_label, BAND_LABEL, *note, BAR_LABEL, MISS_LABEL) if k in both]
        # own axes: the grey lines' longer label (r10 C2), one entry per line; bars and stars: two long labels more
        ncol = (len(shown) if len(shown) <= 3 else 2) if sharey else 1
        fig.legend([both[k] for k in shown], shown, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        lines = -(-len(shown) // ncol)
        fig.tight_layout(rect=(0, 0.06 if lines == 1 else 0.03 + 0.035 * lines, 1, 1))

    settle_note(flat[:n], place)
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


_LINE_MARKERS = ("1", "2", "3", "4", "+", "x", "|", "_")  # markers of lines only: drawn bold, or they vanish


def _run_files(table: pd.DataFrame, run: str) -> str:
    """The file each model's ``run`` comes from, one line per model: "run 3" is another file for each model (r0305
    C11), so the legend names them."""
    if "source" not in table:
        return ""
    part = table[table["run"] == run].drop_duplicates(["model", "source"])
    return "".join(f"\n  {m}: {src}" for m, src in zip(part["model"], part["source"]))


def _repetitions(low: int, high: int) -> str:
    """``n=3``, or ``n=3-5`` where a run's markers rest on different numbers of repetitions."""
    return f"n={low}" if low == high else f"n={low}-{high}"


def throughput_points(table: pd.DataFrame, title: str):
    """Output tokens per second, one panel per request count, one row per configuration: each
    engine is a marker at its median with a bar from its slowest to its fastest timed repetition, so
    the spread between and within engines is as visible as the differences between configurations.
    Engines are named by run as the runs table names them ("run k": the model's k-th recorded file); run k has
    the colour and marker k - 1 of the ``run`` kind (``FAMILIES``: none a context's or a batch size's), and sits at
    its own height in the row."""
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
            colour, marker = family_style("run", k)
            y = [settings.index(s) + (k - (len(runs) - 1) / 2) * step for s in part["setting"]]
            reps = [[r["output_tokens"] / t for t in r["seconds"]] for _, r in part.iterrows()]
            spread_bar(ax, [min(r) for r in reps], [max(r) for r in reps], y, colour, cap=step * 0.4)  # r15 C2
            style = median_style(marker, marker in _LINE_MARKERS)  # r21 C2: hollow, visible, over the end ticks
            ax.plot(part["tokens_per_second"], y, marker=marker, ls="none", color=colour, label=run, **style)
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
    repeats = table.assign(n=table["seconds"].map(len)).groupby("run")["n"].agg(["min", "max"])
    axes[0][-1].legend(
        [handles[r] for r in runs if r in handles],
        [f"{r} ({_repetitions(*repeats.loc[r])})" + _run_files(table, r) for r in runs if r in handles],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        title="each model's run: its file\n(hollow marker: median;\nbar with end ticks: slowest\n"
        "to fastest repetition;\nn: timed repetitions)",
        title_fontsize=8,
    )
    fig.suptitle(wrap(title, fig.get_figwidth() - 0.5, 10), fontsize=10)
    fig.tight_layout()
    return fig
