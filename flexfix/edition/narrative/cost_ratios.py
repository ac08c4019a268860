"""Notebook 05, *The ratios, over all runs*: the engines' throughput ratios per model, and which directions held
across runs and beyond the spread between engines (moved out of :mod:`.cost`, r22 D14)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural
from flexfix.edition.narrative.cost_devices import _numbers, beyond_spread

__all__ = ["engine_ratios"]


def _check_summary(summary: pd.DataFrame, what: str) -> None:
    _numbers(summary, ["ratios", "below_1", "lowest", "median", "highest"], what)


def _ratio_line(row: pd.Series) -> str:
    above = int(row["ratios"] - row["below_1"])
    return (
        f"{above} of {int(row['ratios'])} ratios above 1 (range {row['lowest']:.2f}–{row['highest']:.2f}x, "
        f"median {row['median']:.2f}x)"
    )


def _key(mixed: str) -> tuple[str, str]:
    """ "BI1/BI0 (tiny)" -> ("tiny", "BI1/BI0")."""
    ratio, model = mixed[:-1].split(" (")
    return model, ratio


def engine_ratios(
    summary: pd.DataFrame, spread: pd.DataFrame | None = None, answered: tuple[str, str] = ("", "")
) -> str:
    """:func:`flexfix.edition.tables.ratio_summary`, one line per model and ratio.  With ``spread``
    (:func:`flexfix.edition.tables.throughput_spread`), a direction that held in every ratio is called supported only
    where every ratio lies beyond how far one configuration moved between engines of that model (r0305 A6).
    ``answered``: (where, ratios) -- ratios (``"full/piecewise, BI1/BI0"``) whose reading an earlier answer, ``where``,
    gave already: the *In short* lead reads only the others and points there for these (r22 D14)."""
    _check_summary(summary, "the throughput ratios")
    lines = [f"* {model}, {ratio}: {_ratio_line(row)}." for (model, ratio), row in summary.iterrows()]
    held, within, mixed = [], [], []
    where, skip = answered[0], {r.strip() for r in answered[1].split(",") if r.strip()}
    for (model, ratio), row in summary.iterrows():
        if ratio in skip:
            continue
        first, second = ratio.split("/")
        n = int(row["ratios"])
        if int(row["below_1"]) in (0, n):
            way = "faster" if int(row["below_1"]) == 0 else "slower"
            said, apart = beyond_spread(row, model, spread)
            (held if apart else within).append(f"{first} {way} than {second} ({model}, {plural(n, 'ratio')}{said})")
        else:
            mixed.append(f"{ratio} ({model})")
    medians = {(model, ratio): row["median"] for (model, ratio), row in summary.iterrows()}
    bullets = [  # r0305 D9: a short bullet per kind of direction, its conclusion first
        "**Supported by these runs** (held in every ratio, across runs, beyond the spread between engines): "
        + listing(held, "; ")
        if held
        else "**No direction held in every ratio across runs beyond the spread between engines.**"
    ]
    if within:
        bullets.append(
            "**A hint, not a result**: these held in every ratio, but not beyond how far one configuration moved "
            "between engines (the rule: a direction is supported when its ratio nearest 1 lies beyond the model's "
            "largest between-engine spread): " + listing(within, "; ") + "."
        )
    if mixed:
        bullets.append(
            "**Unresolved** (went both ways from run to run, so no direction): their medians: "  # r13 A1
            + listing([f"{m} median {medians[_key(m)]:.2f}x" for m in mixed], "; ")
            + "."
        )
    if held:
        bullets[0] += "."
    if skip:  # r22 D14: those ratios' reading is the earlier answer's, not said again
        said = listing([f"`{r}`" for r in sorted(skip)])
        bullets.insert(0, f"{said}: read in {where} (the same rule); the others:")
        bullets[1] = bullets[1].replace("**No direction held", "**No other direction held")
    lead = "In short:\n" + "\n".join(f"- {b}" for b in bullets)  # "-": a list apart from the evidence's
    return markdown(
        "**The ratios, over all runs** (of output tokens per second: above 1, the first configuration named was "
        "faster; `BI1/BI0` below 1 is a cost of batch invariance)",
        lead,
        "\n".join(lines),
    )
