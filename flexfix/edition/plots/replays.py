"""Notebook 01's figure: the error of each replay step against the fp32 reference, and where runs gave no answer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from flexfix.edition.plots.style import OUTCOME_WORDS, colour, figure, wrap

__all__ = ["MAX_SHIFT", "REPLAY_ERROR_COLOURS", "replay_errors"]

# replay_errors: one colour per copy for the measured errors (series colours, which no outcome uses, each copy with
# its own marker too); for the crosses in the "no answer" band, the ring round a silently wrong step and the tolerance
# line, the outcome's colour in every figure (style.OUTCOME_WORDS).
REPLAY_ERROR_COLOURS = {
    "sliced": colour("bluish green"),  # a series colour: sky blue read as the blue of "correct" (r0102 C2)
    "as_strided": colour("reddish purple"),
    "silently wrong answer": (f"{OUTCOME_WORDS['wrong_result']} ring", colour(OUTCOME_WORDS["wrong_result"])[1]),
    "illegal memory access": colour(OUTCOME_WORDS["illegal_memory_access"]),
    # the CPU analog's index error stands for the crash: its cross, label and guide take the crash's black, so that the
    # CPU figure and the GPU one draw "no answer" alike and no cross is near the orange of a silently wrong answer
    # (r0102 round 7, C8); the legend names the outcome
    "index error": colour(OUTCOME_WORDS["illegal_memory_access"]),
    **{name: colour(OUTCOME_WORDS[name]) for name in ("timeout", "error", "refused")},
    "tolerance": colour("dark grey"),
    # the legend's sample of the dotted guides: black, as the crosses of a crash and their guides are (where crosses of
    # several colours are drawn, each guide takes its cross's colour and the legend says so)
    "dotted line": colour(OUTCOME_WORDS["illegal_memory_access"]),
}


# how far a point may sit off its step: every run gets a slot of its own, SLOT apart (less where too many runs would
# not fit), the copies/batches side by side with an empty slot between them, all within +-MAX_SHIFT of the step, so
# that a point still reads as its step's (r0102 round 8, C11) and the rings of equal steps can be counted one by one
# (r0102 round 10, C1: at 0.02 apart, five rings lay on top of one another)
MAX_SHIFT, SLOT = 0.4, 0.09
BAND_SHIFT = 0.15  # the crosses of the band, one per outcome: their labels sit beside them, before the next step


def _offsets(sizes: list[int]) -> list[list[float]]:
    """The x offset of each run of each group (``sizes``: runs per group), centred on the step."""
    slots = sum(sizes) + len(sizes) - 1
    width = min(SLOT, 2 * MAX_SHIFT / max(slots - 1, 1))
    start, out = -(slots - 1) * width / 2, []
    for n in sizes:
        out.append([start + i * width for i in range(n)])
        start += (n + 1) * width
    return out


def _measured(records) -> list[float]:
    """The error of each step (floored at 1e-8 for the log axis); NaN where none was measured (no point drawn)."""
    return [max(s["max_error"], 1e-8) if s.get("max_error") is not None else np.nan for s in records]


def _crash_steps(run) -> list[tuple[int, str]]:
    """(step, outcome) where a run crashed: each step whose record says so (the CPU analog goes on
    after an index error), and, when the run's status is a crash no record carries, the step after
    its last record: on a GPU an illegal memory access kills the process before that step reports."""
    records = list(run["records"])
    crashed = [(i, s["outcome"]) for i, s in enumerate(records) if s["outcome"] not in ("ok", "wrong_result")]
    status = run["status"]
    if status not in ("ok", "wrong_result") and status not in {o for _, o in crashed}:
        crashed.append((len(records), status))
    return crashed


def _tolerance(table: pd.DataFrame) -> tuple[float, str] | None:
    """The error above which a step is a wrong result, for the table's one device (None if mixed)."""
    devices = set(table["device"]) if "device" in table else set()
    if len(devices) != 1:
        return None
    import torch

    from flexfix.mechanism.kernel_repro import tolerance

    dtype = torch.bfloat16 if devices == {"cuda"} else torch.float32
    return tolerance(dtype), str(dtype).removeprefix("torch.")


def _crash_colour(outcome: str) -> str:
    return REPLAY_ERROR_COLOURS.get(outcome.replace("_", " "), REPLAY_ERROR_COLOURS["error"])[1]


def _crash_band(band, table: pd.DataFrame) -> list[tuple[int, str]]:
    """Crosses in the top band at each step where runs crashed, one colour per outcome, with the
    number of runs beside them.  Returns (step, colour) for a vertical guide at each."""
    crashes = [(i, step, outcome, run["copy"]) for i, (_, run) in enumerate(table.iterrows())
               for step, outcome in _crash_steps(run)]  # fmt: skip
    counts = Counter((step, outcome) for _, step, outcome, _ in crashes)
    outcomes = list(dict.fromkeys(o for _, o in sorted(counts)))
    for k, outcome in enumerate(outcomes):
        name, colour = outcome.replace("_", " "), _crash_colour(outcome)
        steps = sorted(s for s, o in counts if o == outcome)
        dx = (k - (len(outcomes) - 1) / 2) * (2 * BAND_SHIFT / max(len(outcomes) - 1, 1))
        runs = len({i for i, _, o, _ in crashes if o == outcome})
        copies = " and ".join(dict.fromkeys(c for _, _, o, c in crashes if o == outcome))
        what = (
            ",\nthe CPU analog of a crash (the run goes on)"
            if outcome == "index_error"
            else ":\nthe run ended at that step, so no point below"
        )
        label = f"{name} ({runs} run{'s' if runs > 1 else ''}): {copies} gave no answer{what}"
        # a cross outlined in black in every figure: "no answer" reads the same on a CPU and on a GPU, and its shape
        # keeps it apart from the ring of a silently wrong answer whatever their colours
        band.plot([s + dx for s in steps], [0.5] * len(steps), "X", color=colour, mec="black", mew=1.2, ms=12,
                  ls="none", label=label)  # fmt: skip
        for s in steps:
            n = counts[(s, outcome)]
            band.text(s + dx + 0.2, 0.5, f"{n} run{'s' if n > 1 else ''}", va="center", fontsize=8, color=colour)
    if not counts:
        band.text(0.5, 0.5, "every step answered", transform=band.transAxes, ha="center", va="center", color="grey")
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.set_ylabel("runs with\nno answer", rotation=0, ha="right", va="center", fontsize=9)
    band.tick_params(labelbottom=False)
    return sorted({s: _crash_colour(o) for s, o in sorted(counts, reverse=True)}.items())


def _error_axis(ax, tol: float | None) -> None:
    """One log axis for every error figure of the edition (r0102 round 12, C1: this run's and the recorded figure are
    compared): the same tick labels (``1e-03``, one a decade) and, for one tolerance, the same range, two decades
    below it to three above, widened by whole decades only where a point lies outside it."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = ax.dataLim.y0, ax.dataLim.y1  # the points themselves, not the autoscale's margins
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > 0):
        lo, hi = ax.get_ylim()
    if tol is not None:
        base = np.floor(np.log10(tol))
        lo, hi = min(lo, 10 ** (base - 2)), max(hi, 10 ** (base + 3))
    ax.set_ylim(10 ** np.floor(np.log10(max(lo, 1e-12))), 10 ** np.ceil(np.log10(hi)))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def replay_errors(table: pd.DataFrame, title: str):
    """Max |output - fp32 reference| at each step of each run (log scale), one colour and marker per copy (one fill per
    batch), markers only: no line joins a run's steps, since lines between runs whose errors differ crossed and could
    not be followed (r0102 round 14, C1); each run keeps one slot beside its step at every step instead.  A ring
    round each step that answered but was wrong (a silently wrong answer), and above it a "no answer" band with a
    cross at each step where runs gave no answer (the outcome in the legend, the number of runs beside it),
    including the step a GPU run died at before it could report (the CPU analog's index error does not end its run).
    The dashed line is the tolerance: a point above it is a wrong result.  Colours: ``REPLAY_ERROR_COLOURS``."""
    fig, (band, ax) = figure((9, 6.2), 2, 1, sharex=True, gridspec_kw={"height_ratios": (1, 6)})
    steps = 1
    batches = sorted(table["batch"].unique())
    groups = table.groupby(["copy", "batch"], sort=False)
    silent: list[tuple[float, float]] = []  # steps that answered, silently wrong (above the tolerance)
    silent_at: list[tuple[tuple[int, int], int]] = []
    offsets = _offsets([len(runs) for _, runs in groups])  # side by side, run by run: see MAX_SHIFT
    for n, ((copy, batch), runs) in enumerate(groups):
        colour = REPLAY_ERROR_COLOURS.get(copy, REPLAY_ERROR_COLOURS["error"])[1]
        fill = ("full", "none", "left", "top")[batches.index(batch) % 4]  # the batch: lines no longer tell it
        label = f"{copy}, batch {batch} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        marker = "o" if copy == "as_strided" else "s"
        for i, (_, run) in enumerate(runs.iterrows()):
            ys, x0 = _measured(run["records"]), offsets[n][i]
            shown = label if i == 0 else "_nolegend_"
            ax.plot(np.arange(len(ys)) + x0, ys, marker, ls="none", fillstyle=fill, color=colour, alpha=0.7, ms=4,
                    label=shown)  # fmt: skip
            for k, rec in enumerate(run["records"]):
                if rec.get("outcome") == "wrong_result" and rec.get("max_error") is not None:
                    silent.append((k + x0, max(rec["max_error"], 1e-8)))
                    silent_at.append(((n, i), k))  # which run, which step: the legend counts both (r15 C1)
            steps = max(steps, len(run["records"]), *(s + 1 for s, _ in _crash_steps(run)))
    guides = _crash_band(band, table)
    for step, colour in guides:
        ax.axvline(step, color=colour, lw=0.8, ls=":", alpha=0.6)
    if guides:  # the dotted guide gets a legend entry of its own: it marks a step, not a measured error
        several = len({c for _, c in guides}) > 1  # "in the colour of the cross" only where the crosses differ
        sample = REPLAY_ERROR_COLOURS["dotted line"][1] if several else guides[0][1]  # the sample as the lines are
        ax.plot([], [], color=sample, lw=0.8, ls=":", alpha=0.6,
                label="dotted line: a step where runs gave no answer"
                + ("\n(in the colour of the cross above it)" if several else "")
                + ": those runs have no point there")  # fmt: skip
    from matplotlib.colors import to_rgba

    ring = REPLAY_ERROR_COLOURS["silently wrong answer"][1]
    # r0102 round 16, C: a hollow ring, wider than the point and thin, so the copy's marker inside it stays visible
    fill = to_rgba(ring, 0.0)
    if silent:
        xs, ys = zip(*silent)
        label = f"silently wrong answer ({_run_steps(silent_at)}):\na hollow ring round the run's own point"
        ax.plot(xs, ys, "o", ms=8, mfc=fill, color=ring, mec=ring, mew=1.0, ls="none", label=label)
    else:  # the caption explains the ring: the legend says when there is none to see
        ax.plot([], [], "o", ms=8, mfc=fill, color=ring, mec=ring, mew=1.0, ls="none",
                label="silently wrong answer (a ring): none in these runs")  # fmt: skip
    tol = _tolerance(table)
    if tol is not None:
        colour = REPLAY_ERROR_COLOURS["tolerance"][1]
        ax.axhline(tol[0], color=colour, lw=0.8, ls="--", label=f"tolerance {tol[0]:.0e} ({tol[1]})")
    _error_axis(ax, tol[0] if tol is not None else None)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_xticks(range(steps))
    ax.set_xlabel("step (0 = capture, then replays)")
    ax.set_ylabel("max |out - reference|")
    band.set_title(wrap(title, 6.5, 10), fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    crash_handles, crash_labels = band.get_legend_handles_labels()
    # below the plot, in two columns: a legend beside it squeezed the axes to a strip (r0102 round 8, C12)
    ax.legend(handles + crash_handles, labels + crash_labels, fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=2)  # fmt: skip
    fig.tight_layout(h_pad=0.3)
    return fig


def _run_steps(at: list[tuple[tuple[int, int], int]]) -> str:
    """The rings counted as run-steps, not steps (r0102 round 15, C1): the axis has one tick per step, and a ring is
    one run at one step, so "20 steps" on an axis of 4 read wrong; here "20 run-steps: 5 runs x 4 steps" where every
    such run is wrong at the same steps, else the runs and the steps counted apart."""
    runs, steps, n = {r for r, _ in at}, {k for _, k in at}, len(at)

    def count(k: int, noun: str) -> str:
        return f"{k} {noun}{'s' if k > 1 else ''}"

    if n == len(runs) * len(steps):
        return f"{count(n, 'run-step')}: {count(len(runs), 'run')} x {count(len(steps), 'step')}"
    return (
        f"{count(n, 'run-step')}: one ring per run and step, {count(len(runs), 'run')} over {count(len(steps), 'step')}"
    )
