"""The result of a kernel-level sweep first, in a few bullets (r0305 D1): which configurations kept the needle
bitwise the same in every batch, and what the others did, grouped by kernel options, launch and copy.  The
evidence (counts, distances, positions) follows under the verdict table, from the same cells."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["kernel_lead", "shared_configs", "sweep_widths"]


def _none_from(cells: pd.DataFrame, kind) -> int | None:
    """The smallest batch size from which no cell produced a result and every cell came to ``kind`` (a predicate on
    the outcome): the sizes from there on all failed that way.  None where a larger size still ran."""
    failed = cells.groupby("batch")["outcome"].apply(lambda s: bool(s.map(kind).all()))
    start = None
    for batch in sorted(failed.index, reverse=True):
        if not failed[batch]:
            break
        start = int(batch)
    return start


def _failure_words(cells: pd.DataFrame, kind, every: str, some: str) -> str | None:
    """``every`` ("no kernel built from 17 requests on") only from the size on where no cell produced a result;
    sizes before it where only some positions failed that way are named with ``some`` ("kernel errors at 15 and 16
    requests")."""
    hit = cells[cells["outcome"].map(kind)]
    if hit.empty:
        return None
    start = _none_from(cells, kind)
    partial = sorted(int(b) for b in hit["batch"].unique() if start is None or b < start)
    parts = []
    if partial:
        parts.append(f"{some} at {listing(partial)} requests")
    if start is not None:
        parts.append(f"{every} from {plural(start, 'request')} on")
    return " and ".join(parts) if len(parts) < 2 else f"{parts[0]}, {parts[1]}"


def _kernel_headline(cells: pd.DataFrame) -> str:
    """What one configuration's cells mean, in a few words, before the evidence.  "No kernel built" (or "broken")
    from a batch size on only where no cell at that size or after it produced a result."""
    equal = cells["bitwise_equal"].fillna(False).astype(bool)
    if equal.all():
        return "batch-invariant"
    parts = []
    ok = cells[cells["outcome"] == "ok"]
    if (~ok["bitwise_equal"].fillna(False).astype(bool)).any():
        parts.append("varies with the batch")
    from flexfix.measure.outcomes import CRASHES

    crashed = _failure_words(cells, lambda o: o in CRASHES, "crashed", "crashed")
    wrong = _failure_words(cells, lambda o: o == "wrong_result", "wrong", "wrong")
    other = _failure_words(cells, lambda o: o not in ("ok", "error", "wrong_result", *CRASHES), "refused", "refused")
    errors = _failure_words(cells, lambda o: o == "error", "no kernel built", "kernel errors")
    parts += [p for p in (crashed, wrong, other, errors) if p]
    return listing(parts)


def _launches(pairs: set[tuple[str, str]]) -> str:
    """``{("eager", "sliced"), ("eager", "as_strided"), ("graph", "sliced")}`` -> ``"eager, both copies; graph,
    `sliced` copy"``."""
    copies = sorted({c for _, c in pairs}, reverse=True)
    out = []
    for launch in dict.fromkeys(sorted((p[0] for p in pairs), key=lambda x: (x != "eager", x))):
        mine = sorted({c for la, c in pairs if la == launch}, reverse=True)
        said = "both copies" if len(mine) > 1 and mine == copies else listing([f"`{c}`" for c in mine]) + " copy"
        out.append(f"{launch}, {said}")
    return "; ".join(out)


def _who(configs: list[str]) -> str:
    """The configurations of one result, by kernel options (the name's head), with their launches and copies."""
    by_prefix: dict[str, set[tuple[str, str]]] = {}
    for name in configs:
        prefix, launch, copy = name.rsplit(", ", 2)
        by_prefix.setdefault(prefix, set()).add((launch, copy))
    groups: dict[str, list[str]] = {}
    for prefix, pairs in by_prefix.items():
        groups.setdefault(_launches(pairs), []).append(f"`{prefix}`")
    return "; ".join(f"{listing(prefixes)} ({launches})" for launches, prefixes in groups.items())


def kernel_lead(table: pd.DataFrame, where: str) -> str:
    """A bullet per result (the headlines of :func:`invariance.kernel_sweep`), saying which configurations got it;
    the evidence is under the verdict table.  ``table``: cells :func:`invariance.check_kernel_cells` checked."""
    said: dict[str, list[str]] = {}
    for config, cells in table.groupby("config", sort=False):
        said.setdefault(_kernel_headline(cells), []).append(str(config))
    order = sorted(said, key=lambda head: head != "batch-invariant")
    n = table["config"].nunique()
    lines = [f"* **{head}**: {len(said[head])} of {n} configurations, {_who(said[head])}." for head in order]
    return markdown(
        f"**Result of {where}** (the evidence, cell by cell, is under the verdict table below)",
        "\n".join(lines),
        _lead_words(table, " ".join(order)) + _first_stays(table),
    )


def _lead_words(table: pd.DataFrame, heads: str) -> str:
    """The bullets' words that the definitions under them name otherwise, said once here (r13 D5): *wrong*, and
    *no kernel built* / *kernel errors*, the verdict table's `kernel errors` counted under `errors`."""
    words = []
    if "wrong" in heads:
        words.append("*wrong* is a silently wrong result (past the fp32 reference's tolerance; nothing crashed)")
    if "no kernel built" in heads or "kernel errors" in heads:
        words.append(
            "*no kernel built* and *kernel errors* are what the verdict table calls `kernel errors` and counts "
            "under `errors`: a kernel the compiler would not build, no result and no crash"
        )
    return ("In these lines " + listing(words, "; ") + ".") if words else ""


def _first_stays(table: pd.DataFrame) -> str:
    """Where every *wrong* cell is past position ``first`` and the ``first`` cells of the same configurations and
    batch sizes stayed bitwise equal, that said (r13 D5): the needle at ``first`` sits in query block 0, read right."""
    wrong = table[table["outcome"] == "wrong_result"]
    if wrong.empty or (wrong["position"] == "first").any():
        return ""
    keys = set(zip(wrong["config"], wrong["batch"]))
    same = pd.Series([k in keys for k in zip(table["config"], table["batch"])], index=table.index)
    first = table[(table["position"] == "first") & same]
    if first.empty or not first["bitwise_equal"].fillna(False).astype(bool).all():
        return ""
    return (
        " At those batch sizes, the needle at position `first` (in query block 0, read right) stayed bitwise equal: "
        "the *wrong* cells are at the later positions."
    )


def shared_configs(here: pd.DataFrame, recorded: pd.DataFrame, here_name: str, recorded_name: str) -> str:
    """Which configurations two kernel sweeps share (r11 A1), from their cells: the recording's configurations, those
    this run's sweep ran too, and, for each shared one, the verdict in each sweep where they differ.  The sweeps ran
    with sizes of their own, so a shared configuration can come out differently."""
    from flexfix.measure.invariance import verdicts

    theirs = list(dict.fromkeys(recorded["config"].astype(str)))
    ours = list(dict.fromkeys(here["config"].astype(str)))
    shared = [c for c in theirs if c in ours]
    head = f"**Which configurations {recorded_name} and {here_name} share.** "
    head += f"The recording ran {len(theirs)}: {_who(theirs)}."
    if not shared:
        return markdown(head + f" None of them is among the {len(ours)} of {here_name}: no configuration ran in both.")
    only_here = [c for c in ours if c not in shared]
    said = (
        f" {here_name[:1].upper() + here_name[1:]} ran the same {len(ours)}"
        if not only_here and len(shared) == len(theirs)
        else f" {len(shared)} of them {'is' if len(shared) == 1 else 'are'} among the {len(ours)} of {here_name} "
        f"({listing([f'`{c}`' for c in shared])}); the others ran in one of the two sweeps only"
    )

    def verdict(table: pd.DataFrame, config: str) -> str:
        return str(verdicts(table[table["config"].astype(str) == config])["verdict"].iloc[0])

    apart = [(c, verdict(here, c), verdict(recorded, c)) for c in shared]
    pairs: dict[tuple[str, str], list[str]] = {}  # r20 D7: configurations with the same two verdicts, said once
    for c, a, b in apart:
        if a != b:
            pairs.setdefault((a, b), []).append(f"`{c}`")
    differ = [f"{listing(cs)}: `{a}` in {here_name}, `{b}` in the recording" for (a, b), cs in pairs.items()]
    n_differ = sum(len(cs) for cs in pairs.values())
    outcome = (
        ". The two sweeps ran with sizes of their own; "
        + ("it" if len(shared) == 1 else "each")
        + " came to the same verdict in both."
        if not differ
        else ". The two sweeps ran with sizes of their own, and the verdicts differ for "
        + listing(differ, "; ")
        + (f" (the other {len(shared) - n_differ} shared came to the same verdict)" if n_differ < len(shared) else "")
        + "."
    )
    return markdown(head + said + outcome)


def sweep_widths(sweep) -> str:
    """The ``graph`` launch's widths for a sweep (r15 D2): ``K`` of the capture step (its longest request
    ``capture_len``), of the needle's replay steps (the needle, ``needle_len``, is their longest request) and the
    persistent buffer's width ``W_max``, with how the replay compares with the capture."""
    from flexfix.mechanism import paged

    def k(tokens: int) -> int:
        return paged.Q_BLOCK * paged.cdiv(int(tokens), paged.PAGE_SIZE)

    capture, replay = k(sweep.capture_len), k(sweep.needle_len)
    how = "narrower than" if replay < capture else "wider than" if replay > capture else "as wide as"
    return (
        f"graph launch widths: K at capture = {paged.Q_BLOCK} x cdiv(capture_len, {paged.PAGE_SIZE}) = {capture}; "
        f"K at replay = {paged.Q_BLOCK} x cdiv(needle_len, {paged.PAGE_SIZE}) = {replay}, {how} the capture; "
        f"W_max (the buffer's width) = {sweep.paged.w_max}"
    )


def _block_reads(lay, g: int) -> list[tuple[str, int, int]]:
    """What query block ``g``'s read window holds at replay, as runs of (what, first, last): ``own`` (its own row's
    entries first..last, at the wrong position), ``row h`` (another row's entries first..last) or ``unwritten``
    (cells first..last of the storage, which this step did not write)."""
    flat = lay.owner_replay.reshape(-1)
    where = {int(c): (r, j) for (r, j), c in np.ndenumerate(lay.cell_of)}
    runs: list[list] = []
    for cell in lay.read_at[g].tolist():
        owner = int(flat[cell]) if cell < flat.size else -1
        what, at = ("unwritten", cell) if owner < 0 else ("own" if owner == g else f"row {owner}", where[cell][1])
        if runs and runs[-1][0] == what and at == runs[-1][2] + 1:
            runs[-1][2] = at
        else:
            runs.append([what, at, at])
    return [tuple(r) for r in runs]


def sweep_windows(sweep, batches) -> str:
    """What the ``graph`` launch's misread windows hold under the ``as_strided`` copy at the sweep's own widths (r16
    B1): for each number of query blocks among ``batches`` past one, computed with
    :func:`flexfix.mechanism.layouts.stride_layout` (capture ``K`` from ``capture_len``, replay ``K`` from
    ``needle_len``, the buffer ``[G_max, W_max]``), what each query block ``g >= 1`` reads in the ``K_replay`` cells
    of its window: its own row's entries at the wrong position, another row's entries of this step, or cells this
    step did not write.  The kernel reads the first ``kv_num_blocks[g]`` of them; an entry past a row's pages is a
    ``-1`` pad."""
    from flexfix.mechanism import layouts, paged
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    def k(tokens: int) -> int:
        return paged.Q_BLOCK * paged.cdiv(int(tokens), paged.PAGE_SIZE)

    capture, replay, g_max, w_max = k(sweep.capture_len), k(sweep.needle_len), sweep.paged.g_max, sweep.paged.w_max
    by_g: dict[int, list[int]] = {}
    for b in sorted({int(b) for b in batches}):
        g = paged.cdiv(b, paged.Q_BLOCK)
        if g >= 2:
            by_g.setdefault(g, []).append(b)
    if max(capture, replay) > w_max:
        return f"misread windows at these widths: not computed (a K above the buffer's width W_max {w_max})"
    if not by_g or capture == replay:
        return (
            f"misread windows at these widths: none (K at capture {capture}, at replay {replay}; "
            f"{'no batch past one query block' if not by_g else 'the same width'})"
        )
    lines = [
        f"misread windows at these widths (as_strided copy, K {capture} at capture, {replay} at replay, "
        f"W_max {w_max}; each query block g >= 1 reads at most {replay} cells from cell g x {capture}: only the first "
        "kv_num_blocks of them, its row's count of pages; and a row's entries past its pages are -1 pads):"
    ]  # r17 D2: the window is an upper bound, not what the kernel reads
    kinds: dict[int, set[str]] = {}
    for g, bs in by_g.items():
        lay = layouts.stride_layout(
            copy_to_persistent_as_strided,
            "as_strided",
            g=g,
            g_max=max(g_max, g),
            w_max=w_max,
            k_capture=capture,
            k_replay=replay,
        )
        size = f"{bs[0]}-{bs[-1]}" if len(bs) > 1 else f"{bs[0]}"
        parts = []
        for q in range(1, g):
            said = []
            for what, lo, hi in _block_reads(lay, q):
                kinds.setdefault(g, set()).add(what if what in ("own", "unwritten") else "other")
                span_ = f"{lo}-{hi}" if hi > lo else f"{lo}"
                if what == "own":
                    said.append(f"its own row's entries {span_} (at the wrong position)")
                elif what == "unwritten":
                    said.append(f"cells {span_} this step did not write")
                else:
                    said.append(f"{what}'s entries {span_}")
            parts.append(f"block {q}: " + ", then ".join(said))
        lines.append(f"  {size} requests ({g} query blocks): " + "; ".join(parts))
    return "\n".join([*lines, "  " + _windows_summary(kinds)])


def _windows_summary(kinds: dict[int, set[str]]) -> str:
    """One line over the numbers of query blocks: from which one on the windows hold another row's entries."""
    with_other = [g for g, k in sorted(kinds.items()) if "other" in k]
    without = [g for g, k in sorted(kinds.items()) if "other" not in k]
    if not with_other:
        return "so no misread window here holds another row's entries of this step"
    if not without:
        return "so every number of query blocks here has windows holding another row's entries of this step"
    names = {"own": "its own row's entries", "unwritten": "cells this step did not write"}
    held = " and ".join(names[k] for k in ("own", "unwritten") if any(k in kinds[g] for g in without))
    return (
        f"so with {listing([str(g) for g in without])} query blocks the windows hold no other row's entries "
        f"({held} only); from {with_other[0]} query blocks on, they hold other rows' entries too"
        + ("" if max(without) < with_other[0] else " (not at every size: see the lines above)")
    )


def windows_hold(sweep, batches) -> set[str]:
    """Which kinds of cell (``own``, ``other``, ``unwritten``) the misread windows of :func:`sweep_windows` hold,
    over all its batch sizes: what a sentence about them may name."""
    from flexfix.mechanism import layouts, paged
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    def k(tokens: int) -> int:
        return paged.Q_BLOCK * paged.cdiv(int(tokens), paged.PAGE_SIZE)

    kinds: set[str] = set()
    if max(k(sweep.capture_len), k(sweep.needle_len)) > sweep.paged.w_max:
        return kinds
    for g in sorted({paged.cdiv(int(b), paged.Q_BLOCK) for b in batches} - {1}):
        lay = layouts.stride_layout(
            copy_to_persistent_as_strided,
            "as_strided",
            g=g,
            g_max=max(sweep.paged.g_max, g),
            w_max=sweep.paged.w_max,
            k_capture=k(sweep.capture_len),
            k_replay=k(sweep.needle_len),
        )
        for q in range(1, g):
            kinds |= {w if w in ("own", "unwritten") else "other" for w, _, _ in _block_reads(lay, q)}
    return kinds


def positions_line(batches, positions) -> str:
    """Where each needle position puts the needle (r16 D5): its index in a batch of ``B`` requests (``first`` 0,
    ``middle`` ``B // 2``, ``last`` ``B - 1``, from :func:`flexfix.measure.needle.needle_index`) and, for each batch
    size past one query block, the query block that index lands in."""
    from flexfix.measure.needle import needle_index
    from flexfix.mechanism import paged

    rule = {"first": "index 0", "middle": "index B // 2", "last": "index B - 1"}
    lines = ["needle positions in a batch of B requests: " + "; ".join(f"{p} = {rule[p]}" for p in positions)]
    for b in sorted({int(b) for b in batches}):
        if b > paged.Q_BLOCK:
            at = {p: needle_index(b, p) for p in positions}
            lines.append(
                f"  B = {b}: "
                + ", ".join(f"{p} at index {i} (query block {i // paged.Q_BLOCK})" for p, i in at.items())
            )
    return "\n".join(lines)
