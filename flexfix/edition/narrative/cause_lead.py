"""The one-line answer that opens notebook 01's section "Crash or wrong answer: what decides" (round 9b, r0102 D5:
the conclusion first, the method and the evidence after it), generated from the placement runs' table."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from flexfix.edition.tables.outcome_cause import placement_table

_PLACES = (("guarded", "mapped in front"), ("fenced", "unmapped in front"))


def _row(table: pd.DataFrame, place: str) -> pd.Series | None:
    """The ``as_strided`` scenario past one query block with both caches placed ``place`` and no read of its own."""
    for label, row in table.iterrows():
        if label.startswith("as_strided") and label.endswith(f"cache {place}") and "batch 16," not in label:
            return row
    return None


def _counts(row: pd.Series) -> str:
    said = [
        f"{int(row[col])} of {int(row['runs'])} {word}"
        for col, word in (
            ("wrong_result", "silently wrong"),
            ("illegal_memory_access", "crashed with an illegal memory access"),
            ("ok", "correct"),
        )
        if int(row[col])
    ]
    return ", ".join(said) or f"none of {int(row['runs'])} ended in a replay's outcome"


def answer(runs: pd.DataFrame, where: str) -> Markdown:
    """The section's answer in one line: how the ``as_strided`` runs ended with the caches ``guarded`` and
    ``fenced``, and what that says, worded from the counts (a run whose counts do not split that way says so)."""
    table = placement_table(runs)
    rows = {place: _row(table, place) for place, _ in _PLACES}
    if any(r is None or int(r["runs"]) == 0 for r in rows.values()):
        return Markdown(f"**The answer ({where}):** the placement runs lack a `guarded` or a `fenced` scenario; "
                        "the tables below show what ran.")  # fmt: skip
    parts = [f"`{place}` ({words}): {_counts(rows[place])}" for place, words in _PLACES]
    g, f = rows["guarded"], rows["fenced"]
    split = int(g["wrong_result"]) == int(g["runs"]) and int(f["illegal_memory_access"]) == int(f["runs"])
    verdict = (
        "the same misread cells crash the replay where the memory in front of the KV cache is unmapped and give a "
        "silently wrong answer where it is mapped: the copy makes the misread, the memory in front decides which of "
        "the two it becomes"
        if split
        else "the placement alone did not decide the outcome in these runs: the table below gives each scenario"
    )
    return Markdown(
        f"**The answer ({where}):** the `as_strided` runs past one query block, caches placed by hand: "
        f"{'; '.join(parts)}. So {verdict}. The method and the evidence follow."
    )


def recordings_tally(names: list[str], ends: list[dict], split: list) -> str:
    """Each recording's outcomes on the (batch, seed) runs ``split`` that ended two ways, ``ends`` per recording
    mapping a run to its set of statuses (r0102 round 12, D2: the plain fact before the caveats)."""
    from flexfix.edition.narrative import listing

    said = []
    for name, end in zip(names, ends):
        counts = pd.Series([st for key in split for st in end.get(key, ())]).value_counts()
        said.append(f"{name}: {listing([f'{n} of {len(split)} `{st}`' for st, n in counts.items()]) or 'none run'}")
    return listing(said, sep="; ")


def split_said(split: list) -> str:
    """The (batch, seed) runs that ended two ways, batch by batch: seeds listed once per batch."""
    from flexfix.edition.narrative import listing

    by_batch = {b: [s for bb, s in split if bb == b] for b in sorted({b for b, _ in split})}
    return listing(
        [f"batch {b} seed {s[0]}" if len(s) == 1 else f"batch {b} on seeds {listing(s)}" for b, s in by_batch.items()]
    )
