"""What a user of vLLM 0.20.x can do without the plugin, in words (notebook 02), from
:func:`flexfix.edition.tables.workarounds.workaround_table`; and what the plugin's patch cycle checks mean."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import DataError, require
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["without_plugin", "patch_cycle"]


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


# What each check of notebook 02's patch cycle means, when it holds and when it does not.
_CYCLE = {
    "before: copy keeps the destination's strides": (
        "before `apply()` the installed copy already kept the buffer's strides (this vLLM carries the fix)",
        "before `apply()` the installed copy gave the view the source's strides: the bug",
    ),
    "before: supports_batch_invariance()": (
        "before `apply()` FlexAttention already accepted batch invariance",
        "before `apply()` FlexAttention refused batch invariance",
    ),
    "apply() patched": ("`apply()` patched both", "`apply()` patched nothing"),
    "second apply() did nothing": ("a second `apply()` changed nothing", "a second `apply()` patched again"),
    "after: copy keeps the destination's strides": (
        "the patched copy keeps the buffer's strides",
        "**the patched copy still takes the source's strides**",
    ),
    "after: supports_batch_invariance()": (
        "FlexAttention then accepts batch invariance",
        "**FlexAttention still refuses batch invariance**",
    ),
    "revert() reverted": ("`revert()` undid the patch", "**`revert()` undid nothing**"),
    "second revert() did nothing": ("a second `revert()` changed nothing", "**a second `revert()` changed something**"),
    "reverted copy is the original object": (
        "the reverted copy is vLLM's own function object again",
        "**the reverted copy is not vLLM's own function object**",
    ),
    "reverted supports_batch_invariance() is the original value": (
        "its batch-invariance answer is the original one again",
        "**its batch-invariance answer is not the original one**",
    ),
    "inside patched(): supports_batch_invariance()": (
        "inside `patched()` FlexAttention accepts batch invariance",
        "**inside `patched()` FlexAttention still refuses batch invariance**",
    ),
    "after patched(): back to the original": (
        "after it, everything is back as it was",
        "**after `patched()` the patch is still in place**",
    ),
    "fixed torch-only runs all ok": (
        "the torch-only runs with the fixed copy matched the reference at every step",
        "**a torch-only run with the fixed copy did not match the reference**",
    ),
    "patched copy follows the 0.21.0 rule": (
        "the patched copy put every element where vLLM 0.21.0's slice puts it",
        "**the patched copy put some element elsewhere than vLLM 0.21.0's slice**",
    ),
}


def patch_cycle(checks: pd.DataFrame) -> str:
    """Notebook 02's checks of ``apply()``/``revert()``/``patched()`` (a ``check``/``value`` table), said as what
    each result means, in order; a check this function does not know is named with its value."""
    require(checks, "the patch checks", values=("check", "value"))
    said = []
    for check, value in zip(checks["check"], checks["value"]):
        meaning = _CYCLE.get(str(check))
        said.append(meaning[0 if bool(value) else 1] if meaning else f"{check}: {value}")
    return markdown(said[0][0].upper() + "; ".join(said)[1:] + ".")
