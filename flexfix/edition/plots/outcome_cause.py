"""Notebook 01's crash-or-wrong figure: every run of :mod:`flexfix.measure.outcome_cause`, one cell per scenario and
seed, coloured by outcome and labelled with what lay in front of the KV caches just before the first replay."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.plots.style import OUTCOME_WORDS, colour, figure, patch, text_colour, wrap
from flexfix.edition.tables.outcome_cause import OWN_READ_FAULT

__all__ = ["OUTCOME_CAUSE_COLOURS", "PROBE_FAULT", "PROBE_HATCH", "outcome_grid"]

# outcome_grid: one colour per outcome of a run, the outcome's colour in every figure (style.OUTCOME_WORDS; the
# legend's labels start with these keys)
OUTCOME_CAUSE_COLOURS = {
    "correct": colour(OUTCOME_WORDS["ok"]),
    "silently wrong": colour(OUTCOME_WORDS["wrong_result"]),
    "illegal memory access": colour(OUTCOME_WORDS["illegal_memory_access"]),
    "other": colour(OUTCOME_WORDS["error"]),
}
_LABEL = {"ok": "correct", "wrong_result": "silently wrong", "illegal_memory_access": "illegal memory access"}
# A run whose own read of the bytes in front of a cache faulted, before any replay: another event than a replay's
# illegal memory access, so another fill (grey, which no outcome has), hatched in black, with a legend entry of its own
# (r0102 C2: black thinly hatched looked like the replay's black).
# The label is the placement table's own word for that outcome (r0102 round 8, C13: not "illegal memory access").
PROBE_FAULT = OWN_READ_FAULT
OUTCOME_CAUSE_COLOURS[PROBE_FAULT] = colour("grey")
PROBE_HATCH = "///"


def _outcome(run) -> str:
    if getattr(run, "touch_result", None) == "faulted" and run.status == "illegal_memory_access":
        return PROBE_FAULT
    return _LABEL.get(run.status, "other")


def _yes(value) -> str:
    if value is None or value != value:  # not asked (None, or NaN once in a DataFrame)
        return "?"
    return "yes" if value else "no"


def _label(run) -> str:
    """``listed: K yes, V no`` (does the driver list an allocation in front of each cache), and where the run read
    those bytes itself, what the read did."""
    text = f"listed: K {_yes(run.front_k_mapped)}, V {_yes(run.front_v_mapped)}"
    touched = getattr(run, "touch_result", None)
    if isinstance(touched, str):
        text += f"\nread in front of {str(run.touch).upper()}: " + {"read": "no fault"}.get(touched, touched)
    return text


def outcome_grid(runs: pd.DataFrame, title: str):
    """Rows: scenario (copy, batch, placements, direct read); columns: seed; each cell the run's outcome, labelled
    with whether the driver listed an allocation in front of the K and the V cache just before the first replay
    (``listed: K yes, V no``) and, where the run read those bytes itself, whether that read went through."""
    from matplotlib.patches import Rectangle

    from flexfix.edition.tables.outcome_cause import SCENARIO_KEYS, scenario_label

    if runs.empty:
        raise ValueError("outcome_grid needs at least one run")
    scenarios = list(dict.fromkeys(scenario_label(*key) for key in runs[SCENARIO_KEYS].itertuples(index=False)))
    seeds = sorted(set(runs["seed"]))
    fig, ax = figure((max(7.0, 2.1 * len(seeds) + 3.5), 0.8 * len(scenarios) + 1.8))
    for run in runs.itertuples(index=False):
        y = scenarios.index(scenario_label(*(getattr(run, k) for k in SCENARIO_KEYS)))
        x = seeds.index(run.seed)
        label = _outcome(run)
        fill = OUTCOME_CAUSE_COLOURS[label][1]
        ink = text_colour(fill)
        hatch = PROBE_HATCH if label == PROBE_FAULT else None
        edge = "#000000" if hatch else "#999999"  # a hatch takes the edge's colour
        ax.add_patch(Rectangle((x - 0.45, y - 0.4), 0.9, 0.8, facecolor=fill, hatch=hatch, edgecolor=edge))
        box = {"facecolor": fill, "edgecolor": "none", "pad": 1} if hatch else None
        ax.text(x, y, _label(run), ha="center", va="center", fontsize=8.5, color=ink, bbox=box)
    ran = {(scenarios.index(scenario_label(*(getattr(r, k) for k in SCENARIO_KEYS))), seeds.index(r.seed))
           for r in runs.itertuples(index=False)}  # fmt: skip
    missing = [(x, y) for y in range(len(scenarios)) for x in range(len(seeds)) if (y, x) not in ran]
    for x, y in missing:  # a blank cell says what it is: no run of that scenario on that seed (r0102 C6)
        ax.text(x, y, "not run", ha="center", va="center", fontsize=8.5, color="#555555", style="italic")
    ax.set_xlim(-0.6, len(seeds) - 0.4)
    ax.set_ylim(len(scenarios) - 0.5, -0.5)
    ax.set_xticks(range(len(seeds)), [str(s) for s in seeds], fontsize=10)
    ax.set_yticks(range(len(scenarios)), scenarios, fontsize=9)
    ax.set_xlabel(
        "seed (in one column, every as_strided row past one query block has the same steps and misread cells; "
        "the sliced and one-query-block rows misread nothing)\nlisted: the driver lists an allocation in front of "
        "that cache",
        fontsize=10,
    )
    ax.set_title(wrap(title, fig.get_figwidth(), 10), fontsize=10)
    present = list(dict.fromkeys(_outcome(run) for run in runs.itertuples(index=False)))
    handles = [patch(OUTCOME_CAUSE_COLOURS[name][1]) for name in present]
    for handle, name in zip(handles, present):
        if name == PROBE_FAULT:
            handle.set_hatch(PROBE_HATCH)
            handle.set_edgecolor("#000000")
    shown = [wrap(name, 2.4, 9) for name in present]
    ax.legend(handles, shown, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    return fig
