"""What a user of vLLM 0.20.x can do without the plugin, in words (notebook 02), from
:func:`flexfix.edition.tables.workarounds.workaround_table`."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["without_plugin"]


def _columns(table: pd.DataFrame, prefix: str) -> dict[int, str]:
    """``{request count: column}`` of the columns ``"<prefix>, <n> ..."`` (the model follows in parentheses)."""
    found = {}
    for c in table.columns:
        m = re.fullmatch(rf"{re.escape(prefix)}, (\d+)\b.*", str(c))
        if m:
            found[int(m.group(1))] = c
    return found


def without_plugin(table: pd.DataFrame, safety_where: str, cost_where: str) -> str:
    """Which ways around the bug answered every request as alone, at which request counts, and what each costs
    against the patched engine (the ratios of the table, as it shows them, in the table's order: one recording each,
    so they are not ranked)."""
    if table is None or table.empty:
        raise DataError("the workaround table has no rows: nothing to say")
    ways = table[~table["vLLM setting"].str.startswith("FLEXFIX_PATCH")]
    counts = _columns(table, "differed")
    speeds = _columns(table, "vs patched")
    if ways.empty or not counts or not speeds:
        raise DataError("the workaround table lacks the ways around the bug, their checks or their costs")
    safe, unsafe = [], []
    for way, row in ways.iterrows():
        said = [str(row[c]) for c in counts.values()]
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
    costs = []
    for way, row in ways.iterrows():
        ratios = listing([f"{float(row[c]):.2f} at {n} requests" for n, c in speeds.items()])
        costs.append(f"{way} ({ratios})")
    lines.append(
        "**Each costs throughput**, as a fraction of the patched engine's output tokens per second with full graphs "
        f"({cost_where}): {listing(costs, sep='; ')}. These are one recording of each engine, with no repeat: they say "
        "roughly what a setting costs, not which costs least. Notebook 05 measures how far one configuration's "
        "throughput moves from one engine to the next, and differences smaller than that rank nothing."
    )
    return markdown(*lines)
