"""What a batch-invariance sweep measured, in words (notebook 04): kernel cells and engine needles."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import DataError, require
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural, span
from flexfix.edition.narrative.invariance_lead import _kernel_headline, shared_configs
from flexfix.edition.narrative.invariance_lead import kernel_lead as _lead
from flexfix.edition.narrative.misread import counted as _counted
from flexfix.edition.narrative.misread import (
    crash_or_wrong,
    eager_copies,
    headline_words,
    misread_cells,
    row_length_table,
    row_lengths,
    sweep_sizes,
)
from flexfix.edition.narrative.misread import sources as _sources

__all__ = ["REFERENCE", "KERNEL_CELL_COLUMNS", "NEEDLE_COLUMNS", "check_kernel_cells", "kernel_sweep"]
__all__ += [
    "kernel_lead",
    "shared_configs",
    "misread_cells",
    "sweep_sizes",
    "crash_or_wrong",
    "row_lengths",
    "row_length_table",
    "engine_sweep",
]

# The columns the sentences state (a notebook reads its recorded files with them): kernel cells, engine needles.
KERNEL_CELL_COLUMNS = ("config", "batch", "position", "outcome", "bitwise_equal", "max_abs_diff")
KERNEL_CELL_COLUMNS += ("max_error_vs_reference", "detail")
NEEDLE_COLUMNS = (
    "engine",
    "sampling",
    "requests",
    "tokens_equal",
    "logprobs_bitwise_equal",
    "max_abs_logprob_diff",
    "distinct_tokens",
)


def check_kernel_cells(table: pd.DataFrame, what: str = "the needle cells") -> pd.DataFrame:
    """The cells a kernel sweep's sentences and figures read: every cell with its configuration, batch, position
    and outcome; a measured cell (outcome ``ok``) with whether it was bitwise equal, by how much it moved and its
    error against the reference, and a cell that moved by more than nothing."""
    require(table, what, KERNEL_CELL_COLUMNS, values=("config", "batch", "position", "outcome"))
    measured = dict(where=lambda t: t["outcome"] == "ok", condition="measured (outcome 'ok')")
    require(table, what, values=("bitwise_equal", "max_abs_diff", "max_error_vs_reference"), **measured)
    ok = table[table["outcome"] == "ok"]
    still = ok[~ok["bitwise_equal"].astype(bool) & (ok["max_abs_diff"].astype(float) == 0)]
    if len(still):
        raise DataError(
            f"{what}: {len(still)} measured cells are not bitwise equal yet moved by 0 (first: row "
            f"{still.index[0]!r}): the table contradicts itself"
        )
    return table


# What the "fp32 reference" of the sentences is (tests/test_teaching_03_05.py reads it).
REFERENCE = (
    "the fp32 reference: the needle's attention over its own pages only, computed in fp32 in plain torch "
    "(`flexfix.mechanism.paged.reference`), with no kernel and no batch"
)


def _alone_error(cells: pd.DataFrame) -> float | None:
    """The needle alone (``B = 1``)'s distance to the fp32 reference, where a cell at one request ran."""
    alone = cells[(cells["batch"] == 1) & (cells["outcome"] == "ok")]["max_error_vs_reference"].dropna()
    return float(alone.max()) if len(alone) else None


def _kernel_config(cells: pd.DataFrame) -> str:
    """One configuration's cells (every batch x position) in one clause."""
    n = len(cells)
    equal = cells["bitwise_equal"].fillna(False).astype(bool)
    if equal.all():
        return f"bitwise equal in all {n} cells"
    by_batch = cells.groupby("batch")["bitwise_equal"].apply(lambda s: bool(s.fillna(False).all()))
    upto = [b for b in by_batch.index if all(by_batch[by_batch.index <= b])]
    parts = [f"bitwise equal up to {plural(max(upto), 'request')}" if upto else "not bitwise equal even alone"]
    not_equal = cells[~equal]
    for outcome, group in not_equal.groupby("outcome", sort=False):
        batches = sorted(group["batch"].unique())
        if outcome == "ok":
            moved = group["max_abs_diff"].dropna()
            ref = group["max_error_vs_reference"].dropna()
            where = list(dict.fromkeys(group["position"]))
            every = list(dict.fromkeys(cells["position"]))
            only = f", only at needle position {listing([f'`{p}`' for p in where])}" if len(where) < len(every) else ""
            text = (
                f"{plural(len(group), 'cell')} moved (at {listing(batches)} requests{only}): the needle's output in "
                f"the batch differs from its output alone by up to {moved.max():.2g}"
            )
            if len(ref):
                text += f"; the distance of those cells to the fp32 reference is at most {ref.max():.2g}"
                alone = _alone_error(cells)
                if alone is not None:
                    text += f" (the needle alone: {alone:.2g})"
            parts.append(text)
        else:
            word = OUTCOME_WORDS.get(outcome, outcome)
            details = group["detail"].dropna()
            detail = ":".join(str(details.iloc[0]).split(":")[:2]) if len(details) else ""
            text = f"{plural(len(group), 'cell')} ended in {word} ({_at_sizes(batches, cells['batch'])}"
            text += f"; e.g. `{detail}`)" if outcome == "error" and detail else ")"
            parts.append(text)
    return "; ".join(parts)


def _at_sizes(batches: list, every) -> str:
    """``"from 17 requests on"`` where ``batches`` are all the sizes from there to the largest of ``every`` (the
    configuration's sizes), else ``"at 15, 16 and 17 requests"``."""
    sizes = sorted({int(b) for b in every})
    mine = sorted({int(b) for b in batches})
    if mine == sizes[sizes.index(mine[0]) :]:
        return f"from {plural(mine[0], 'request')} on"
    return f"at {listing(mine)} requests"


def kernel_lead(table: pd.DataFrame, where: str) -> str:
    """The result of a sweep first, a bullet per outcome (r0305 D1): :func:`invariance_lead.kernel_lead`, on
    checked cells; the evidence is :func:`kernel_sweep`'s, under the verdict table."""
    check_kernel_cells(table, f"the needle cells of {where}")
    return _lead(table, where)


def kernel_sweep(
    table: pd.DataFrame, where: str, defined_under: str | None = None, provenance: list[dict] | None = None
) -> str:
    """First the meaning (which configurations kept the needle bitwise the same in every batch, which varied,
    which broke), then per configuration the evidence: where the needle stayed bitwise equal, where it moved and
    by how much, and which cells crashed or failed to build.  Configurations with the same result share a line.
    ``defined_under`` names an earlier paragraph that defined the two distances and the headline words: this one
    then leaves both out rather than repeat them under every table (r0305 D4).  ``provenance``: the recordings'
    provenance, in the order of the ``source`` column's first appearances, so that a configuration joined from two
    recordings names their commits.
    Each line's headline is followed by the verdict table's word for those configurations (r0305 D17)."""
    from flexfix.measure.invariance import verdicts

    check_kernel_cells(table, f"the needle cells of {where}")
    said: dict[tuple[str, str, str], list[str]] = {}
    for config, cells in table.groupby("config", sort=False):
        verdict = str(verdicts(cells)["verdict"].iloc[0])
        said.setdefault((_kernel_headline(cells), verdict, _kernel_config(cells)), []).append(f"`{config}`")
    lines = [
        f"* **{head}** (verdict `{verdict}`): {listing(configs)}. Evidence: {text}."
        for (head, verdict, text), configs in said.items()
    ]
    n = table["config"].nunique()
    invariant = sum(len(c) for (head, _, _), c in said.items() if head == "batch-invariant")
    lead = f"In short: {invariant} of {n} configurations kept the needle bitwise the same alone and in every batch" + (
        "." if invariant == n else "; the others are below, each with what it did."
    )
    reference = ""  # with ``defined_under``, the notebook said the distances and headline words once (r0305 D4)
    if any("fp32 reference" in text for _, _, text in said) and not defined_under:
        reference = (
            f"Two distances per moved configuration: how far the needle's output in a batch is from its own output "
            f"alone (what batch invariance asks to be 0), and how far it is from {REFERENCE}; a rounding-sized "
            "move leaves the second about where the needle alone has it."
        )
    return markdown(
        f"**What {where} measured** (cells: batch sizes x needle positions)",
        lead,
        "\n".join(lines),
        reference,
        _past_first_block(table, explained=bool(defined_under)),
        eager_copies(table),
        "" if defined_under and not _unkeyed(table) else headline_words(table),
        _sources(table, provenance, handled=bool(defined_under)),
    )


def _unkeyed(table: pd.DataFrame) -> bool:
    """Whether a cell's outcome is none of those the notebook's key defines (r22 A1): a launch refused by vLLM or
    flexfix's replay guard, which a kernel sweep does not run; its headline word is then defined under the table."""
    from flexfix.measure.outcomes import CRASHES

    return bool(set(table["outcome"]) - {"ok", "wrong_result", "error", *CRASHES})


def _product(cells: pd.DataFrame) -> str:
    """`` (2 configurations x 7 batch sizes x 3 positions)`` where the cells are every such combination, else ``""``."""
    sizes = [cells[c].nunique() for c in ("config", "batch", "position")]
    if sizes[0] * sizes[1] * sizes[2] != len(cells):
        return ""
    return f" ({plural(sizes[0], 'configuration')} x {plural(sizes[1], 'batch size')} x {plural(sizes[2], 'position')})"


def _past_first_block(table: pd.DataFrame, explained: bool = False) -> str:
    """Per needle position, what the misread cells (:func:`misread_cells`) came to: a crash ends the whole step
    whatever the position, while query block 0 (position ``first``) reads its own entries right and can come out
    bitwise equal where the step did not crash.  ``explained``: the notebook said that once (its *The `graph`
    launch*), so the counts point there instead of saying it under every table (r22 D6)."""
    from flexfix.mechanism.paged import Q_BLOCK

    cells = misread_cells(table)
    if cells.empty:
        return ""
    configs = listing([f"`{c}`" for c in dict.fromkeys(cells["config"])])
    per = [f"`{p}`: {_counted(part['kind'])}" for p, part in cells.groupby("position", sort=False)]
    text = (
        f"Past {Q_BLOCK} requests, where the replayed launch with the `as_strided` copy can misread "
        f"({configs}), the {plural(len(cells), 'cell')}{_product(cells)} came to, per needle position: "
        f"{listing(per, '; ')}."
    )
    first = cells[cells["position"] == "first"]["kind"]
    if explained:
        return text + " How query block 0 comes into it: *The `graph` launch* above."
    if (first == "crashed").any():
        text += (
            " A crash at position `first` (query block 0, whose own entries are read right) is the misread of a later "
            "query block ending the whole step."
        )
    if (first == "bitwise equal").any():
        text += (
            " A bitwise-equal cell at `first` is query block 0's needle, read right, in a step that did not crash: "
            "the misread hit only the later query blocks."
        )
    return text + _equal_in_block_0(cells)


def _equal_in_block_0(cells: pd.DataFrame) -> str:
    """Bitwise-equal cells past position ``first`` whose needle still falls in query block 0 (``middle`` of a small
    batch), with their batch sizes and needle indices; nothing where some equal cell's needle is in a later block."""
    from flexfix.measure.invariance import needle_index
    from flexfix.mechanism.paged import Q_BLOCK

    equal = cells[(cells["kind"] == "bitwise equal") & (cells["position"] != "first")]
    at = [needle_index(int(b), p) for b, p in zip(equal["batch"], equal["position"])]
    if equal.empty or any(i >= Q_BLOCK for i in at):
        return ""
    equal = equal.assign(at=at).drop_duplicates(["position", "batch"]).sort_values("batch")
    said = [
        f"at `{p}` are those of {listing([str(b) for b in part['batch']])} requests, whose needle (index "
        f"{listing([str(i) for i in part['at']])}) still falls in query block 0"
        for p, part in equal.groupby("position", sort=False)
    ]
    return f" The bitwise-equal cells {listing(said, '; ')}: read right in the same way."


def _engine_line(rows: pd.DataFrame) -> str:
    n = len(rows)
    tokens = int(rows["tokens_equal"].fillna(False).sum())
    bitwise = int(rows["logprobs_bitwise_equal"].fillna(False).sum())
    if bitwise == n:
        return f"bitwise equal (tokens and logprobs) at all {n} batch sizes"
    differ = rows[~rows["logprobs_bitwise_equal"].fillna(False).astype(bool)]
    other_tokens = rows[~rows["tokens_equal"].fillna(False).astype(bool)]
    first = differ.loc[differ["requests"].idxmin()]
    top = differ["max_abs_logprob_diff"].max()
    shown = [f"{x:.2g}" == f"{top:.2g}" for x in differ["max_abs_logprob_diff"]]  # as printed
    at_top = sorted({int(r) for r in differ.loc[shown, "requests"]})
    text = (  # r13 D3: the first difference and the largest, each with its own size and place
        f"logprobs bitwise equal at {bitwise} of {n} batch sizes (first difference at "
        f"{plural(int(first['requests']), 'request')}, by {first['max_abs_logprob_diff']:.2g}; largest "
        f"{top:.2g}, at {listing([str(r) for r in at_top])} {'request' if at_top == [1] else 'requests'})"
    )
    if tokens < n:
        text += f"; other tokens at {listing(sorted(int(x) for x in other_tokens['requests']))} requests"
    else:
        text += "; the same tokens everywhere"
    if (differ["requests"] == 1).any():
        text += "; even `N = 1`, the same request a second time, differed"
    return text


def _run_to_run_and_batch(needle: pd.DataFrame, every: list[tuple[str, str]]) -> str:
    """The two claims the differences support, each with its own evidence.  ``N = 1`` runs the needle alone a second
    time: a difference there is run-to-run nondeterminism, with no other request in the batch.  Batch variance needs
    a pair whose ``N = 1`` repeat was bitwise equal and that differed at a larger ``N`` (one repeat does not prove the
    engine reproducible in general); a pair that differed at ``N = 1`` already cannot tell the two apart."""
    run_to_run, batch = [], []
    for key, rows in needle.groupby(["engine", "sampling"], sort=False):
        equal = rows["logprobs_bitwise_equal"].fillna(False).astype(bool) & rows["tokens_equal"].fillna(False)
        alone_again = rows[rows["requests"] == 1]
        if equal.all() or alone_again.empty:
            continue
        if not bool(equal[alone_again.index].all()):
            run_to_run.append(key)
        else:
            batch.append((key, int(rows.loc[~equal, "requests"].min())))
    parts = []
    if run_to_run:
        parts.append(
            f"*Run to run*: {_pairs(run_to_run, every)} differed already at `N = 1`, the needle alone a second time "
            "with no other request: not reproducible from one run to the next, so their differences at larger `N` "
            "cannot be put down to the batch alone."
        )
    if batch:
        firsts = listing([f"{_engine_name(e)} ({s}) first at {plural(n, 'request')}" for (e, s), n in batch], "; ")
        text = (  # r15 B1: consistent with the batch, not shown to come from it
            "*With the batch*: the needle alone a second time (`N = 1`) came out bitwise the same in its one repeat, "
            f"and among more requests it differed: {firsts}. That is consistent with batch variance, but one repeat "
            "at `N = 1` does not rule out run-to-run differences"
        )
        noisy = sorted({_engine_name(e) for (e, _), _n in batch if e in {k[0] for k in run_to_run}})
        if noisy:
            text += (
                f": the same {'engine' if len(noisy) == 1 else 'engines'} ({listing(noisy, '; ')}) with the other "
                "sampling differed already at `N = 1` (*Run to run* above), so a single `N = 1` repeat can land "
                "either way, and the batch's share of these differences is not established"
            )
        parts.append(text + ".")
    return "\n\n".join(parts)


def _engine_name(engine: str) -> str:
    """An engine's label in a sentence: ``eager`` launches no graph, so never "eager graphs"."""
    return engine.replace("eager graphs", "eager")


def _pairs(keys: list[tuple[str, str]], every: list[tuple[str, str]]) -> str:
    """(engine, sampling) pairs in words, short: "every tiny engine (greedy and seeded)" where the pairs hold all of
    a model's engines (``every``: all the pairs measured), else each engine once with its samplings."""
    samplings: dict[str, list[str]] = {}
    for engine, sampling in keys:
        samplings.setdefault(engine, []).append(sampling)
    engines_of: dict[str, list[str]] = {}
    for engine, _ in every:
        engines_of.setdefault(engine.split(",")[0], [])
        if engine not in engines_of[engine.split(",")[0]]:
            engines_of[engine.split(",")[0]].append(engine)
    parts = []
    for model, engines in engines_of.items():
        mine = [e for e in engines if e in samplings]
        shared = {tuple(samplings[e]) for e in mine}
        if len(engines) > 1 and mine == engines and len(shared) == 1:
            parts.append(f"every {model} engine ({len(engines)} of them; {' and '.join(next(iter(shared)))})")
            continue
        parts += [f"{_engine_name(e)} ({' and '.join(samplings[e])})" for e in mine]
    return listing(parts, "; ")


def engine_sweep(needle: pd.DataFrame, where: str) -> str:
    """Per engine (model, ``VLLM_BATCH_INVARIANT``, graphs) and sampling: bitwise equality of the needle
    prompt alone vs among ``N`` requests (:func:`flexfix.measure.engine_sweep.invariance_rows`)."""
    what = f"the needle rows of {where}"
    values = ("engine", "sampling", "requests", "tokens_equal", "logprobs_bitwise_equal", "distinct_tokens")
    require(needle, what, NEEDLE_COLUMNS, values=values)
    differ = dict(where=lambda t: ~t["logprobs_bitwise_equal"].astype(bool), condition="whose logprobs differ")
    require(needle, what, values=("max_abs_logprob_diff",), **differ)
    said: dict[str, list[tuple[str, str]]] = {}
    groups = needle.groupby(["engine", "sampling"], sort=False)
    every = list(dict.fromkeys(zip(needle["engine"], needle["sampling"])))
    for key, rows in groups:
        said.setdefault(_engine_line(rows), []).append(key)
    lines = [f"* {_pairs(keys, every)}: {text}." for text, keys in said.items()]
    rows = needle.groupby(["engine", "sampling"], sort=False)["logprobs_bitwise_equal"].apply(
        lambda v: bool(v.fillna(False).astype(bool).all())
    )
    varied = sorted({_engine_name(e) for (e, _), inv in rows.items() if not inv})
    lead = f"In short: {int(rows.sum())} of {len(rows)} engine and sampling pairs gave the needle bitwise the same "
    lead += "tokens and logprobs alone and among every number of requests"
    if varied:
        lead += f"; the {plural(len(varied), 'engine')} that did not: {listing(varied, '; ')}"
        if all("BI=0" in e for e in varied):
            lead += ", all with `VLLM_BATCH_INVARIANT=0`"
    lead += "."
    distinct = needle.groupby(["engine", "sampling"])["distinct_tokens"].min()
    low = distinct[distinct < distinct.max()]
    note = ""
    if len(low):
        note = (
            f"Fewest distinct tokens in a needle's stream: {span(low, '{:.0f}')} for "
            f"{_pairs([k for k in every if k in low.index], every)}, against {int(distinct.max())} elsewhere: "
            "a nearly degenerate stream says little when it matches, so the rows with more distinct tokens carry "
            "the evidence."
        )
    return markdown(f"**What {where} measured**", lead, "\n".join(lines), _run_to_run_and_batch(needle, every), note)
