"""What every figure shares: a Figure that renders itself in a notebook, titles that fit, legend swatches, and the
colours of outcomes and of series.  Each figure module exports the colour words a caption may use for its colours."""

from __future__ import annotations

import textwrap

__all__ = ["figure", "wrap", "patch", "text_colour", "batch_axis", "OUTCOME_COLOURS", "SERIES_COLOURS"]


def figure(figsize, *grid, **kw):
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


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` (a conservative
    estimate of the width of a character), so that a long title never runs off the figure."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) if len(text) > chars else text


OUTCOME_COLOURS = {
    "ok": "#4c9a2a",
    "wrong_result": "#e0a100",
    "index_error": "#d9534f",
    "illegal_memory_access": "#8b0000",
    "refused": "#6c757d",
    "error": "#343a40",
    "timeout": "#6f42c1",
}


# ratio_lines and throughput_points: series i (in the legend's order) has colour i.
SERIES_COLOURS = (
    ("blue", "#1f77b4"),
    ("orange", "#ff7f0e"),
    ("green", "#2ca02c"),
    ("red", "#d62728"),
    ("purple", "#9467bd"),
    ("brown", "#8c564b"),
    ("pink", "#e377c2"),
    ("grey", "#7f7f7f"),
    ("olive", "#bcbd22"),
    ("cyan", "#17becf"),
)


def patch(colour: str):
    """A legend swatch (with an outline, so that white shows)."""
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 1, 1, facecolor=colour, edgecolor="#999999", linewidth=0.5)


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (a hex colour), by its relative luminance."""
    from matplotlib.colors import to_rgb

    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(background))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.3 else "white"


def batch_axis(ax, values) -> None:
    """A log2 x axis labelled with the values measured, not with powers of two."""
    ticks = sorted(set(int(v) for v in values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
    ax.minorticks_off()
