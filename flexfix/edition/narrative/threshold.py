"""Where the crash-threshold engines of notebook 01 completed and faulted, in words, with what vLLM's dispatcher runs
each of their decode batches with (split from :mod:`.reproduce`, which re-exports it)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural

__all__ = ["crash_threshold", "completed_full"]


def crash_threshold(table: pd.DataFrame, dispatch: pd.DataFrame | None = None) -> str:
    """From :func:`flexfix.edition.tables.threshold_table`: where each way of counting completed and where it died,
    led by the first fault of each; with ``dispatch`` (:func:`flexfix.edition.glossary.decode_dispatch` of the
    engines' ``max_num_seqs`` and counts), which counts past one query block start outside a FULL graph, whether
    they completed or faulted."""
    require(table, "the crash threshold", values=("how", "outcome", "requests"))
    lines, firsts = [], []
    for how, group in table.groupby("how", sort=False):
        done = group[group["outcome"] == "completed"]["requests"]
        died = group[group["outcome"] != "completed"]
        counts = listing(sorted({int(n) for n in done}))  # each count tried, not a range
        line = (
            f"* {how}: completed at {counts} requests (the counts tried)" if len(done) else f"* {how}: none completed"
        )
        if len(died):
            first = int(died["requests"].min())
            firsts.append(f"{first} requests ({how})")
            line += _first_fault(group, died, first)
        else:
            firsts.append(f"none ({how})")
        lines.append(line + ".")
    numbers = {f.split(" (")[0] for f in firsts}
    both = len(numbers) == 1 and len(firsts) > 1 and not firsts[0].startswith("none")
    where = f"{numbers.pop()} in both ways of counting" if both else listing(firsts)
    from flexfix.mechanism import paged

    # r0102 round 15, D5: the heading's question answered in one line first, the details after it; round 22, D6: the
    # first fault is said there once, the bullets give each way's counts, and the paragraph between says what it is not
    answer = (
        f"**The short answer:** any count above one query block ({paged.Q_BLOCK} requests) can misread, once a step "
        "with two or more query blocks replays a FULL graph captured at another width. These crash-threshold engines "
        f"first faulted at {where}; the bullets below give each way's counts."
    )
    return markdown(
        answer,
        "**What that first fault is, and is not.** It is where these engines first faulted, not where answers first "
        "go wrong: their answers were not checked (the every-request engines of the next section check them, batch "
        "by batch, and say at which batch each of them died, which can be fewer requests). Nor is it the fewest "
        "requests that can fault: an engine started with another `max_num_seqs` captures other graphs. More than one "
        "query block in flight is necessary for a fault, not sufficient, and where these engines faulted was measured "
        "only in this setting (this model, these prompts, this GPU, these `max_num_seqs`), not a constant of the bug. "
        "A count that *completed* is not evidence that it read correctly: each fresh engine starts with "
        "`max_num_seqs` equal to its count, which sets the batch sizes it captures full graphs for and so whether its "
        "batch replays one at all, and a completed run could have misread silently.",
        "\n".join(lines) + _outside_graphs(table, dispatch),
    )


def _first_fault(group: pd.DataFrame, died: pd.DataFrame, first: int) -> str:
    """The first fault of one way of counting: its outcome and tries, the count below it, and whether larger counts
    completed after it (then it is no threshold past which every count faults)."""
    at_first = died[died["requests"] == first]
    tries = group[group["requests"] == first]
    text = (
        f"; first fault at {first} requests "
        f"({listing(sorted(OUTCOME_WORDS.get(o, o) for o in set(at_first['outcome'])))}, "
        f"{len(at_first)} of {plural(len(tries), 'try', 'tries')})"
    )
    later = sorted({int(n) for n in group[(group["outcome"] == "completed") & (group["requests"] > first)]["requests"]})
    below = group[(group["requests"] == first - 1)]
    if len(below):
        ok_below = int((below["outcome"] == "completed").sum())
        text += f", while {first - 1} completed {ok_below} of {plural(len(below), 'try', 'tries')}"
    elif len(tried := group[group["requests"] < first]["requests"]):
        gap = f"no count from {int(tried.max()) + 1} to {first - 1} was tried"
        if int(tried.max()) + 1 == first - 1:
            gap = f"count {first - 1} was not tried"
        text += f"; {gap}" + ("" if later else f": the first fault lies there or at {first}")
    if later:
        text += (
            f"; larger counts completed ({listing(later)} requests), so {first} is an isolated fault, not a count "
            "past which every batch faults"
        )
    return text


def _outside_graphs(table: pd.DataFrame, dispatch: pd.DataFrame | None) -> str:
    """The counts past one query block, completed or not, whose decode batch vLLM's dispatcher starts with no FULL
    graph; what a completion there says, and what a fault there says about the dispatcher."""
    if dispatch is None:
        return ""
    require(
        dispatch,
        "the decode dispatch",
        values=("max_num_seqs", "largest FULL decode graph", "decode batch", "runs with"),
    )
    tried = _tried_modes(table, dispatch)
    outside = [t for t in tried if t[2] != "FULL"]
    if not outside:
        return "\n* Every count tried past one query block starts on a FULL decode graph (the dispatch table)."
    counts = sorted({b for _, b, _, _, _ in outside})
    text = (
        f"\n* By vLLM's own dispatcher (the table above), a decode batch of {listing(counts)} "
        "requests on an engine with those `max_num_seqs` is padded past its largest FULL decode graph and starts "
        "without one: attention outside any graph reads `kv_indices` as written and cannot misread *at that batch "
        "size*. A batch that shrinks as its requests finish, to a size with a FULL graph and still more than one "
        "query block, replays that graph and can misread; these engines record each batch they were given and how "
        "it ended, not the size of each decode step, so whether a batch shrank that far is not known."
    )
    done = sorted({b for _, b, _, ok, _ in outside if ok})
    if done:
        text += f" At {listing(done)} requests 'completed' therefore says nothing about the bug."
    died = sorted({b for _, b, _, _, bad in outside if bad})
    if died:
        largest = sorted({_largest(dispatch, m, b) for m, b, _, _, bad in outside if bad})
        many = len(died) > 1
        text += (
            f" Yet the engine{'s' * many} at {listing(died)} requests faulted: vLLM's dispatch of "
            f"{'each' if many else 'the'} batch as it started does not explain "
            f"{'these faults' if many else 'this fault'}. By this notebook's "
            "mechanism a fault needs a step that replays a FULL graph: a later one, for instance once the batch had "
            "shrunk to "
            f"{listing(largest, sep=' or ')} requests or fewer (the largest FULL decode graph, in the table above), "
            "and these results do not record such a step."
        )
    return text + (
        " That holds for these engines' `max_num_seqs` only: an engine started with a larger one holds FULL graphs "
        "for more sizes, and can replay one at the same count (the every-request engines below print theirs)."
    )


def _largest(dispatch: pd.DataFrame, max_num_seqs: int, batch: int) -> int:
    row = dispatch[(dispatch["max_num_seqs"] == max_num_seqs) & (dispatch["decode batch"] == batch)]
    return int(row["largest FULL decode graph"].iloc[0])


def _tried_modes(table: pd.DataFrame, dispatch: pd.DataFrame) -> list[tuple[int, int, str, bool, bool]]:
    """(max_num_seqs, decode batch, how it runs, completed on some try, faulted on some try) of each count past one
    query block that an engine of the table was given."""
    past = table[table["requests"] > 16]
    rows = []
    for m, b, mode in zip(dispatch["max_num_seqs"], dispatch["decode batch"], dispatch["runs with"]):
        tries = past[(past["max_num_seqs"] == m) & (past["requests"] == b)]
        if len(tries):
            ok = bool((tries["outcome"] == "completed").any())
            rows.append((int(m), int(b), mode, ok, bool((tries["outcome"] != "completed").any())))
    return rows


def completed_full(table: pd.DataFrame, dispatch: pd.DataFrame) -> list[int]:
    """The counts past one query block that an engine of the crash-threshold table completed while vLLM's dispatcher
    replays a FULL decode graph for them (:func:`crash_threshold`'s table and dispatch)."""
    return sorted({b for _, b, mode, ok, _ in _tried_modes(table, dispatch) if mode == "FULL" and ok})
