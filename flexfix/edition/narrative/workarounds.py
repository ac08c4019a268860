"""What a user of vLLM 0.20.x can do without the plugin, in words (notebook 02), from
:func:`flexfix.edition.tables.workarounds.workaround_table`."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import DataError
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["without_plugin"]


def without_plugin(table: pd.DataFrame, safety_where: str, cost_where: str) -> str:
    """Which ways around the bug answered every request as alone, at which request counts, and what each costs
    against the patched engine (the ratios of the table, as it shows them)."""
    if table is None or table.empty:
        raise DataError("the workaround table has no rows: nothing to say")
    ways = table[~table["vLLM setting"].str.startswith("FLEXFIX_PATCH")]
    counts = [int(c.split(", ")[1].split()[0]) for c in table.columns if c.startswith("differed, ")]
    speeds = [int(c.split(", ")[1]) for c in table.columns if c.startswith("vs patched, ")]
    if ways.empty or not counts or not speeds:
        raise DataError("the workaround table lacks the ways around the bug, their checks or their costs")
    safe, unsafe = [], []
    for way, row in ways.iterrows():
        said = [str(row[f"differed, {n} requests"]) for n in counts]
        (safe if all(s.startswith("0 of ") for s in said) else unsafe).append((way, row, said))
    lines = []
    if safe:
        named = listing([f"{w} (`{r['vLLM setting']}`)" for w, r, _ in safe], sep="; ")
        differed = listing([f"0 of {n}" for n in counts])
        lines.append(
            f"**Without the plugin, {plural(len(safe), 'setting')} kept stock 0.20.0 correct:** {named}. With each, "
            f"every request came out the same alone and among {listing([str(n) for n in counts])} at once "
            f"({differed} requests differed; {safety_where})."
        )
    for way, _, said in unsafe:
        lines.append(f"**{way} did not**: {listing(said)} requests differed alone vs together ({safety_where}).")
    last = speeds[-1]
    order = ways.assign(_r=ways[f"vs patched, {last}"].astype(float)).sort_values("_r", ascending=False)
    costs = []
    for way, row in order.iterrows():
        ratios = listing([f"{float(row['vs patched, ' + str(n)]):.2f} at {n} requests" for n in speeds])
        costs.append(f"{way} ({ratios})")
    lines.append(
        "**Each costs throughput**, as a fraction of the patched engine's output tokens per second with full graphs "
        f"({cost_where}), from the least to the most expensive at {last} requests: {listing(costs, sep='; ')}."
    )
    return markdown(*lines)
