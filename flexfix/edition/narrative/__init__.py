"""Sentences about measurements, written by code from the results they describe.

A notebook's own markdown explains the mechanism and the method; every number it would state about a
measurement (counts, ratios, errors, timings, thresholds) comes from one of these functions instead, called
on the run's table or on a recorded one, so the text holds for whatever that run measured and cannot drift
from it. Each returns :class:`IPython.display.Markdown` (rendered in the notebook, text in a terminal).
One module per notebook's subject: :mod:`.reproduce` (01, 02), :mod:`.layouts` (03), :mod:`.invariance`
(04), :mod:`.cost` (05), :mod:`.serving` (06).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown", "span", "plural", "listing", "OUTCOME_WORDS"]

OUTCOME_WORDS = {
    "ok": "correct at every step",
    "wrong_result": "a silently wrong result",
    "illegal_memory_access": "an illegal memory access",
    "index_error": "an index error, the CPU analog's read outside the KV cache",
    "refused": "refused by vLLM",
    "timeout": "a timeout",
    "error": "an error",
}


class _Markdown(str):
    """Markdown text that renders in a notebook and prints as itself elsewhere."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return str(self)


def markdown(*paragraphs: str) -> _Markdown:
    """Join non-empty paragraphs into one Markdown block."""
    return _Markdown("\n\n".join(p for p in paragraphs if p))


def span(values: Iterable[float], fmt: str = "{:.2f}", unit: str = "") -> str:
    """``a-b`` over the values (or ``a`` when they agree once formatted); ``"none"`` when empty."""
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return "none"
    lo, hi = fmt.format(min(vals)), fmt.format(max(vals))
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def listing(items: Sequence, sep: str = ", ") -> str:
    """``a``, ``a and b``, ``a, b and c`` (``sep`` between the others: ``"; "`` for items with commas)."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return sep.join(items[:-1]) + " and " + items[-1]
