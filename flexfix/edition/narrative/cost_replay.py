"""05's headline on the CUDA-graph replay's speed-up, decided from the ratios (round 18, A1).

"A replay matters most where the kernel is short" held where the largest speed-up sat at the smallest case, but the
recorded speed-ups do not fall steadily with the kernel's size: a larger batch or a longer context gained more than
its neighbour in some pairs. The headline says the first only where it holds, and counts the second.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["headline", "rising_pairs"]


def rising_pairs(ratios: pd.DataFrame) -> tuple[int, int]:
    """(pairs where the larger case had the larger ``graph_speedup``, all pairs): neighbours one step apart in batch
    (same context) or in context (same batch)."""
    rising = total = 0
    for fixed, moving in (("context", "batch"), ("batch", "context")):
        for _, group in ratios.groupby(fixed):
            speed = group.sort_values(moving)["graph_speedup"].to_list()
            for small, large in zip(speed, speed[1:]):
                total += 1
                rising += large > small
    return rising, total


def headline(ratios: pd.DataFrame) -> str:
    """The bold lead of 05's replay bullet and, where the speed-up does not fall with every step, how often not."""
    size = ratios["batch"] * ratios["context"]
    smallest = ratios.loc[size.idxmin()]
    best = ratios.loc[ratios["graph_speedup"].idxmax()]
    at_smallest = (int(best["batch"]), int(best["context"])) == (int(smallest["batch"]), int(smallest["context"]))
    lead = (
        "**A CUDA-graph replay matters most where the kernel is short**"
        if at_smallest
        else "**A CUDA-graph replay's largest speed-up was not at the shortest kernel**"
    )
    rising, total = rising_pairs(ratios)
    if total and rising:
        lead += (
            f" (though not steadily: in {rising} of {total} pairs of neighbouring cases, one step apart in batch or "
            "in context, the larger one gained more)"
        )
    elif total:
        lead += " (and less with every step in batch or in context)"
    return lead
