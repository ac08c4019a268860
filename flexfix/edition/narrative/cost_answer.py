"""Notebook 05, *Engine level*: the answer to the question the notebook opens with, first (r12 D6): what full graphs
gain over piecewise graphs and what ``VLLM_BATCH_INVARIANT=1`` costs in output tokens per second, each said with
whether it holds beyond how far one configuration moves between engines."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown
from flexfix.edition.narrative.cost_devices import beyond_spread

__all__ = ["engine_answer"]


def _direction(summary: pd.DataFrame, ratio: str, spread: pd.DataFrame | None, words: tuple[str, str]) -> str:
    """One ratio (``full/piecewise``, ``BI1/BI0``) per model: its range and median, and what it supports."""
    said = []
    for model in summary.index.get_level_values("model").unique():
        if (model, ratio) not in summary.index:
            continue
        row = summary.loc[(model, ratio)]
        n, below = int(row["ratios"]), int(row["below_1"])
        numbers = f"range {row['lowest']:.2f}–{row['highest']:.2f}x, median {row['median']:.2f}x"
        if below in (0, n):
            clause, apart = beyond_spread(row, model, spread)
            verdict = "beyond the spread between engines: supported" if apart else "but within the spread between "
            verdict += "" if apart else "engines: a hint, not a result"
            way = words[0] if below == 0 else words[1]
            shown = f"median {row['median']:.2f}x{clause}" if clause else numbers  # the clause gives the range
            said.append(f"{model} model: {way} in every ratio ({shown}), {verdict}")
        else:
            said.append(f"{model} model: both ways across runs ({n - below} of {n} above 1; {numbers}): unresolved")
    return "; ".join(said) if said else "not measured"


def engine_answer(speed: pd.DataFrame) -> str:
    """The answer first: full over piecewise graphs, and ``BI1/BI0``, per model, from the engines' output tokens per
    second ``speed`` (:func:`flexfix.measure.engine_sweep.throughput_rows`), through the same ratio summary and
    between-engine spread as the evidence further down (:func:`flexfix.edition.tables.ratio_summary`,
    :func:`flexfix.edition.tables.throughput_spread`)."""
    from flexfix.edition import tables

    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    return markdown(
        "**The answer first** (the tables and lines below are the evidence):",
        "* **Full over piecewise graphs** (output tokens per second, above 1: full faster): "
        + _direction(summary, "full/piecewise", spread, ("full faster", "full slower"))
        + ".\n* **What `VLLM_BATCH_INVARIANT=1` costs** (`BI1/BI0`, below 1: batch invariance slower): "
        + _direction(summary, "BI1/BI0", spread, ("batch invariance faster", "batch invariance slower"))
        + ".",
    )
