"""What the stride-layout tables say, in words (notebook 03)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["equivalence", "misreads", "flat_cells", "k_example"]

_OWN = "entries of their own row at another position"


def k_example(name: str, k: int, page: int = 16) -> str:
    """``K`` worked out for one width parameter (r10 D2): 16 (the query block) times the pages of the step's longest
    request, and how long that request is.  A width that is not a multiple of 16 is said to be one vLLM never builds."""
    pages, rest = divmod(int(k), page)
    if rest or not pages:
        return f"{name} = {k}: not 16 x a number of pages, a width vLLM's formula never gives"
    longest = f"{(pages - 1) * page + 1} to {pages * page} tokens"
    return (
        f"{name} = {k} = 16 x {plural(pages, 'page')}: the step's longest request is {longest} long "
        f"({plural(pages, 'page')} of {page} tokens), so a query block's row has room for {plural(pages, 'page')} "
        "of each of its 16 requests"
    )


def equivalence(table: pd.DataFrame, names: tuple[str, str]) -> str:
    """Whether two copy functions agreed on every random shape (:func:`flexfix.mechanism.layouts.compare_copies`)."""
    checks = ["strides_equal", "storage_maps_equal", "values_equal"]
    require(table, "the copy comparison", values=checks)
    n = len(table)
    agree = int(table[checks].all(axis=1).sum())
    if agree == n:
        return markdown(f"{names[0]} and {names[1]}: same strides, storage cells and values on all {n} random shapes.")
    return markdown(f"**{names[0]} and {names[1]} disagree on {n - agree} of {plural(n, 'random shape')}.**")


def _kinds(layouts) -> dict[tuple[str, int, int], set[str]]:
    """Per (copy, ``K_capture``, ``K_replay``) of ``layouts`` (:class:`flexfix.mechanism.layouts.Layout`), what the
    misread cells hold (r22 D2): ``"other"`` another row's entries, ``"own"`` an entry of the block's own row at
    another position, ``"unwritten"`` a cell this step did not write."""
    from flexfix.mechanism.layouts import UNWRITTEN

    out: dict[tuple[str, int, int], set[str]] = {}
    for lay in layouts:
        flat = lay.owner_replay.reshape(-1)
        kinds = out.setdefault((lay.copy_name, lay.k_capture, lay.k_replay), set())
        for g, j in zip(*lay.misread.nonzero()):
            at = int(lay.read_at[g, j])
            owner = int(flat[at]) if at < flat.size else UNWRITTEN
            kinds.add("unwritten" if owner == UNWRITTEN else "own" if owner == g else "other")
    return out


def misreads(table: pd.DataFrame, layouts=None) -> str:
    """Per copy and replay width (:func:`flexfix.mechanism.layouts.layout_table`), led by what it means: which copies
    read every query block's own entries at replay, and which misread, in which blocks, how many cells.  With
    ``layouts`` (the table's :class:`flexfix.mechanism.layouts.Layout` objects), what the misread cells hold is said
    only of the kinds that occur at each width, not every kind that can (r22 D2)."""
    values = ("copy", "K_capture", "K_replay", "row", "misread", "cells_read", "never_written")
    require(table, "the stride layouts", values=values)
    lines, right, wrong = [], [], []
    held = _kinds(layouts) if layouts is not None else {}
    for (copy, k_capture, k_replay), group in table.groupby(["copy", "K_capture", "K_replay"], sort=False):
        bad = group[group["misread"] > 0]
        case = (copy, k_replay)
        head = f"* `{copy}`, captured at `K = {k_capture}`, replayed at `K = {k_replay}`: "
        if bad.empty:
            right.append(case)
            lines.append(head + f"every query block reads its own entries ({int(group['cells_read'].sum())} cells).")
            continue
        wrong.append(case)
        good = group[group["misread"] == 0]["row"].tolist()
        text = f"query block {listing(good)} reads its own entries; " if good else ""
        misread, read = int(bad["misread"].sum()), int(bad["cells_read"].sum())
        text += f"query blocks {listing(bad['row'].tolist())} read {misread} of {read} cells "
        unwritten = int(bad["never_written"].sum())  # a kind of cell named only where this replay read one
        blocks = bad[bad["never_written"] > 0]["row"].tolist()  # r17 D6: which blocks, not "the later" ones
        where = f"query block{'s' if len(blocks) > 1 else ''} {listing(blocks)} only" if unwritten else ""
        kinds = held.get((copy, k_capture, k_replay), {"other", "own"})
        said = [w for k, w in (("other", "another row's entries"), ("own", _OWN)) if k in kinds]
        text += f"that do not hold the entry they ask for ({' or '.join(said)}" + (
            f"{', or ' if said else ''}cells not written this step: {unwritten} of them, in {where})"
            if unwritten
            else ")"
        )
        lines.append(head + text + ".")
    return markdown(_lead(wrong, right), "\n".join(lines))


def _lead(wrong: list[tuple[str, int]], right: list[tuple[str, int]]) -> str:
    """What the table means, per copy, in one plain sentence (not a verdict in bold): at which replay widths it hands
    query blocks wrong cells, and where not."""
    if not wrong:
        return "In short: every replay reads the right cells, with either copy."
    parts = []
    for copy in dict.fromkeys(c for c, _ in wrong + right):
        bad = [f"`K = {k}`" for c, k in wrong if c == copy]
        good = [f"`K = {k}`" for c, k in right if c == copy]
        if bad and not good:
            parts.append(
                f"`{copy}` hands the query blocks after the first wrong cells at every replay width here "
                f"({listing(bad)})"
            )
        elif bad:
            parts.append(f"`{copy}` hands wrong cells at {listing(bad)} and the right ones at {listing(good)}")
        else:
            parts.append(
                f"`{copy}` hands every query block its own entries at every replay width here ({listing(good)})"
            )
    return f"In short: {'; '.join(parts)}."


def flat_cells(cells: dict[str, int], w_max: int) -> str:
    """Where flat storage offsets (``name -> offset``, counted from the buffer's first cell, as the text counts them)
    sit in the storage figures, which draw the buffer ``w_max`` cells to a buffer row (r9 D12)."""
    said = [
        f"storage cell `{name}` = {cell} is buffer row {cell // w_max}, column {cell % w_max}"
        for name, cell in cells.items()
    ]
    return markdown(
        f"**Flat storage cells in the figure** (drawn `W_MAX` = {w_max} cells to a buffer row): "
        + "; ".join(said)
        + "."
    )
