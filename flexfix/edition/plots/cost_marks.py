"""Marks of notebook 05's figures that must stay visible: a note where a spread band is too thin to see (r15 C1), and
the slowest-to-fastest bars drawn over their medians with end ticks (r15 C2)."""

from __future__ import annotations

import numpy as np

__all__ = ["THIN_PT", "keep_band", "band_heights_pt", "band_hidden", "thin_band_note", "spread_bar"]

THIN_PT = 3.0  # a band at most this many points tall hides under its line (1.5 pt) and hollow marker


def keep_band(ax, x, low, high, cover: float = 0.0) -> None:
    """Remember a drawn band on its axes, so that the legend can say whether it can be seen.  ``cover``: the size in
    points of the series' markers, which sit on the band where it is tallest, at its points (r17 C2)."""
    bands = ax.__dict__.setdefault("_flexfix_bands", [])
    bands.append((np.asarray(x, float), np.asarray(low, float), np.asarray(high, float), float(cover)))


def band_hidden(axes) -> list[bool]:
    """For each band remembered on ``axes``: whether it is too thin to see, i.e. nowhere taller than its line
    (``THIN_PT``) and than the markers drawn on it (r17 C2: a band a little taller than its line hid under them)."""
    covers = [max(THIN_PT, band[3]) for ax in axes for band in ax.__dict__.get("_flexfix_bands", [])]
    return [h < c for h, c in zip(band_heights_pt(axes), covers)]


def band_heights_pt(axes) -> list[float]:
    """The tallest point of each band remembered on ``axes``, in points on the figure as its limits now stand."""
    heights = []
    for ax in axes:
        for x, low, high, *_ in ax.__dict__.get("_flexfix_bands", []):
            ends = [ax.transData.transform(np.column_stack([x, v])) for v in (low, high)]
            tall = np.abs(ends[1][:, 1] - ends[0][:, 1]) * 72 / ax.figure.dpi
            heights.append(float(np.nanmax(tall)) if len(tall) else 0.0)
    return heights


def thin_band_note(axes) -> str | None:
    """A legend line for bands too thin to see, from their drawn heights: every band, some, or None."""
    thin = band_hidden(axes)
    if not thin or not any(thin):
        return None
    if all(thin):
        return (
            "(no band shows here: every one is narrower than its line and markers, the repetitions spread that little)"
        )
    return "(where no band shows, it is narrower than its line and markers: the repetitions spread that little there)"


def spread_bar(ax, x_low, x_high, y, colour: str, cap: float = 0.1) -> None:
    """A bar from the slowest to the fastest repetition, drawn over its median's hollow marker, with a tick at each
    end (``cap``: its half-height, in data units of the rows), so that a short bar (or none: one tick where slowest
    and fastest are equal) still shows.  Ticks as segments, not markers: no colour-marker pair of the legend's."""
    import numpy as np

    ax.hlines(y, x_low, x_high, color=colour, lw=1.6, zorder=4)
    y = np.asarray(y, float)
    for ends in (x_low, x_high):
        ax.vlines(ends, y - cap, y + cap, color=colour, lw=1.4, zorder=4, gid="spread tick")
