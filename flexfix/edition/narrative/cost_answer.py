"""Notebook 05, *Engine level*: the answer to the question the notebook opens with, first (r12 D6): what full graphs
gain over piecewise graphs and what ``VLLM_BATCH_INVARIANT=1`` costs in output tokens per second, each said with
whether it holds beyond how far one configuration moves between engines."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown
from flexfix.edition.narrative.cost_devices import beyond_spread

__all__ = ["engine_answer", "plain_answer"]


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


def _status(summary: pd.DataFrame, ratio: str, spread: pd.DataFrame | None) -> dict[str, tuple[str, bool, float]]:
    """Per model: ``supported``, ``hint`` or ``unresolved`` (the rule of :func:`_direction`), whether its ratios lay
    above 1, and their median."""
    out = {}
    for model in summary.index.get_level_values("model").unique():
        if (model, ratio) not in summary.index:
            continue
        row = summary.loc[(model, ratio)]
        n, below = int(row["ratios"]), int(row["below_1"])
        if below in (0, n):
            out[model] = ("supported" if beyond_spread(row, model, spread)[1] else "hint", below == 0, row["median"])
        else:
            out[model] = ("unresolved", row["median"] >= 1, row["median"])
    return out


def _plain_one(status: dict, up: str, down: str) -> str:
    """The plain answer for one ratio over the models: one clause where every model came out alike.  No numbers:
    the bullets under it give each model's (r22 D14: the medians were said twice in one answer)."""
    if not status:
        return "not measured here."
    kinds = {(k, u if k != "unresolved" else None) for k, u, _ in status.values()}
    if len(kinds) == 1:
        kind, way = next(iter(kinds))
        if kind == "unresolved":
            return "not measurable here: its ratios went both ways across runs."
        word = up if way else down
        if kind == "supported":
            return f"{word}, in every ratio and beyond the noise between engines."
        return (
            f"probably {word}, in every ratio, but not proven at this noise: one configuration moved between engines "
            "by more."
        )
    parts = []
    for model, (k, u, _) in status.items():
        parts.append(f"{model}: " + ("unresolved" if k == "unresolved" else (up if u else down)))
        parts[-1] += " (not proven)" if k == "hint" else ""
    return "the models differ (" + "; ".join(parts) + ")."


def plain_answer(summary: pd.DataFrame, spread: pd.DataFrame | None) -> str:
    """The engine-level answer in plain words (r16 D8), from the same rule as the lines under it: a question and its
    answer for full over piecewise graphs and for ``BI1/BI0``."""
    full = _plain_one(_status(summary, "full/piecewise", spread), "yes", "no, they were slower")
    bi = _plain_one(_status(summary, "BI1/BI0", spread), "no, it was faster", "yes, it was slower")
    return (
        f"Do full CUDA graphs buy throughput over piecewise ones? {full[0].upper() + full[1:]} "
        f"Does `VLLM_BATCH_INVARIANT=1` cost throughput? {bi[0].upper() + bi[1:]}"
    )


def engine_answer(speed: pd.DataFrame) -> str:
    """The answer first: full over piecewise graphs, and ``BI1/BI0``, per model, from the engines' output tokens per
    second ``speed`` (:func:`flexfix.measure.engine_sweep.throughput_rows`), through the same ratio summary and
    between-engine spread as the evidence further down (:func:`flexfix.edition.tables.ratio_summary`,
    :func:`flexfix.edition.tables.throughput_spread`)."""
    from flexfix.edition import tables

    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    return markdown(  # r22 D14: the plain answer and its numbers in one paragraph, said here once
        f"**The answer first.** {plain_answer(summary, spread)} In numbers, by the rule the lines further down apply "
        "(the tables and lines below are its evidence):",
        "* **Full over piecewise graphs** (output tokens per second, above 1: full faster): "
        + _direction(summary, "full/piecewise", spread, ("full faster", "full slower"))
        + ".\n* **What `VLLM_BATCH_INVARIANT=1` costs** (`BI1/BI0`, below 1: batch invariance slower): "
        + _direction(summary, "BI1/BI0", spread, ("batch invariance faster", "batch invariance slower"))
        + ".",
    )
