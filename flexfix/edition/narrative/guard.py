"""What the replay guard's runs measured, in words (notebook 07): each paragraph leads with what it means, then the
evidence, every number read from the table it describes (:mod:`flexfix.edition.tables.guard`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import DataError
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural, span
from flexfix.edition.tables.guard import NOT_READ_MARK, SPREAD, not_read_paths

__all__ = [
    "dispatch",
    "stopped",
    "eager_equal",
    "false_alarms",
    "debug_blind_spot",
    "cost",
    "mutants",
    "workarounds",
    "not_read_counted",
    "NotReadCounted",
    "pointers",
    "ALARM_KINDS",
]

# What each kind of alarm means (flexfix.guard.snapshot.Finding.kind), in the words the mutant sentences use.
ALARM_KINDS = {
    "strides": "a moved layout, its strides other than at capture",
    "pointer": "a moved layout, the tensor at another address than at capture",
    "storage_offset": "a moved layout, another offset into its storage",
    "appeared": "a tensor where the capture saw None",
    "missing": "a tensor the capture saw is gone",
    "decision": "a bool, string, enum or None at capture that changed, so the capture took the other branch; None "
    "becoming a value alarms even where the value is a number",
}

WORDS = {**OUTCOME_WORDS, "guard_refused": "stopped by the guard", "ok": "completed"}


def _need(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table]
    if table.empty or missing:
        raise DataError(
            f"{what}: nothing to say of {'an empty table' if table.empty else f'a table without {missing}'}"
        )


def dispatch(cases: pd.DataFrame, engines: pd.DataFrame) -> str:
    """``cases``: :func:`flexfix.edition.glossary.decode_dispatch` of the recorded engines' ``(max_num_seqs, batch)``;
    ``engines``: their :func:`flexfix.edition.tables.guard.engine_guard` (``max_num_seqs``, ``requests``, outcome)."""
    _need(cases, ["max_num_seqs", "decode batch", "padded to", "runs with"], "dispatch")
    _need(engines, ["max_num_seqs", "requests", "outcome"], "dispatch")

    def case(r) -> str:
        return f"{int(r['decode batch'])} in max_num_seqs {int(r['max_num_seqs'])} (padded to {int(r['padded to'])})"

    full = cases[cases["runs with"] == "FULL"]
    other = cases[cases["runs with"] != "FULL"]
    said = [f"FULL: {listing([case(r) for _, r in full.iterrows()])}"] if len(full) else []
    said += [f"{r['runs with']}: {case(r)}" for _, r in other.iterrows()]
    equal = full[full["max_num_seqs"] == full["decode batch"]]
    batches = [str(int(b)) for b in equal["decode batch"]]
    refused = engines[
        (engines["outcome"] == "guard_refused")
        & (engines["requests"].astype(str).isin(batches))
        & (engines["max_num_seqs"].astype(str) == engines["requests"].astype(str))
    ]
    note = (
        f"A batch equal to its engine's `max_num_seqs`: the batches of {listing(batches)} requests, each in an "
        f"engine of that `max_num_seqs`, were dispatched to FULL graphs (`runs with`: FULL), and the guard refused "
        f"{plural(len(refused), 'such engine')}{chr(39) if len(refused) != 1 else chr(39) + 's'} FULL replay before it "
        "ran (the table below)."
        if batches
        else ""
    )
    return markdown(  # the rule is said once, before the table: here only what each row runs with
        "**What the dispatcher runs each recorded batch with**: " + "; ".join(said) + ".",
        note,
    )


def stopped(engines: pd.DataFrame, where: str) -> str:
    """``engines``: :func:`flexfix.edition.tables.guard.engine_guard` of engines under ``FLEXFIX_GUARD=error``."""
    _need(engines, ["requests", "max_num_seqs", "outcome", "replays checked", "first alarm at replay", "fields named"],
          "stopped")  # fmt: skip
    refused = engines[engines["outcome"] == "guard_refused"]
    quiet = engines[engines["replays checked"] == 0]
    other = engines[(engines["outcome"] != "guard_refused") & (engines["replays checked"] > 0)]
    lead = (
        f"**The guard stopped stock vLLM before a misreading replay in {len(refused)} of {len(engines)} engines** "
        f"({where}), at its replay {span(refused['first alarm at replay'], '{:.0f}')} (over all its graphs), naming "
        f"{listing(sorted(set(refused['fields named'])))}; "
        + (
            "none reached an illegal memory access."
            if "illegal_memory_access" not in set(engines["outcome"])
            else "an illegal memory access was still reached (the `outcome` column)."
        )  # fmt: skip
    )
    notes = []
    if len(quiet):
        notes.append(
            f"{plural(len(quiet), 'engine')} ("
            + listing([f"{r['requests']} requests in max_num_seqs {r['max_num_seqs']}" for _, r in quiet.iterrows()])
            + ") replayed no FULL graph (its `replays checked`: 0; the dispatch table: not FULL), so no captured "
            "kernel could misread and the guard had nothing to check; its answers are not compared with a reference "
            "here."
        )
    if len(other):
        outcomes = listing(list(other["outcome"]))
        notes.append(f"Not stopped although they replayed: {listing(list(other['requests']))} requests ({outcomes}).")
    return markdown(lead, " ".join(notes))


def equal_in_batches(rows: pd.DataFrame, size: str) -> str:
    """``"17 of 17 in a batch of 17 and 31 of 32 in a batch of 32"``: per row, the ``bitwise equal`` answers of
    ``of``, in a batch of the row's ``size`` column (07's eager and served comparisons say their counts alike)."""
    return listing(
        [f"{int(r['bitwise equal'])} of {int(r['of'])} in a batch of {int(r[size])}" for _, r in rows.iterrows()]
    )


def eager_equal(equal: pd.DataFrame, engines: pd.DataFrame, batches: pd.DataFrame | None = None) -> str:
    """``equal``: :func:`~.tables.guard.eager_vs_reference`; ``engines``: their :func:`~.tables.guard.engine_guard`;
    ``batches``: their :func:`~.tables.guard.engine_batches`, to say why an engine's first alarm came late."""
    _need(equal, ["requests", "bitwise equal", "same tokens", "of"], "eager_equal")
    _need(engines, ["outcome", "replays checked", "steps run without the graph"], "eager_equal")
    all_equal = bool((equal["bitwise equal"] == equal["of"]).all())
    per_engine = []
    for engine, rows in equal.groupby("engine", sort=False):
        per_engine.append(f"{_who(engine)}, {equal_in_batches(rows, 'requests')}")
    pairs = "; ".join(per_engine)
    completed = int((engines["outcome"] == "ok").sum())
    lead = "**Running the misreading steps without their graph gave the patched engine's answers" + (
        ", bit for bit**" if all_equal else " to some requests only**"
    )
    return markdown(
        f"{lead}: requests whose token ids and logprobs were bitwise equal to the patched engine's: {pairs}.",
        f"{completed} of {len(engines)} guarded engines completed every request; "
        f"{int(engines['steps run without the graph'].sum())} of {int(engines['replays checked'].sum())} checked "
        "replays ran without the graph." + _late_alarms(engines, batches),
    )


def _late_alarms(engines: pd.DataFrame, batches: pd.DataFrame | None) -> str:
    """Beside the table: why an engine's ``first alarm at replay`` can be past its first replay, where its engine
    sweep begins with batches of one query block (at most 16 requests), whose replays the guard checks and passes.
    The recordings keep the batch sizes, not the order they ran in: that order is said as this source's plan
    (:mod:`flexfix.measure.engine_sweep` runs its sweep before the other parts), not as a recorded fact (r23 07 B1)."""
    if batches is None or "first alarm at replay" not in engines:
        return ""
    said = []
    for _, row in engines.merge(batches, on="engine").iterrows():
        first = pd.to_numeric(row["first alarm at replay"], errors="coerce")
        sizes = [int(s) for s in str(row["engine sweep, batch sizes"]).split(",") if s.strip().isdigit()]
        small = [s for s in sizes if s <= 16]
        if pd.isna(first) or first <= 1 or not small or sizes[: len(small)] != small:
            continue
        said.append(
            f"{_who(row['engine'])}'s first alarm came only at its replay {first:.0f} (`first alarm at replay`, "
            "counted over all its graphs). The recording keeps which batch sizes the engine ran, not the order it "
            "ran them in. In this source its engine sweep runs first and begins with batches of "
            f"{listing([str(s) for s in small])} {'request' if small == [1] else 'requests'}, one query block each, "
            "whose replays the guard passes: that order is this source's plan, not a recorded fact"
        )
    return (" " + "; ".join(said)[0].upper() + "; ".join(said)[1:] + ".") if said else ""


def _who(engine: str) -> str:
    """A guarded engine in a few words: the one with batch invariance forced, or the one of its ``BI=`` setting."""
    if "BI forced" in engine:
        return "the engine with batch invariance forced (BI=1)"
    bi = next((part.strip() for part in engine.split(",") if part.strip().startswith("BI=")), "")
    return f"the {bi} engine" if bi else engine


def false_alarms(table: pd.DataFrame, where: str) -> str:
    """``table``: :func:`flexfix.edition.tables.guard.false_alarms`."""
    _need(table, ["alarms", "replays checked", "tensors per graph", "outcome", "backend"], "false_alarms")
    alarms = int(table["alarms"].sum())
    lead = (
        f"**No false alarm: {alarms} alarms**" if alarms == 0 else f"**{plural(alarms, 'alarm')} on correct engines**"
    )
    return markdown(
        f"{lead} over {plural(len(table), 'engine')} ({where}; {listing(sorted(set(table['backend'])))}), "
        f"{int(table['replays checked'].sum())} replays checked, "
        f"{span(table['tensors per graph'], '{:.0f}')} tensors per graph; "
        f"{int((table['outcome'] == 'ok').sum())} of {len(table)} engines completed every request." + _through(table)
    )


def _through(table: pd.DataFrame, where=lambda n: f"in {plural(n, 'engine')}") -> str:
    """Which hook saw the engines' graphs captured (the table's ``graphs captured through``), as a sentence;
    ``where(n)`` says what its ``n`` rows are (engines, or the guarded runs of ``n`` mutants)."""
    if "graphs captured through" not in table:
        return ""
    counts = table["graphs captured through"].value_counts()
    return " Graphs captured through " + listing([f"{path} {where(n)}" for path, n in counts.items()]) + "."


def debug_blind_spot(engines: pd.DataFrame, facts: dict) -> str:
    """``engines``: the DEBUG run's :func:`~flexfix.edition.tables.guard.engine_guard`; ``facts``: its guard's
    ``facts`` (whether vLLM's own address check was on)."""
    _need(engines, ["outcome", "fields named", "first alarm at replay"], "debug_blind_spot")
    row = engines.iloc[0]
    on = facts.get("vllm_debug_address_check")
    check = (
        "on (read by the guard from vLLM's FULL wrapper at capture, the table above)"
        if on
        else "off"
        if on is False
        else "of unknown state"
    )
    harmed = row["outcome"] != "ok"
    lead = (
        "**vLLM's own replay check did not see the bug**"
        if harmed and row["fields named"] != "none"
        else "**vLLM's own replay check and the guard, side by side**"
    )
    return markdown(
        f"{lead}: with `VLLM_LOGGING_LEVEL=DEBUG` vLLM's address check was {check}, and the engine ended in "
        f"{WORDS.get(row['outcome'], row['outcome'])}; the guard, logging only, named {row['fields named']} at replay "
        f"{row['first alarm at replay']:.0f} of the same run."
    )


def cost(table: pd.DataFrame) -> str:
    """``table``: :func:`flexfix.edition.tables.guard.guard_cost`; the checks' own host time leads, then tokens/s."""
    _need(table, ["requests", "on / off", "lowest pair", "highest pair", "repetitions"], "cost")
    parts = [
        f"{int(r['requests'])} requests: {r['on / off']:.3f} of the tokens/s without it "
        f"(single pairs {r['lowest pair']:.2f}–{r['highest pair']:.2f}, over {plural(int(r['repetitions']), 'pair')})"
        for _, r in table.iterrows()
    ]
    ratios = (
        f"the same engine ran, checking every replay, at {listing(parts, '; ')} (a pair: one repetition's guard-on "
        "run and the guard-off run beside it)"
    )
    share = "checking, % of wall time"
    timed = table.dropna(subset=[share]) if share in table else table.iloc[0:0]
    if len(timed):
        spread = {i: f"; {r[SPREAD]}% over its repetitions" if r.get(SPREAD) else "" for i, r in timed.iterrows()}
        own = [  # the median repetition's share, then its repetitions' range where the table has it
            f"{r[share]:.2f}% of the wall time at {int(r['requests'])} requests "
            f"({r['µs per replay checked']:.0f} µs per replay{spread[i]})"
            for i, r in timed.iterrows()
        ]
        low, high = timed[share].min(), timed[share].max()
        slower = [100 * (1 - r["on / off"]) for _, r in table.iterrows()]
        drift = [
            f"{r['slowest / fastest repetition']:.2f}x at {int(r['requests'])} requests" for _, r in table.iterrows()
        ]
        drifted = all(
            r["slowest / fastest repetition"] - 1 > 1 - r["on / off"] for _, r in table.iterrows()
        )  # each request count's drift larger than the cost its ratio shows
        where = "in runs that drifted by more than that" if drifted else "beyond what the runs drifted"
        took = f"about {low:.1f}%" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}%"
        return markdown(
            f"**The guard's checks took {took} of the engine's time; tokens per second came out "
            f"{min(slower):.1f}–{max(slower):.1f}% lower with it, {where}.** Timed in "
            f"the guarded runs themselves, the checks took {listing(own)}: the host time the guard adds before each "
            f"replay, which a step that waits on the host pays in full. The tokens per second (the median "
            f"repetitions', the `on / off` column): {ratios}; but the same "
            f"work's slowest repetition took {listing(drift)} its fastest, guard on or off"
            + (
                ", so these ratios cannot tell a cost of a few percent from the run's drift. The checks' own time, "
                f"{took} of the wall time, is the firmer measure."  # r20 D9: the ratios are said once, above
                if drifted
                else "."
            )
        )
    noisy = bool(((table["lowest pair"] <= 1) & (table["highest pair"] >= 1)).all())
    lead = (
        "**The guard's cost is below what this measurement can resolve**" if noisy else "**The guard costs throughput**"
    )
    return markdown(f"{lead}: {ratios}.")


def mutants(table: pd.DataFrame) -> str:
    """``table``: :func:`flexfix.edition.tables.guard.mutant_table`."""
    _need(table, ["mutant", "without the guard", "under FLEXFIX_GUARD=error", "fields named"], "mutants")
    caught = table[table["under FLEXFIX_GUARD=error"] == "guard_refused"]
    lines = [
        f"* **{r['mutant']}**: without the guard {WORDS.get(r['without the guard'], r['without the guard'])}, "
        f"{r.get('requests with the clean tokens', 'n/a')} requests with the clean backend's tokens"
        + (
            f" ({r['requests as without graphs']} as the same mutant answers without graphs)"
            if r.get("requests as without graphs", "not recorded") != "not recorded"
            else ""
        )
        + "; under the guard "
        f"{WORDS.get(r['under FLEXFIX_GUARD=error'], r['under FLEXFIX_GUARD=error'])}"
        + (f", naming {_kinds(r)}" if r["fields named"] != "none" else ", no field named")
        + "."
        for _, r in table.iterrows()
    ]
    return markdown(
        f"**The guard stopped {len(caught)} of {len(table)} planted mutants** ({listing(list(caught['mutant']))})."
        + _through(
            table, lambda n: "in the guarded run of " + ("each mutant" if n == len(table) else plural(n, "mutant"))
        ),
        "\n".join(lines),
    )


def _kinds(row) -> str:
    """The fields a mutant's guard named, each with what its kind of alarm means (:data:`ALARM_KINDS`), from the
    mutant table's ``alarms (field: kind)``; the bare field names where the table has no kinds."""
    alarms = row.get("alarms (field: kind)")
    if not isinstance(alarms, str) or alarms == "none":
        return str(row["fields named"])
    said = []
    for entry in alarms.split(", "):
        field, _, kind = entry.rpartition(": ")
        said.append(f"{field} ({kind}: {ALARM_KINDS.get(kind, kind)})")
    return listing(said, "; ")


def not_read_counted(information: pd.DataFrame, first: bool = True, after: str = "the first run's tables") -> str:
    """Where :func:`~.tables.guard.information` counts a field of :data:`~flexfix.guard.vllm_metadata.NOT_READ`, what
    that means (said in full where ``first``, else pointing back to where it was said, ``after``: said once per
    notebook, see :class:`NotReadCounted`); empty if none."""
    paths = not_read_paths()
    names = [str(c).removesuffix(NOT_READ_MARK) for c in information.columns]
    said = listing([f"`{c}`" for c in names if c.rsplit(": ", 1)[0] in paths])
    if not said or not first:
        return markdown(f"{said} above: a field no captured kernel reads, as said after {after}." * bool(said))
    return markdown(
        f"**{said} above: a field no captured kernel reads.** The guard leaves such fields out of its comparison "
        "(`flexfix.guard.vllm_metadata.NOT_READ`): it reports nothing of them, neither alarm nor information. This "
        "recording was made by an older guard (at the commit its provenance line names, whose source is not shown "
        "here); what it shows of that guard is its result only, each change of the field counted as information (a "
        "`pointer` too, which alarms in any field off the list), never as an alarm, in the table above. A tensor "
        "built anew at every step sits at a new address every step, which harms nothing where no captured kernel "
        "reads it."
    )


class NotReadCounted:
    """:func:`not_read_counted` over a notebook's recordings: in full after the first recording whose information
    counts such a field (not merely the first recording shown), pointing back to that recording's tables after."""

    def __init__(self) -> None:
        self.said_after = ""  # the recording after whose tables the meaning was said in full; empty: not yet

    def __call__(self, information: pd.DataFrame, where: str) -> str:
        text = not_read_counted(information, not self.said_after, f"the tables of {self.said_after}")
        self.said_after = self.said_after or where * bool(text)
        return text


def workarounds(safety: pd.DataFrame, throughput: pd.DataFrame) -> str:
    """``safety``: every-request rows (engine, requests, tokens_differ) of stock engines without the plugin;
    ``throughput``: their tokens/s and the patched engine's (engine, requests, tokens_per_second, patched)."""
    _need(safety, ["engine", "requests", "tokens_differ", "logprobs_differ"], "workarounds")
    _need(throughput, ["engine", "requests", "tokens_per_second", "patched"], "workarounds")
    wrong = safety[safety["tokens_differ"].map(len) + safety["logprobs_differ"].map(len) > 0]
    ref = throughput[throughput["patched"]].set_index("requests")["tokens_per_second"]
    costs = [
        f"{r['engine']} at {int(r['requests'])}: {r['tokens_per_second'] / ref[r['requests']]:.2f}"
        for _, r in throughput[~throughput["patched"]].iterrows()
        if r["requests"] in ref.index
    ]
    lead = (
        "**Without the plugin, stock 0.20.0 answered correctly in each of these ways around the bug**"
        if wrong.empty
        else "**Not every way around the plugin was safe**"
    )
    return markdown(
        f"{lead} ({listing(sorted(set(safety['engine'])), '; ')}): every request alone and among "
        f"{listing(sorted(set(safety['requests'])))} at once gave the same tokens and logprobs in "
        f"{len(safety) - len(wrong)} of {len(safety)} checks.",
        f"Each costs throughput against the patched engine with full graphs (tokens/s ratio): {listing(costs, '; ')}.",
    )


def pointers(stock: pd.DataFrame, fixed: pd.DataFrame) -> str:
    """The ``data_ptr`` columns of the CPU step tables (stock, fixed): one pointer per run, the runs' coinciding?"""
    _need(stock, ["data_ptr"], "pointers")
    _need(fixed, ["data_ptr"], "pointers")
    a, b = sorted(set(stock["data_ptr"])), sorted(set(fixed["data_ptr"]))
    within = (
        "within each run the pointer never moves"
        if len(a) == len(b) == 1
        else f"the pointer moves within a run ({len(a)} and {len(b)} distinct values)"
    )
    if a == b:
        return (
            f"Both tables show `data_ptr` {listing(a)}: {within}, and the two runs' buffers share an address, most "
            "likely because the first run's buffer is freed before the second allocates its own and the allocator "
            "hands the address out again (the tables show the address, not the allocator's reason)."
        )
    return f"The tables' `data_ptr` values differ ({listing(a)}, then {listing(b)}), two buffers: {within}."
