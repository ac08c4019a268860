"""The marks of notebook 04's line figure (:func:`flexfix.edition.plots.invariance.max_diff_vs_batch`) that have no
number: a crash and a kernel error in the strip above each panel, and their legend samples, drawn with the same
glyph as in the panels (r11 C1); and the series' names as the tables print them (``frozen`` on the CPU)."""

from __future__ import annotations

import pandas as pd

__all__ = [
    "CRASH_SIZE",
    "CROSS_SIZE",
    "draw_no_number",
    "no_number_handle",
    "series_labels",
    "series_title",
]

CRASH_SIZE = 10  # a crash's hollow marker in the strip: large enough for the cross inside it to read as one
CROSS_SIZE = 5  # the x inside it
CROSS = "x"


def draw_no_number(ax, xs: list[float], y: float, outcome: str, marker: str, colour: str) -> None:
    """A crash (the series' marker, hollow, an x inside) or a kernel error (the series' marker, filled) at ``xs``
    in the strip above ``ax`` (``y`` in axes fraction)."""
    strip = ax.get_xaxis_transform()
    crash = outcome == "crash"
    ax.plot(xs, [y] * len(xs), ls="none", marker=marker, color=colour, markersize=CRASH_SIZE if crash else 6,
            markerfacecolor="white" if crash else colour, markeredgewidth=1.3, transform=strip, clip_on=False,
            gid=f"no number: {outcome}")  # fmt: skip
    if crash:
        ax.plot(xs, [y] * len(xs), ls="none", marker=CROSS, color=colour, markersize=CROSS_SIZE,
                markeredgewidth=1.6, transform=strip, clip_on=False, gid="crash cross")  # fmt: skip


def no_number_handle(outcome: str, colour: str, marker: str = "D"):
    """The legend sample of a strip mark, the glyph drawn in the panels: a crash is a tuple (the hollow marker, the
    x inside it) that the legend draws one over the other."""
    from matplotlib.lines import Line2D

    if outcome != "crash":
        return Line2D([], [], color=colour, marker=marker, markerfacecolor=colour, ls="none", markersize=7)
    shape = Line2D([], [], color=colour, marker=marker, markerfacecolor="white", ls="none", markersize=CRASH_SIZE,
                   markeredgewidth=1.3)  # fmt: skip
    cross = Line2D([], [], color=colour, marker=CROSS, ls="none", markersize=CROSS_SIZE, markeredgewidth=1.6)
    return (shape, cross)


def _frozen(table: pd.DataFrame) -> bool:
    """Whether the graph launch of ``table`` is the CPU's stand-in, named ``frozen`` in its configurations."""
    return any(str(c).split(", ")[-2:-1] == ["frozen"] for c in table["config"])


def series_labels(table: pd.DataFrame, series: list[str]) -> list[str]:
    """The legend's names of the series: on the CPU, whose graph launch is its stand-in, ``frozen`` as the tables
    and the heatmap name it (r11 C1); elsewhere the series as drawn."""
    if not _frozen(table):
        return list(series)
    return [s.replace("graph, ", "frozen, ", 1) if s.startswith("graph, ") else s for s in series]


def series_title(table: pd.DataFrame) -> str:
    """The legend's title: what the series' names mean, with the launch named as in :func:`series_labels`."""
    if _frozen(table):
        return (
            "series: launch, copy (frozen: the CPU's stand-in for the graph launch, the kernel replayed with the "
            "strides of its capture step, named as in the tables); each shifted a little sideways inside its batch "
            "size's column"
        )
    return (
        "series: launch, copy (graph: the kernel replayed with the strides of its capture step, by a CUDA graph); "
        "each shifted a little sideways inside its batch size's column"
    )


def struck_keys(
    struck: dict[str, dict[str, tuple[str, str]]], wrong_colour: str, order: list[str], names
) -> tuple[list, list, dict]:
    """The legend keys of the marks with no number and of the wrong results (r12 C1): each key is the glyph drawn
    in the panels, in the marker and colour of each series that got it (``struck``: outcome -> series -> (marker,
    colour), as drawn), never a generic glyph, the series in the legend's
    ``order``; ``names`` maps the series to their printed names.  Returns the
    handles, their labels and the legend's ``handler_map`` (several series' glyphs side by side)."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    def got(outcome: str) -> list[tuple[str, str, str]]:
        by = struck.get(outcome, {})
        return [(name, *by[s]) for s, name in zip(order, names(order)) if s in by]

    handles, labels, handler_map = [], [], {}
    for name, marker, colour in got("crash"):
        handles.append(no_number_handle("crash", colour, marker))
        labels.append(
            f"crashed ({name}): its marker, hollow with an x inside, in the 'no number' strip above the panel"
        )
    for outcome, glyph, text in (
        ("error", lambda m, c: no_number_handle("error", c, m), "kernel error ({}): the series' own marker, filled in "
         "its colour,\nin the 'no number' strip above the panel"),
        ("wrong", lambda m, c: Line2D([], [], ls="none", marker=m, color=wrong_colour, markeredgecolor=c,
         markeredgewidth=1.3), "wrong result (misread): the marker of its series ({}), filled in the\n"
         "wrong-result colour, edged in its series' colour"),
    ):  # fmt: skip
        series = got(outcome)
        if series:
            handles.append(tuple(glyph(m, c) for _, m, c in series))
            handler_map[handles[-1]] = HandlerTuple(ndivide=None)  # the series' glyphs side by side
            labels.append(text.format("; ".join(name for name, _, _ in series)))  # r14 C1: names hold commas
    return handles, labels, handler_map


CONTROL_GID = "run-to-run control"  # the box around a heatmap's control column (r21 C1)


def mark_control(ax, grid: pd.DataFrame, control, what: str):
    """Box the heatmap column ``control`` of ``grid`` (dashed, thick: a run-to-run control, not a batch size),
    mark its tick ``(control)``, and return its legend sample and label, which names it (``what``); ``None`` where
    the grid has no such column."""
    from matplotlib.patches import Rectangle

    if control is None or control not in list(grid.columns):
        return None
    j = list(grid.columns).index(control)
    style = dict(fill=False, edgecolor="black", lw=2.4, ls="--")
    ax.add_patch(Rectangle((j - 0.5, -0.5), 1, grid.shape[0], clip_on=False, zorder=6, gid=CONTROL_GID, **style))
    ticks = [str(c) for c in grid.columns]
    ticks[j] = f"{control}\n(control)"
    ax.set_xticks(range(grid.shape[1]), ticks, fontsize=8)
    name = grid.columns.name or "column"
    label = f"dashed box, {name} = {control}:\n{what},\na run-to-run control,\nnot batch variance"
    return Rectangle((0, 0), 1, 1, **style), label
