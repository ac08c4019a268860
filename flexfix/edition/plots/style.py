"""What every figure shares: a Figure that renders itself in a notebook, titles that fit, legend swatches, and the
colours of outcomes and of series.  Each figure module exports the colour words a caption may use for its colours."""

from __future__ import annotations

import textwrap

__all__ = [
    "figure",
    "wrap",
    "patch",
    "text_colour",
    "batch_axis",
    "colour",
    "PALETTE",
    "OUTCOME_WORDS",
    "OUTCOME_COLOURS",
    "SERIES_WORDS",
    "SERIES_COLOURS",
]


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


# The edition's palette: Okabe & Ito's eight colour-blind-safe colours, two greys, and for series beyond them three of
# Paul Tol's colour-blind-safe colours (and his pale green, a fill light enough to read as "nothing wrong here" without
# looking empty on a white page).  No figure contrasts red with green: what a colour means never rests on a hue a
# red-green colour-blind reader cannot tell apart (tests/test_plots.py simulates protan and deutan vision to check).
PALETTE = {
    "blue": "#0072b2",
    "orange": "#e69f00",
    "vermillion": "#d55e00",
    "bluish green": "#009e73",
    "sky blue": "#56b4e9",
    "yellow": "#f0e442",
    "reddish purple": "#cc79a7",
    "black": "#000000",
    "grey": "#999999",
    "dark grey": "#555555",
    "light grey": "#dddddd",
    "indigo": "#332288",
    "wine": "#882255",
    "olive": "#999933",
    "dark green": "#117733",
    "purple": "#aa4499",
    "pale green": "#ccddaa",
    # notebook 03's read-window kinds (plots.layouts.READ_WINDOW_COLOURS): hues no outcome, copy or series has
    "cream": "#eeeebb",
    "pink": "#ffbbdd",  # r0102 C2 (round 15): light brown read as the orange of "silently wrong"
    "light cyan": "#88dddd",  # r17 C3: the pink above read as query block 0's reddish purple; cyan is no one's hue
    "dark brown": "#5c3a1a",
    # notebook 05's batch sizes (r19 C2: they took the contexts' colours in the next figure): Tol's sand, and two
    # darks no other series has, a teal far from bluish green and a brick far from vermillion and wine
    "sand": "#ddcc77",
    "dark teal": "#006d6f",
    "brick": "#994433",
    # r20 C2: batch 16's colour in place of sand, which lay pale on white (contrast 1.6) over the grey lines of the
    # batch sizes beside it; a saturated violet, dark on white, no context's, run's or outcome's hue
    "violet": "#8613bf",
}


def colour(word: str) -> tuple[str, str]:
    """(colour word, hex) of a palette colour, as the figures export them for captions."""
    return word, PALETTE[word]


# An outcome has one colour in every figure of the edition (notebooks 01, 04 and 06): blue right or bitwise equal,
# yellow moved by a rounding step with no wrong answer (a kernel's output; an engine's same tokens with other logprobs),
# orange an answer that came back wrong (a misread; nothing else is orange), vermillion an index error or other tokens,
# black an illegal memory access (a crash), indigo a timeout, dark grey any other error, light grey refused or not run.
# Series (copies, launches, query blocks) take the colours no outcome uses.
OUTCOME_WORDS = {
    "ok": "blue",
    "moved": "yellow",
    "wrong_result": "orange",
    "index_error": "vermillion",
    "illegal_memory_access": "black",
    "refused": "light grey",
    "error": "dark grey",
    "timeout": "indigo",
    "not_run": "light grey",
}
OUTCOME_COLOURS = {name: PALETTE[word] for name, word in OUTCOME_WORDS.items()}

# Series (query blocks, copies and launches, contexts, batch sizes, runs) take only colours no outcome has, and none
# close to one (sky blue, too near the blue of "right", is left out): whatever a series is, its colour never reads as
# an outcome, in any notebook.  SERIES_WORDS: the few series of notebooks 03 and 04, in this order.
SERIES_WORDS = ("reddish purple", "bluish green", "olive", "purple", "dark green")  # no outcome's colour

# ratio_lines and throughput_points: series i (in the legend's order) has colour i (and its own marker and line style):
# the series colours above, then wine (no figure of these two draws the dark grey that wine resembles to a red-green
# colour-blind reader), cycled beyond six (the markers and line styles keep a seventh series apart from the first).
# Dark brown (r16 C1) is the fourth run's colour in throughput_points: a hue far from wine, dark green and olive (the
# reddish purple it replaced sat near wine), in no other kind's order of colours.
# Violet (r20 C2, in sand's place), dark teal and brick (r19 C2) serve batch sizes only (plots.cost.FAMILIES), so
# that no batch size has a context's colour.
SERIES_COLOURS = tuple(colour(word) for word in (*SERIES_WORDS, "wine", "dark brown", "violet", "dark teal", "brick"))


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
