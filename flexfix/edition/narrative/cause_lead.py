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
        return Markdown(f"**The answer, {where}:** the placement runs lack a `guarded` or a `fenced` scenario; "
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
        f"**The answer, {where}:** the `as_strided` runs past one query block, caches placed by hand: "
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


def _of(cell) -> tuple[int, int] | None:
    """``(hits, total)`` of an ``"a of b"`` cell, None for a word (a control, a scenario that never replayed)."""
    head, sep, tail = str(cell).partition(" of ")
    return (int(head), int(tail)) if sep and head.isdigit() and tail.isdigit() else None


def placement_key(runs: pd.DataFrame) -> Markdown:
    """The placement table's columns, said right under it (r0102 round 14, D2: they were defined four outputs
    below), with the scenarios whose runs did not end as the driver's list predicts named and, where such a run
    answered silently wrong, what that says: its pad read went through, so the memory was mapped though unlisted."""
    from flexfix.edition.narrative import listing
    from flexfix.edition.tables import outcome_cause as t

    table = placement_table(runs)
    missed = [label for label, cell in table[t.AS_PREDICTED].items() if (c := _of(cell)) and c[0] < c[1]]
    # runs predicted to fault that answered silently wrong: their pad read went through, so it read mapped memory
    unlisted = runs[(runs["predicted"] == "illegal_memory_access") & (runs["status"] == "wrong_result")]
    scen = list(
        dict.fromkeys(t.scenario_label(*k) for k, _ in unlisted.groupby(t.SCENARIO_KEYS, sort=False, dropna=False))
    )
    miss = (
        f" It falls short in {listing([f'`{m}`' for m in missed])}"
        + (
            f"; there {len(unlisted)} run{'s' if len(unlisted) > 1 else ''} predicted to fault answered silently "
            "wrong instead: the pad read went through, so the memory in front was mapped though the driver did not "
            "list an allocation in front of both caches. The list misses some mapped memory (the bullets below "
            "count it); that is no failure of the mechanism, which needs only mapped or unmapped."
            if len(unlisted) and set(scen) <= set(missed)
            else "; the bullets below say how those runs ended."
        )
        if missed
        else ""
    )
    return Markdown(
        "*The columns:* `runs`, then how many ended in each outcome (`ok`, `wrong_result`, `illegal_memory_access`, "
        f"`{t.OWN_READ_FAULT}` for a run whose own read of those bytes faulted before any replay, `other`); "
        f"`{t.LISTED}`: of the runs for which the CUDA driver was asked, just before the first replay, in how many it "
        f"listed an allocation in front of both the K and the V cache; `{t.AS_PREDICTED}`: of the runs that read a "
        "`-1` pad and replayed, how many ended as that listing predicts (listed in front of both: silently wrong; "
        f"else an illegal memory access), `{t.NO_PAD_READ}` for a control, whose rows read no pad, and "
        f"`{t.NONE_REPLAYED}` where every run faulted in its own read; `{t.OWN_READ}`: where runs read the bytes in "
        f"front of a cache with a kernel of their own, how many of those reads went through (`read`) or faulted.{miss}"
    )


def gpu_name(prov: dict | None, device: str) -> str:
    """The GPU a set of runs ran on: its recording's provenance, or this run's device (its name on a GPU)."""
    if prov is not None:
        return str(prov.get("device_name"))
    import torch

    return torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else device


def agree(sets: list, common: set, gpus: list[str]) -> tuple[str, str]:
    """Whether the recordings of ``sets`` (what, runs, where, commit, widths; ``gpus`` the GPU of each) ended the
    (batch, seed) runs they share the same way: the conclusion in one sentence, then the caveat (r0102 round 14, D3).
    That two recordings read the same cells is said only of recordings at one commit that recorded the same width at
    every step; runs on different GPUs are said to be so, since what lies in front of the cache can differ."""
    from flexfix.edition.narrative import listing

    ends = []
    for _, runs, _, _, _ in sets:
        ends.append({(int(b), int(s)): set(g["status"]) for (b, s), g in runs.groupby(["batch", "seed"])})
    keys = sorted(k for k in set().union(*ends) if k[1] in common)
    split = [k for k in keys if len(set().union(*(e.get(k, set()) for e in ends))) > 1]
    if not split:
        return (
            "On every seed they share, the recordings below ended the same way: with the caches where PyTorch put "
            "them, none of them has a seed crash in one and answer silently wrong in another.",
            "That the outcome can flip on the same seeds is what the placement runs above show, by moving the memory "
            "in front of the caches.",
        )
    full = max(len(w) for *_, w in sets)
    same = len({(c, w) for _, _, _, c, w in sets}) == 1 and all(len(w) == full for *_, w in sets)
    short = [what for what, _, _, _, w in sets if len(w) < full]
    why = []
    if short:
        why.append(f"{listing(short)} kept the width of fewer steps than the others (the runs stopped early)")
    if len({c for _, _, _, c, _ in sets}) > 1:
        why.append("they ran at different commits")
    devices = (
        f"they ran on different GPUs ({listing(list(dict.fromkeys(gpus)))}), whose allocations, and with them what "
        "lies in front of the KV cache, can differ"
        if len(set(gpus)) > 1
        else ""
    )
    cells = (
        "at one commit and the same width at every step, so the cells they read were the same and what differed "
        "lies outside them" + (f"; {devices}" if devices else "")
        if same
        else f"whether they read the same cells is not shown: {listing(why)}" + (f"; and {devices}" if devices else "")
    )
    names = [f"{what}, on {gpu}" for (what, *_), gpu in zip(sets, gpus)]
    return (
        f"On the same runs ({split_said(split)}) the recordings below ended differently: "
        f"{recordings_tally(names, ends, split)}.",
        f"The caveat: {cells}. Only the placement runs above, which share one commit and one set of widths, show the "
        "same cells ending both ways, and what makes that difference: the memory in front of the caches.",
    )
