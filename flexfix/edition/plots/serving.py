"""The serving run as a figure: each request in a batch against the same request alone, and the streamed request
against its non-streamed answer."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import OUTCOME_COLOURS, figure, wrap
from flexfix.edition.tables.serving import is_fake, model_label, stage_counts

__all__ = ["SERVING_KINDS", "NOT_RUN", "NOT_RUN_STYLE", "EMULATED", "serving_figure"]

# What a request of a stage came to, in stacking order, with its colour: each compared request is in exactly one of
# the first three (a request with other tokens has other logprobs too, and counts only as "tokens differ"), as in the
# stage table's columns bitwise_equal, same_tokens_other_logprobs and tokens_differ.
NOT_RUN = "not run (server gone)"
EQUAL = "bitwise equal (together: to alone; stream: to non-streamed)"
SERVING_KINDS = {
    EQUAL: OUTCOME_COLOURS["ok"],
    "same tokens, other logprobs": OUTCOME_COLOURS["moved"],  # rounding-sized: orange is a wrong answer only
    "tokens differ": OUTCOME_COLOURS["index_error"],
    "error": OUTCOME_COLOURS["illegal_memory_access"],
    NOT_RUN: "#ffffff",  # a white box with a dotted grey outline and its words inside: no value
}
# "tokens differ" keeps the edition's colour for other tokens and is hatched as well, so that it never reads as the
# yellow of "same tokens, other logprobs" beside it; no other bar is hatched, in any figure (round 19: the FAKE
# figure's // meant "emulated" while the recorded figure's cross meant "tokens differ")
HATCH = {"tokens differ": "xx"}
# a stage that could not run: the only box with an outline, dotted, white inside (its legend swatch drawn the same)
NOT_RUN_STYLE = {"facecolor": "#ffffff", "edgecolor": "#777777", "linestyle": ":", "linewidth": 1.2}
# the FAKE server's bars: faded (their legend swatches drawn the same) under this mark heading the title, and each
# labelled "FAKE, no model", so that they never read as a vLLM measurement.  The error bar is faded as far as the
# rest: its black turns a mid grey, never the solid black of a recorded error bar (round 9: a barely faded black read
# as a real crash).  No outline of their own (the outline is the not-run box's), and no hatch of their own: hatching
# is the cross of "tokens differ" only, in the recorded figure and here alike (round 19)
EMULATED = "EMULATED: no vLLM, no model"
EMULATED_SAID = "its bars faded: emulated"
EMULATED_ALPHA = 0.45
BAR_HEIGHT = 0.7  # bars one apart: a visible gap between rows, also between two not-run boxes
INSET = 1.0  # the not-run box starts and ends this far (in % of the axis) inside it, off the y-axis spine
ALONE_SAID = "alone stages not drawn: they are the reference (their counts are in the stage table)"

# each kind's column in the stage table (flexfix.edition.tables.stage_table): the bars count what its columns count
_COLUMN = {
    EQUAL: "bitwise_equal",
    "same tokens, other logprobs": "same_tokens_other_logprobs",
    "tokens differ": "tokens_differ",
    "error": "errored",
    NOT_RUN: "not_run",
}

_SHORT = {
    EQUAL: "equal",
    "same tokens, other logprobs": "same tokens, other logprobs",
    "tokens differ": "tokens differ",
    "error": "errors",
    NOT_RUN: "not run",
}


def _bars(table: pd.DataFrame) -> list[tuple[str, int, dict[str, int], str, bool]]:
    """(label, requests, count per kind, model, emulated) for every stage but ``alone``, in the table's order; the
    model as :func:`flexfix.edition.tables.serving.model_label` names it (``none (FAKE)`` for the FAKE server)."""
    bars = []
    for _, r in table.iterrows():
        label, fake = model_label(r), is_fake(r)
        for s in r["records"]:
            if s["stage"] == "alone":
                continue
            # square brackets, so that the FAKE server's "none (FAKE)" is never nested in a parenthesis
            model = f" [{'FAKE, no model' if fake else label}]" if label else ""
            counts = {kind: stage_counts(s).get(column, 0) for kind, column in _COLUMN.items()}
            bars.append((f"{r['scenario']}{model}: {s['stage']} {s['requests']}", s["requests"], counts, label, fake))
    return bars


def _positions(bars) -> list[float]:
    """Each bar's y: one apart, with a gap where the model changes, so that bars of other models are apart."""
    ys, y = [], 0.0
    for i, bar in enumerate(bars):
        if i and bar[3] != bars[i - 1][3]:
            y += 0.9
        ys.append(y)
        y += 1
    return ys


def _draw(ax, y: float, kind: str, width: float, left: float, emulated: bool = False) -> None:
    """One segment of a stage's bar: solid for a value (faded where the FAKE server emulated it); for a
    stage that could not run, a white box with a dotted outline spanning the axis, its words inside, so that it
    reads as a placeholder, not as a share."""
    if kind == NOT_RUN:
        inset = min(INSET, width / 4)
        ax.barh(y, width - 2 * inset, left=left + inset, height=BAR_HEIGHT, label=kind, **NOT_RUN_STYLE)
        ax.text(left + width / 2, y, "not run: the server had stopped", ha="center", va="center", fontsize=8,
                color="#555555", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    else:
        bar = ax.barh(y, width, left=left, height=BAR_HEIGHT, color=SERVING_KINDS[kind], edgecolor="black",
                      hatch=HATCH.get(kind), lw=0, label=kind)  # fmt: skip
        if emulated:
            for patch in bar:
                patch.set(alpha=_alpha(kind))


def _alpha(kind: str) -> float:
    """How far an emulated bar of ``kind`` is faded: every kind alike, ``error`` too (its black turns grey)."""
    return EMULATED_ALPHA


def _swatch(kind: str, emulated: bool):
    """The legend's sample of ``kind``, drawn as its bars are: the not-run box with its dotted outline; a value
    faded where the FAKE server emulated it."""
    from matplotlib.patches import Patch

    if kind == NOT_RUN:
        return Patch(**NOT_RUN_STYLE)
    if not emulated:
        return Patch(facecolor=SERVING_KINDS[kind], hatch=HATCH.get(kind), lw=0)
    return Patch(facecolor=SERVING_KINDS[kind], hatch=HATCH.get(kind), lw=0, alpha=_alpha(kind))


def _groups(ax, bars, ys) -> None:
    """Where the scenarios ran several models: each model's bars headed by its name and parted by a line."""
    for i, bar in enumerate(bars):
        if i == 0 or bar[3] != bars[i - 1][3]:
            if i:
                ax.axhline(ys[i] - 0.95, color="#555555", lw=0.8, ls="-")
            ax.text(0.5, ys[i] - 0.62, f"model {bar[3]}", fontsize=8, fontweight="bold", va="center")


def _models_said(bars) -> str:
    """``; models differ (stock: tiny / patched_bi1, patched_bi0: variance), not a with/without comparison`` where
    the bars' scenarios ran more than one model, else empty."""
    by_model: dict[str, list[str]] = {}
    for label, *_, model, _ in bars:
        scenario = label.split(" [")[0].split(":")[0]
        if scenario not in by_model.setdefault(model, []):
            by_model[model].append(scenario)
    if len(by_model) < 2:
        return ""
    said = " / ".join(f"{', '.join(names)}: {model}" for model, names in by_model.items())
    return f"; models differ ({said}): each scenario against itself alone, not a with/without-the-fix comparison"


def serving_figure(table: pd.DataFrame, where: str = ""):
    """Per scenario and stage, the share of its requests that were bitwise equal to themselves alone, had the same
    tokens but other logprobs, other tokens (and so other logprobs too), or an error, each request counted once (a
    stacked bar each, every stage as wide as the axis whatever its size, so that a stage of one request shows as well
    as one of 128), with the counts written at the bar's end; a stage that could not run is a white box with a
    dotted outline, a placeholder with its words inside; "bitwise equal" is to the request alone for ``together``
    and to the non-streamed answer for ``stream``; ``where`` names the run (this run, the FAKE server, a recorded
    GPU run) in the title."""
    bars = _bars(table)
    ys = _positions(bars)
    height = ys[-1] + 1 if ys else 1
    fig, ax = figure((10.5, 0.45 * height + 1.4))
    for y, (_, n, counts, _, fake) in zip(ys, bars):
        left = 0.0
        for kind in SERVING_KINDS:
            k = counts.get(kind, 0)
            if k:
                _draw(ax, y, kind, 100 * k / n, left, fake)
                left += 100 * k / n
        said = "; ".join(f"{counts[kind]} {_SHORT[kind]}" for kind in SERVING_KINDS if counts.get(kind))
        ax.text(101.5, y, f"{said} (of {n})", va="center", fontsize=8)
    models = _models_said(bars)
    if models:
        _groups(ax, bars, ys)
    emulated = any(b[4] for b in bars)
    ax.set_yticks(ys, [b[0] for b in bars], fontsize=9)
    ax.set_ylim(ys[-1] + 0.6 if ys else 1, -1.2 if models else -0.6)  # top to bottom, room for a model's heading
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the stage's requests (%)")
    drawn = set(ax.get_legend_handles_labels()[1])
    shown = [k for k in SERVING_KINDS if k in drawn]
    ax.legend(
        [_swatch(k, emulated) for k in shown],
        shown,
        loc="upper left",
        bbox_to_anchor=(0, -0.9 / (0.45 * height + 1.4)),
        fontsize=8,
        ncol=2 if emulated else min(3, len(shown)),
        frameon=False,
    )
    title = (
        "each request counted once: together N, a request in a batch vs the same request alone; stream 1, the "
        "streamed answer vs its non-streamed answer" + (f" ({where})" if where else "") + models + f"; {ALONE_SAID}"
    )
    ax.set_title(
        (f"{EMULATED} (the FAKE server; {EMULATED_SAID})\n" if emulated else "") + wrap(title, 9, 10), fontsize=10
    )
    fig.tight_layout(rect=(0, 0, RIGHT_ROOM, 1))  # the counts written past the bars' end keep a margin from the edge
    return fig


# the share of the figure's width the layout may fill: the rest is margin right of the longest count
RIGHT_ROOM = 0.97
