"""The cells notebook 01's bug can misread in a kernel sweep (notebook 04), and what they came to in each sweep shown:
a crash or a wrong answer, with the sizes each sweep ran with; and how long the needle's rows were where a kernel
moved."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural
from flexfix.edition.narrative.misread_lead import one_outcome, takeaway
from flexfix.measure.outcomes import CRASHES

__all__ = [
    "misread_cells",
    "counted",
    "sweep_sizes",
    "crash_or_wrong",
    "row_lengths",
    "sources",
    "headline_words",
    "eager_copies",
]


def misread_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The cells where notebook 01's bug can misread: a replayed launch (``graph``, or ``frozen``, its CPU stand-in)
    with the ``as_strided`` copy, past one query block (more than 16 requests), whose kernel was built, with ``kind``
    (what the cell came to: ``crashed``, ``wrong result``, ``bitwise equal`` or ``moved``)."""
    from flexfix.mechanism.paged import Q_BLOCK

    launch = table["config"].str.split(", ").str[-2]
    copy = table["config"].str.split(", ").str[-1]
    built = table["outcome"] != "error"  # a kernel that was not built read nothing
    cells = table[launch.isin(["graph", "frozen"]) & (copy == "as_strided") & (table["batch"] > Q_BLOCK) & built]
    return cells.assign(kind=[_kind(r) for _, r in cells.iterrows()])


_KINDS = {"crashed": "crashed", "wrong result": "wrong results", "bitwise equal": "bitwise equal", "moved": "moved"}


def _kind(row) -> str:
    if row["outcome"] in CRASHES:
        return "crashed"
    if row["outcome"] == "wrong_result":
        return "wrong result"
    return "bitwise equal" if bool(row["bitwise_equal"]) else "moved"


def counted(kinds: pd.Series) -> str:
    counts = kinds.value_counts()
    return listing([plural(int(counts[k]), k, many) for k, many in _KINDS.items() if k in counts])


_SWEEP_SIZES = ("needle_len", "capture_len", "max_model_len", "num_pages", "num_heads", "num_kv_heads", "head_dim")


def sweep_sizes(parameters: dict | list[dict]) -> dict[str, int]:
    """The sizes a kernel sweep ran with, from the parameters it recorded (or this run's): ``needle_len`` and
    ``capture_len``, and the ``PagedShape(...)`` fields of its ``shape``; a list of recordings gives the sizes they
    share."""
    from flexfix.edition.printed import printed_ints

    sizes: dict = {}
    for params in parameters if isinstance(parameters, list) else [parameters]:
        found = {k: int(params[k]) for k in ("needle_len", "capture_len") if k in params}
        found |= {k: v for k, v in printed_ints(params.get("shape")).items() if k in _SWEEP_SIZES}
        for k, v in found.items():
            sizes[k] = v if sizes.get(k, v) == v else None
    return {k: sizes[k] for k in _SWEEP_SIZES if sizes.get(k) is not None}


def _size_differences(parameters: dict[str, dict | list[dict]]) -> str:
    """The sizes the sweeps ran with where they differ, from their parameters: the sweeps named once, in order, then
    each size that differs with its values in that order (``this run and the recording: `needle_len` 120 and 300``)."""
    sizes = {where: sweep_sizes(p) for where, p in parameters.items()}
    said, named = [], []
    for key in _SWEEP_SIZES:
        values = {where: s[key] for where, s in sizes.items() if key in s}
        if len(values) > 1 and len(set(values.values())) > 1:
            if not named:
                named = list(values)
            if list(values) == named:
                said.append(f"`{key}` " + listing([str(v) for v in values.values()]))
            else:
                said.append(f"`{key}` " + listing([f"{v} ({where})" for where, v in values.items()]))
    return f"{listing(named)}: " + "; ".join(said) if said else ""


def crash_or_wrong(sweeps: dict[str, pd.DataFrame], parameters: dict[str, dict | list[dict]] | None = None) -> str:
    """One sentence per sweep shown (``{where: table}``: this run, the CPU analogs, a recording): what its cells
    exposed to the misread (:func:`misread_cells`) came to, crashed or a wrong result, so that no sentence says which
    one the bug gives without the cells of that edition behind it.  ``parameters`` (``{where: recorded parameters}``)
    gives the sizes each sweep ran with: where they differ, the sentence says so, and does not put the difference
    between a crash and a wrong answer down to the GPU."""
    from flexfix.mechanism.paged import Q_BLOCK

    parts, kinds = [], {}
    for where, table in sweeps.items():
        cells = misread_cells(table)
        if cells.empty:
            parts.append(f"{where}: no cell where the replayed launch with `as_strided` could misread")
            continue
        kinds[where] = set(cells["kind"])
        parts.append(f"{where}: {plural(len(cells), 'cell')} exposed to the misread, {counted(cells['kind'])}")
    text = (
        f"**Crash or wrong answer, in the sweeps shown here** (cells exposed to the misread: the replayed launch "
        f"with `as_strided`, past {Q_BLOCK} requests):\n\n"
    )
    text += "\n".join(f"* {part}." for part in parts)
    differ = _size_differences(parameters or {})
    if differ:
        text += f"\n\nThese are not the same sweep: they ran with other sizes ({differ}), as printed with each."
    crashed = [where for where, k in kinds.items() if "crashed" in k]
    wrong = [where for where, k in kinds.items() if "wrong result" in k]
    if crashed and wrong:
        text += f"\n\n{_crashed_and_wrong(sweeps, parameters or {}, crashed, wrong)}"
        lead = (  # r12 D3: the answer first, as the sweeps give it
            "**Both outcomes happen in this edition's sweeps**: the misread crashed in some and answered silently "
            "wrong in others; which one a run gets, these data do not predict.\n\n"
        )
    else:
        lead = one_outcome(len(sweeps), kinds, [w for w in kinds if _is_analog(sweeps[w])])
    return markdown(
        lead + text + "\n\n" + takeaway(sweeps, misread_cells)
    )  # r16 D4: the section's one-line takeaway last


def _is_analog(table: pd.DataFrame) -> bool:
    """Whether every misread cell of a sweep is the CPU's frozen launch, whose index error stands for a crash."""
    return bool((misread_cells(table)["config"].str.split(", ").str[-2] == "frozen").all())


def _crashed_and_wrong(sweeps: dict, parameters: dict, crashed: list[str], wrong: list[str]) -> str:
    """How many sweeps crashed and how many answered wrongly, each named; what the CPU analog's crash is; and, for
    each crash set against a wrong answer, whether the two ran with the same sizes, from ``parameters``."""
    sizes = {where: sweep_sizes(p) for where, p in parameters.items()}
    text = (
        f"The bug crashed in {plural(len(crashed), 'sweep')} ({listing(crashed, sep='; ')}) and answered wrongly "
        f"in {len(wrong)} ({listing(wrong, sep='; ')})."
    )
    for where in crashed:
        if _is_analog(sweeps[where]):
            same = [w for w in wrong if sizes.get(w) and sizes.get(where) == sizes[w]]
            text += (
                f" The crash of {where} is the frozen-launch analog's index error: the analog checks every block "
                "number it reads and stops at one outside the cache, where a GPU kernel reads whatever memory the "
                "number points to"
                + (f"; it ran with the same sizes as {listing(same)}" if same else "")
                + ", so it stands for the misread, not for what a GPU does with it."
            )
    gpu = [w for w in crashed if not _is_analog(sweeps[w])]
    other = [w for w in gpu if any(sizes.get(w) and sizes.get(v) and sizes[w] != sizes[v] for v in wrong)]
    if other:
        text += (
            f" Because {listing(other)} also ran with other sizes than {listing(wrong)}, not only on another GPU, "
            "these sweeps cannot tell whether the GPU or the sizes made the bug crash there rather than answer "
            "wrongly."
        )
    if gpu:
        text += (
            " Which one a GPU gets depends on what the misread cells and the memory they point to hold (notebook 01, "
            "section *Crash or wrong answer: what decides*)."
        )
    else:  # r22 D6: the one place 04 points to notebook 01's measurement of what decides
        text += (
            " What decides between them on a GPU, notebook 01 measures (section *Crash or wrong answer: what decides*)."
        )
    return text


def _row_length(sweep, batch: int, position: str) -> int:
    """The pages the needle's query block reads at ``batch`` requests (its ``kv_num_blocks``), from the step the
    sweep built: the pages of all the block's requests together."""
    import torch

    from flexfix.measure.needle import needle_index, needle_step
    from flexfix.mechanism import paged

    step = needle_step(sweep, batch, position, device="cpu", dtype=torch.float32)
    return int(paged.build_kv_indices(step)[1][needle_index(batch, position) // paged.Q_BLOCK])


def row_lengths(table: pd.DataFrame, sweep) -> str:
    """For each configuration of ``table`` (a kernel sweep run with ``sweep``) with cells that moved (ran, no misread,
    not bitwise equal), the page count of the needle's query block (:func:`_row_length`) in the cells that moved
    against the cells with as many pages that stayed bitwise equal: whether a larger page count alone accounts for
    where it moved (r0305 D17; r11 D6: "the query block's page count", not a "row")."""
    cells_ = row_length_cells(table, sweep)
    if cells_.empty:
        return ""
    parts = []
    for config, rows in cells_.groupby("config", sort=False):
        hit = rows[~rows["equal"]]
        if hit.empty:
            continue
        lo, hi = int(hit["pages"].min()), int(hit["pages"].max())
        calm = rows[rows["equal"] & (rows["pages"] >= lo)]
        if calm.empty:
            parts.append(
                f"**not ruled out** for `{config}`: it moved at {lo} to {hi} pages, and no cell with {lo} pages or "
                "more stayed bitwise equal"
            )
        else:
            at = listing([str(b) for b in sorted(calm["batch"].unique())])
            parts.append(
                f"**no** for `{config}`: it moved at {lo} to {hi} pages, but {plural(len(calm), 'cell')} with "
                f"{int(calm['pages'].min())} to {int(calm['pages'].max())} pages (at {at} requests) stayed bitwise "
                f"equal (the table's column *{EQUAL_AT}* names them)"
            )
    if not parts:
        return ""
    fewer = _below_moved(cells_)
    return markdown(  # r14 D3: why the question is asked, then its answer, then what the table leaves out
        "**Does a larger page count of the needle's query block make a kernel move?** Why ask: if a larger union "
        "of pages made a kernel split or reorder its sums, the cells with more pages would be the ones that moved, "
        "whatever else the batch held. The query block's page count is that of all the requests of the needle's "
        "query block together, the count `kv_num_blocks` holds for it: more requests make it larger.\n\n"
        "**Answer:** " + "; ".join(parts) + ". The table below counts, per configuration that moved, the cells per "
        "page count from the fewest pages at which it moved on, and names them by batch size and needle position"
        + (
            f"; it leaves out the {plural(len(fewer), 'cell')} with fewer pages, all bitwise equal."
            if len(fewer)
            else "."
        )
    )


def _below_moved(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of each configuration with fewer pages than the fewest at which it moved (all bitwise equal, by
    that definition): what :func:`row_length_table` leaves out (r14 D3)."""
    lo = cells[~cells["equal"]].groupby("config")["pages"].min()
    return cells[cells["pages"] < cells["config"].map(lo).fillna(float("inf"))]


def row_length_cells(table: pd.DataFrame, sweep) -> pd.DataFrame:
    """The cells that ran (outcome ``ok``) of the configurations with a moved cell, each with ``pages`` (the needle's
    row length, :func:`_row_length`) and ``equal`` (bitwise equal): what :func:`row_lengths` is drawn from."""
    ran = table[table["outcome"] == "ok"]
    moved = ran[~ran["bitwise_equal"].astype(bool)]["config"].unique()
    ran = ran[ran["config"].isin(moved)]
    if ran.empty:
        return ran.assign(pages=[], equal=[])
    lengths: dict = {}
    keys = [(int(b), str(p)) for b, p in zip(ran["batch"], ran["position"])]
    for key in keys:
        lengths.setdefault(key, _row_length(sweep, *key))
    return ran.assign(pages=[lengths[k] for k in keys], equal=ran["bitwise_equal"].astype(bool))


def _cells_at(rows: pd.DataFrame) -> str:
    """``"8 first; 17 last"``: the cells of ``rows`` as batch size (requests) and needle position, by batch size."""
    order = {"first": 0, "middle": 1, "last": 2}
    cells = sorted(zip(rows["batch"].astype(int), rows["position"]), key=lambda c: (c[0], order.get(c[1], 3), c[1]))
    return "; ".join(f"{b} {p}" for b, p in cells)


PAGES = "query block pages"  # the table's column: the needle's query block's page count (its kv_num_blocks)
MOVED_AT, EQUAL_AT = "moved at (requests position)", "bitwise equal at (requests position)"


def row_length_table(table: pd.DataFrame, sweep) -> pd.DataFrame:
    """Per configuration that moved and per page count of the needle's query block, how many cells moved and how
    many stayed bitwise equal (r0305 B6), and which cells each were, by batch size and needle position (r11 B1): the
    counts and batch sizes the sentence under it states."""
    cells = row_length_cells(table, sweep)
    if not cells.empty:
        cells = cells.drop(_below_moved(cells).index)  # r14 D3: from the fewest pages at which it moved on
    if cells.empty:
        return pd.DataFrame(columns=["config", PAGES, "moved", "bitwise equal", MOVED_AT, EQUAL_AT])
    rows = []
    for (config, pages), part in cells.groupby(["config", "pages"], sort=False):
        moved, equal = part[~part["equal"]], part[part["equal"]]
        rows.append(
            {"config": config, PAGES: int(pages), "moved": len(moved), "bitwise equal": len(equal)}
            | {MOVED_AT: _cells_at(moved), EQUAL_AT: _cells_at(equal)}
        )
    out = pd.DataFrame(rows)
    return out.sort_values(["config", PAGES], kind="stable").reset_index(drop=True)


def sources(table: pd.DataFrame, provenance: list[dict] | None = None, handled: bool = False) -> str:
    """Which configurations' cells come from more than one recording (a ``source`` column), and which batches each
    holds: their evidence above adds up cells of two runs (the verdict table gives each its own row).  With
    ``provenance`` (one per source, in order), the commit of each; where they differ, that the records do not show
    what changed between them (r0305 B10).  ``handled``: the notebook's *Crash handling* lines follow, which say what
    the records show of why a recording stops short; the tail of a plan is then pointed to them (r22 D7)."""
    if "source" not in table:
        return ""
    sources = list(dict.fromkeys(table["source"]))
    commits, planned = {}, {}
    if provenance is not None and len(provenance) == len(sources):
        commits = {src: str(p.get("git_commit") or "unknown")[:10] for src, p in zip(sources, provenance)}
        planned = {src: set((p.get("parameters") or {}).get("batches") or []) for src, p in zip(sources, provenance)}
        last = {src: ((p.get("parameters") or {}).get("configs") or [None])[-1] for src, p in zip(sources, provenance)}
    mixed, joined, unreached = [], set(), []
    for config, cells in table.groupby("config", sort=False):
        if cells["source"].nunique() > 1:
            for source, part in cells.groupby("source", sort=False):  # r0305 D12: why a second recording
                missing = sorted(planned.get(source, set()) - set(part["batch"].astype(int)))
                if missing:
                    tail = last.get(source) == config and missing == sorted(planned[source])[-len(missing) :]
                    unreached.append(
                        f"`{source}` lists {listing([str(b) for b in missing])} requests among its batches but "
                        f"holds no cell of `{config}` at them"
                        + (  # r15 D3: what the records show of why, and what they do not
                            " (the last cells of its plan, for which it records no outcome: the *Crash handling* "
                            "lines below say what its records show of why)"
                            if tail and handled
                            else " (the last cells of its plan: its last configuration, from there to its largest "
                            "batch; it records no outcome for them, so why it ended there, a crash or a stop, the "
                            "records do not say, and the missing cells are no evidence either way)"
                            if tail
                            else ""
                        )
                    )
            spans = [
                f"{int(part['batch'].min())} to {int(part['batch'].max())} requests from `{source}`"
                + (f", commit {commits[source]}" if source in commits else "")
                for source, part in cells.groupby("source", sort=False)
            ]
            joined |= {commits[s] for s in cells["source"].unique() if s in commits}
            mixed.append(f"`{config}` ({'; '.join(spans)})")  # each span has a comma: "; " between them
    if not mixed:
        return ""
    text = (
        f"Two recordings in one line above: the cells of {listing(mixed, '; ')} come from more than one recording "
        "(each with its parameters above); the verdict table gives each recording its own row."
    )
    if unreached:
        text += f" {listing(unreached, '; ')}: those cells come from the other recording."
    if len(joined) > 1:
        text += (
            f" The line joins cells of {plural(len(joined), 'commit')} of flexfix; the records do not show what "
            "changed between them, so the two parts are not one run."
        )
    return text


def headline_words(table: pd.DataFrame) -> str:
    """What the headline words mean, only those the headlines above use (r0305 A1: *wrong* is a silently wrong
    result, not a crash)."""
    from flexfix.measure.outcomes import CRASHES

    outcomes = set(table["outcome"])
    words = [
        ("*crashed* a launch that died (illegal memory access, index error or timeout)", bool(outcomes & set(CRASHES))),
        ("*wrong* a silently wrong result (the step ran, nothing crashed)", "wrong_result" in outcomes),
        (
            "*refused* a launch vLLM refused, or flexfix's replay guard (notebook 07: a check run before a replay)",
            bool(outcomes - {"ok", "error", "wrong_result", *CRASHES}),
        ),
        ("*no kernel built* and *kernel errors* a kernel the compiler would not build", "error" in outcomes),
    ]
    said = [w for w, used in words if used]
    moved = table[table["outcome"] == "ok"]
    if (~moved["bitwise_equal"].fillna(False).astype(bool)).any():
        said.append("*varies with the batch* a moved cell")
    head = (
        "The word in parentheses after each headline is the verdict table's (the worst outcome of any cell); the "
        "headline says where among the batch sizes it happened"
    )
    return f"{head}: {listing(said, ', ')}." if said else f"{head}."


def eager_copies(table: pd.DataFrame) -> str:
    """Per kernel mode run eagerly with both copies, whether its ``sliced`` and ``as_strided`` rows came out the
    same cell for cell (outcome and bitwise equality): from the cells, so that a run whose rows are identical is
    not said to differ (r0305 A2)."""
    parts = table["config"].str.rsplit(", ", n=2)
    prefix, launch, copy = parts.str[0], parts.str[1], parts.str[2]
    same, differ = [], []
    for mode in dict.fromkeys(prefix[launch == "eager"]):
        rows = {
            c: table[(prefix == mode) & (launch == "eager") & (copy == c)]
            .assign(equal=lambda t: t["bitwise_equal"].fillna(False).astype(bool))
            .set_index(["batch", "position"])[["outcome", "equal"]]
            .sort_index()
            for c in ("sliced", "as_strided")
        }
        if rows["sliced"].empty or rows["as_strided"].empty:
            continue
        (same if rows["sliced"].equals(rows["as_strided"]) else differ).append(f"`{mode}`")
    if not same and not differ:
        return ""
    text = []
    if differ:
        text.append(f"differ for {listing(differ)}")
    if same:
        text.append(f"are the same cell for cell (outcome and bitwise equality) for {listing(same)}")
    return f"Eager launches, `sliced` copy vs `as_strided` copy: the two rows {listing(text, '; ')}."
