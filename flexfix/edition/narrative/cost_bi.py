"""Notebook 05's verdict on the batch-invariant kernel options against vLLM's, in words that say its rule (r19 A1)."""

from __future__ import annotations

import pandas as pd

__all__ = ["bi_verdict"]


def bi_verdict(bi: pd.Series) -> str:
    """The headline's verdict on the batch-invariant options' time ratios ``bi`` (above 1 slower), in words that say
    the rule they were decided by (r19 A1): "within 5%" only where every ratio is within 5% either way; where some
    are more than 5% faster and none more than 5% slower, "never more than 5% slower", with the faster ones counted
    (the range printed after it gives how far)."""
    slow, fast = int((bi > 1.05).sum()), int((bi < 0.95).sum())
    if slow == 0 and fast == 0:
        return "within 5% of its own in every case"
    quick = f"{fast} of {len(bi)} cases more than 5% faster"
    if slow == 0:
        return f"never more than 5% slower than its own ({quick})"
    return f"more than 5% slower than its own in {slow} of {len(bi)} cases" + (f" ({quick})" if fast else "")
