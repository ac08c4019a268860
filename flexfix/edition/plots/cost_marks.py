"""Marks of notebook 05's figures that must stay visible: a note where a spread band is too thin to see (r15 C1), and
the slowest-to-fastest bars drawn over their medians with end ticks (r15 C2)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "MISS_LABEL",
    "STAR_PT",
    "STAR_STRIP",
    "STAR_TITLE_PAD",
    "star_strip",
    "THIN_PT",
    "keep_band",
    "band_heights_pt",
    "band_hidden",
    "thin_band_note",
    "settle_note",
    "spread_bar",
    "median_style",
    "MEDIAN_PT",
]

MISS_LABEL = (
    "filled star, in the strip above a panel (off its value axis): the band of the point below it misses 1 "
    "(the table of bands that miss 1)"
)
STAR_PT = 9.0  # the star's size, in points
STAR_STRIP = 1.06  # the stars' height, in axes fraction: above the panel's top edge, under its title
STAR_TITLE_PAD = STAR_PT + 6.0  # a panel's title raised over the strip, in points


def star_strip(ax, xs, colour: str, label: str) -> None:
    """A filled star per ``xs`` (data x) in a strip above ``ax``, outside its value axis (r20 C1: on the axis, 1-2%
    beyond its bar, a star read as a measured point or a longer band; r17-r18 C1 had it there).  The bar under it
    shows on which side of 1 its band lies."""
    from matplotlib.transforms import blended_transform_factory

    strip = blended_transform_factory(ax.transData, ax.transAxes)
    star = dict(ls="none", marker="*", markersize=STAR_PT, color=colour, markeredgecolor="black")
    ys = [STAR_STRIP] * len(xs)
    ax.plot(xs, ys, transform=strip, clip_on=False, markeredgewidth=0.6, zorder=5, label=label, **star)


THIN_PT = 3.0  # a band at most this many points tall hides under its line (1.5 pt) and hollow marker


def keep_band(ax, x, low, high, cover: float = 0.0, name: str = "") -> None:
    """Remember a drawn band on its axes, so that the legend can say whether it can be seen.  ``cover``: the size in
    points of the series' markers, which sit on the band where it is tallest, at its points (r17 C2); ``name``: the
    series', for a note that names the bands that cannot be seen (r19 C1)."""
    bands = ax.__dict__.setdefault("_flexfix_bands", [])
    bands.append((np.asarray(x, float), np.asarray(low, float), np.asarray(high, float), float(cover), name))


def _drawn(ax, x, low, high) -> tuple[np.ndarray, np.ndarray]:
    """A band's points on the figure, in points as the axes' limits now stand: their x, and the band's height there."""
    ends = [ax.transData.transform(np.column_stack([x, v])) * 72 / ax.figure.dpi for v in (low, high)]
    return ends[0][:, 0], np.abs(ends[1][:, 1] - ends[0][:, 1])


def _tallest_between(at: np.ndarray, tall: np.ndarray, cover: float) -> float:
    """The band's greatest height between its points, outside the markers (``cover`` points across) drawn on them: the
    band is a polygon through its points, straight between them on the figure, so its height runs linearly from one
    point's to the next; where the markers cover a whole segment, nothing of it shows (0)."""
    most, r = 0.0, cover / 2
    for x0, x1, h0, h1 in zip(at[:-1], at[1:], tall[:-1], tall[1:]):
        length = abs(x1 - x0)
        if length > 2 * r:
            most = max(most, h0 + (h1 - h0) * r / length, h1 - (h1 - h0) * r / length)
    return most


def band_hidden(axes) -> list[bool]:
    """For each band remembered on ``axes``: whether it is too thin to see: at its points not taller than the markers
    drawn on them (r17 C2) nor than its line (``THIN_PT``), and between them, outside the markers, not taller than its
    line (r19 C1: a band 5 points tall hid under 7-point markers at its points, yet showed between them)."""
    hidden = []
    for ax in axes:
        for x, low, high, cover, *_ in ax.__dict__.get("_flexfix_bands", []):
            at, tall = _drawn(ax, x, low, high)
            top = float(np.nanmax(tall)) if len(tall) else 0.0
            hidden.append(top < max(THIN_PT, cover) and _tallest_between(at, tall, cover) < THIN_PT)
    return hidden


def band_heights_pt(axes) -> list[float]:
    """The tallest point of each band remembered on ``axes``, in points on the figure as its limits now stand."""
    heights = []
    for ax in axes:
        for x, low, high, *_ in ax.__dict__.get("_flexfix_bands", []):
            tall = _drawn(ax, x, low, high)[1]
            heights.append(float(np.nanmax(tall)) if len(tall) else 0.0)
    return heights


def _names(axes) -> list[str]:
    return [band[4] for ax in axes for band in ax.__dict__.get("_flexfix_bands", [])]


def _join(names: list[str]) -> str:
    """``context 1024, 4096 and 8192``: the series' names, their common first word (the column) said once."""
    heads = {n.split(" ", 1)[0] for n in names}
    if len(heads) == 1 and all(" " in n for n in names):
        names = [names[0]] + [n.split(" ", 1)[1] for n in names[1:]]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def thin_band_note(axes) -> str | None:
    """A legend line for bands too thin to see, from their drawn heights: every band, those named (r19 C1: per panel,
    never "no band shows" beside one that does), or None."""
    thin = band_hidden(axes)
    if not thin or not any(thin):
        return None
    if all(thin):
        return (
            "(no band shows here: every one is narrower than its line and markers, the repetitions spread that little)"
        )
    names = _names(axes)
    if all(names):
        hidden = _join([n for n, t in zip(names, thin) if t])
        return f"(no band shows for {hidden}: narrower than its line and markers, the repetitions spread that little)"
    return "(where no band shows, it is narrower than its line and markers: the repetitions spread that little there)"


def settle_note(axes, place) -> None:
    """``place(note)``: draw the legend, with ``note`` (its handles: the thin-band note, or none) among its entries, and
    lay the figure out; called again while the note judged on the axes as laid out differs from the one placed (r19 C1:
    laying out shrank the axes after a band had been judged wide enough to see), at most three times."""
    from matplotlib.lines import Line2D

    said = object()
    for _ in range(3):
        note = thin_band_note(axes)
        if note == said:
            return
        said = note
        place({note: Line2D([], [], ls="none", label=note)} if note else {})


def spread_bar(ax, x_low, x_high, y, colour: str, cap: float = 0.1) -> None:
    """A bar from the slowest to the fastest repetition, drawn over its median's hollow marker, with a tick at each
    end (``cap``: its half-height, in data units of the rows), so that a short bar (or none: one tick where slowest
    and fastest are equal) still shows.  Ticks as segments, not markers: no colour-marker pair of the legend's."""
    import numpy as np

    ax.hlines(y, x_low, x_high, color=colour, lw=1.6, zorder=4)
    y = np.asarray(y, float)
    for ends in (x_low, x_high):
        ax.vlines(ends, y - cap, y + cap, color=colour, lw=1.4, zorder=4, gid="spread tick")


MEDIAN_PT = {"*": 12, "p": 9, "h": 9, "d": 9}  # a median's hollow marker, in points (8 for others): r21 C2
MEDIAN_ZORDER = 5  # over the bars and their end ticks (4), so that a tick at the median does not hide it (r21 C2)


def median_style(marker: str, line: bool) -> dict:
    """The keyword arguments of an engine's median marker in the throughput figure: hollow, as its legend says, and
    large enough to read as hollow (a 6-point star with a 1.2-point edge read as a filled blob, r21 C2); a marker of
    lines only (``line``) bold instead, or it vanishes."""
    size = dict(markersize=8, markeredgewidth=2.2) if line else dict(markersize=MEDIAN_PT.get(marker, 8))
    return {"markerfacecolor": "none", "markeredgewidth": 1.2, "zorder": MEDIAN_ZORDER, **size}
