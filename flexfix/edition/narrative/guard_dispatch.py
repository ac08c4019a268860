"""Notebook 07's dispatch table computed with the capture list its recorded engines ran with (flexfix's
:data:`flexfix.measure.engine_sweep.CAPTURE_SIZES`, passed to vLLM as ``cudagraph_capture_sizes``), and the words
under it: that list, the FULL graphs each engine's guard counted, and vLLM's default list in one sentence.

:func:`flexfix.edition.glossary.decode_dispatch` asks the same dispatcher with vLLM's default rule (the servers of
notebook 06 ran it); this module passes the engines' own list instead."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown

__all__ = ["counts_run", "decode_dispatch", "engine_sizes", "graph_counts", "with_engines"]


def decode_dispatch(engines, capture_sizes=None) -> pd.DataFrame:
    """:func:`flexfix.edition.glossary.decode_dispatch` for each ``(max_num_seqs, batch)`` in ``engines``, with
    ``capture_sizes`` (default: the recorded engines' :data:`~flexfix.measure.engine_sweep.CAPTURE_SIZES`); the list
    in ``attrs["capture_sizes"]``."""
    from flexfix.edition.glossary import decode_dispatch as dispatch
    from flexfix.measure.engine_sweep import CAPTURE_SIZES

    sizes = sorted(CAPTURE_SIZES if capture_sizes is None else capture_sizes)
    table = dispatch(engines, capture_sizes=sizes)
    table.attrs["capture_sizes"] = sizes
    return table


def with_engines(cases: pd.DataFrame, engines: pd.DataFrame) -> pd.DataFrame:
    """:func:`decode_dispatch`'s table with an ``engines`` column first: the recorded engines (``engines``: their
    :func:`flexfix.edition.tables.guard.engine_guard` table) that ran each row's ``max_num_seqs`` and kept its batch
    (their ``requests`` column), by the name the engine table gives them."""
    named = []
    for _, row in cases.iterrows():
        m, batch = int(row["max_num_seqs"]), str(int(row["decode batch"]))
        ran = engines[
            (pd.to_numeric(engines["max_num_seqs"]) == m)
            & engines["requests"].astype(str).map(lambda r, b=batch: b in r.split(","))
        ]
        named.append("; ".join(ran["engine"].astype(str)) or "none recorded")
    table = cases.copy()
    table.insert(0, "engines", named)
    return table


def engine_sizes(cases: pd.DataFrame) -> str:
    """Under :func:`decode_dispatch`'s table: the list it was computed with, the FULL decode graphs it gives each
    ``max_num_seqs`` of the table, and vLLM's default rule in one sentence (what it would capture instead)."""
    from flexfix.edition.glossary import _configured as default_config

    def _default_sizes(m: int) -> list[int]:
        return sorted(default_config(m).compilation_config.cudagraph_capture_sizes)

    sizes = cases.attrs["capture_sizes"]
    full = [f"`max_num_seqs` {m}: {', '.join(str(s) for s in sizes if s <= m)}" for m in _maxima(cases)]
    default = _default_against_own(sizes, {m: _default_sizes(m) for m in _maxima(cases)})
    return markdown(
        f"**The capture sizes the recorded engines ran with**: {', '.join(str(s) for s in sizes)} "
        "(`flexfix.measure.engine_sweep.CAPTURE_SIZES`, passed to vLLM as `cudagraph_capture_sizes`, which replaces "
        "vLLM's default rule; the table above is computed with this list). A capture size counts a step's tokens, "
        "not its requests (a decode step holds one token per request); FULL decode graphs exist only at the sizes up "
        f"to `max_num_seqs`: {'; '.join(full)}. Each row's `padded to` is the next size of the list at or above its "
        "batch. vLLM's default rule, used where no list is given (1, 2, 4, then multiples of 8 up to twice "
        f"`max_num_seqs`), would give these engines {default}."
    )


def _default_against_own(sizes: list[int], default: dict[int, list[int]]) -> str:
    """The FULL decode graphs of vLLM's default list (``default``: its sizes per ``max_num_seqs``) against those of
    the engines' own list ``sizes``, per ``max_num_seqs``: as many, more or fewer, each group said once."""
    groups: dict[str, list[str]] = {"as many": [], "more": [], "fewer": []}
    for m, theirs in default.items():
        own = len([s for s in sizes if s <= m])
        new = len([s for s in theirs if s <= m])
        if new == own:
            groups["as many"].append(f"{m} ({own})")
        else:
            groups["more" if new > own else "fewer"].append(f"{m} ({new} instead of {own})")
    said = [f"{word} for `max_num_seqs` {listing(items)}" for word, items in groups.items() if items]
    return "FULL decode graphs: " + "; ".join(said)


def _maxima(cases: pd.DataFrame) -> list[int]:
    return list(dict.fromkeys(int(v) for v in cases["max_num_seqs"]))


def graph_counts(cases: pd.DataFrame, engines) -> str:
    """The FULL graphs each recorded engine's guard counted (``graphs_captured``, the engine tables' ``graphs
    captured`` column) against the list's sizes up to its ``max_num_seqs``; engines without a count are named
    apart.  ``engines``: recorded engine tables (rows with ``records``)."""
    from flexfix.edition.tables.guard import guard_summary, max_num_seqs

    sizes = cases.attrs["capture_sizes"]
    counted: dict[int, set[int]] = {}
    wrong, unknown = [], 0
    for table in engines:
        for _, r in table.iterrows():
            captured = guard_summary(r["records"]).get("graphs_captured")
            if not captured:
                unknown += 1
                continue
            m = max_num_seqs(r)
            counted.setdefault(m, set()).add(int(captured))
            if int(captured) != len([s for s in sizes if s <= m]):
                wrong.append(f"{r.get('engine')} counted {captured}")
    per = [f"{len([s for s in sizes if s <= m])} for `max_num_seqs` {m}" for m in sorted(counted)]
    said = (
        "the guard counted exactly that many FULL graphs captured in every engine that recorded a count (the "
        "`graphs captured` column of the table below and of *No false alarms*' tables): " + listing(per)
        if counted and not wrong
        else "the guard's counts of captured FULL graphs differ from that list in " + listing(wrong)
        if wrong
        else "no engine here recorded how many graphs it captured"
    )
    if unknown and counted:
        said += f"; {unknown} engine{'s' * (unknown != 1)} recorded no count"
    return markdown(f"**The engines' own counts agree with that list**: {said}." if counted and not wrong else said)


def counts_run(engines: pd.DataFrame) -> str:
    """Before the engines under ``FLEXFIX_GUARD=error``: the request counts they ran (``engines``: their
    :func:`flexfix.edition.tables.guard.engine_guard` table, ``engine``, ``requests`` and ``max_num_seqs``), and why
    those: each past one query block, a selection planned by :mod:`flexfix.measure.guard_sets` at this commit, not
    every count at which another notebook's engines faulted or answered wrongly (notebook 01's vary with the run)."""
    from flexfix.integration.engine import SCENARIOS
    from flexfix.measure.engine_sweep import REQUESTS
    from flexfix.mechanism.paged import Q_BLOCK

    rows = [
        (int(r["requests"]), int(r["max_num_seqs"]), "BI forced" in str(r["engine"])) for _, r in engines.iterrows()
    ]
    own = sorted({n for n, m, forced in rows if n == m and not forced})
    forced = sorted({n for n, _, bi in rows if bi})
    larger = sorted({(n, m) for n, m, bi in rows if n != m and not bi})
    ran = [f"{listing(own)} requests, each in an engine whose `max_num_seqs` is its count"] * bool(own)
    ran += [
        f"{listing(forced)} again with `VLLM_BATCH_INVARIANT=1` and `supports_batch_invariance` forced True"
    ] * bool(forced)
    ran += [f"{n} again in an engine of `max_num_seqs` {m}" for n, m in larger]
    scenarios = [name for name in ("b", "d") if name in SCENARIOS]

    def why(n: int) -> str | None:
        if n == Q_BLOCK + 1:
            return f"{n} the smallest such count"
        if n % Q_BLOCK == 0 and n // Q_BLOCK == 2:
            return f"{n} two full query blocks"
        if any(n in SCENARIOS[name].requests for name in scenarios):
            named = [name for name in scenarios if n in SCENARIOS[name].requests]
            named = [f"({name})" for name in named]
            return f"{n} the count of notebook 01's engine scenario{'s' * (len(named) > 1)} {listing(named)}"
        if n == max(REQUESTS):
            return f"{n} the largest batch of notebook 04's engine sweep"
        return None

    counts = sorted({n for n, _, _ in rows})
    below = [n for n in counts if n <= Q_BLOCK]
    reasons = [r for r in (why(n) for n in counts if n > Q_BLOCK) if r]
    past = (
        f"Each count is past one query block (more than {Q_BLOCK} requests), where stock 0.20.0's copy can misread"
        if not below
        else f"{listing(below)} requests fit in one query block, where no copy misreads; the others are past it"
    )
    again = (
        f"; {listing([str(n) for n, _ in larger])} again in a larger `max_num_seqs`, because what vLLM runs a batch "
        "with depends on it (the dispatch table below gives each)"
        if larger
        else ""
    )
    return markdown(  # r22 D12: three points, one bullet each, not one long paragraph
        "**Which request counts these engines ran, and why**:",
        "* One fresh engine each at "
        + listing(ran, "; ")
        + " (the engine table's `requests` and `max_num_seqs`).\n* "
        + past
        + (f": {listing(reasons)}" if reasons else "")
        + again
        + ".\n* They are a selection, not a sweep: `flexfix.measure.guard_sets` plans these counts at this commit (the "
        "recordings, made at their own commits, keep the counts each engine ran, not when or why they were "
        "chosen), and these engines "
        "ran these counts only, not every count at which notebook 01's engines faulted or answered wrongly (its "
        "*Where the crash starts* and *Every request checked* give those counts, for the run it shows).",
    )
