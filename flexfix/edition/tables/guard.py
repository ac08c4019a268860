"""The replay guard's recorded runs as small tables: what each engine did, what the guard saw, what it cost.

Each function takes a table read from one of :mod:`flexfix.measure.guard_sets`' results files (a row per
engine: the run's fields, its outcome and its child's records) and keeps what a notebook shows."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable

import pandas as pd

from flexfix.edition.checks import DataError, is_missing
from flexfix.edition.tables.serving import print_guard_lines, served, servers_agree
from flexfix.measure.generations import compare_generations

__all__ = [
    "not_read_paths",
    "guard_summary",
    "captured_through",
    "vllm_check",
    "engine_guard",
    "eager_vs_reference",
    "false_alarms",
    "guard_cost",
    "mutant_table",
    "first_message",
    "servers_agree",
    "RECORDED",
    "stopped_runs",
    "recorded",
    "served",
    "engine_batches",
    "print_guard_lines",
    "max_num_seqs",
    "dispatch_cases",
    "information",
]


def guard_summary(records: Iterable[dict]) -> dict:
    """The guard's own count from a child's records (its ``guard`` record), or an empty dict."""
    found = [r for r in records if r.get("kind") == "guard"]
    return found[-1] if found else {}


def captured_through(summary: dict) -> str:
    """Which of the guard's hooks saw a child's FULL graphs captured, from its ``guard`` record (``hooks`` lists the
    hooks installed, not the ones that fired): the V1 runner's ``CUDAGraphWrapper`` hook notes vLLM's own DEBUG
    check in ``facts`` (``vllm_debug_address_check``) at every capture, so a child with captures and without that
    fact captured through model runner V2's ``CudaGraphManager``."""
    if not summary or not summary.get("graphs_captured"):
        return "no FULL graph captured"
    if "vllm_debug_address_check" in (summary.get("facts") or {}):
        return "CUDAGraphWrapper (V1 runner)"
    return "CudaGraphManager (runner V2)"


def vllm_check(table: pd.DataFrame) -> pd.DataFrame:
    """One row per engine: what the guard's V1 hook read of vLLM's own replay check at capture (the FULL wrapper's
    ``is_debugging_mode``, recorded as ``facts["vllm_debug_address_check"]``), beside the engine's outcome."""
    rows = []
    for _, r in table.iterrows():
        g = guard_summary(r["records"])
        on = (g.get("facts") or {}).get("vllm_debug_address_check")
        rows.append(
            {
                "engine": r["engine"],
                "vLLM's address check (its FULL wrapper's is_debugging_mode)": (
                    "not recorded" if on is None else "on" if on else "off"
                ),
                "graphs captured through": captured_through(g),
                "outcome": r["status"],
            }
        )
    return pd.DataFrame(rows)


def _generations(records: Iterable[dict]) -> dict[int, dict]:
    return {r["requests"]: r for r in records if r.get("kind") == "generations"}


def _fields(alarms: dict) -> str:
    """The field paths of a guard's ``alarms`` (``"path: kind" -> replays``), or ``"none"``."""
    return ", ".join(sorted({key.rsplit(": ", 1)[0] for key in alarms})) or "none"


def _ints(value) -> list[int]:
    return [int(n) for n in value] if isinstance(value, (list, tuple)) else []


def max_num_seqs(r) -> int:
    """The ``max_num_seqs`` an engine ran with: its recorded ``max_num_seqs``, or where that is 0 (not set), what
    :func:`flexfix.measure.engine_sweep.llm_kwargs` gave it: the largest request count of the run, at least 16."""
    if is_missing(r.get("max_num_seqs")):
        raise DataError(f"refusing to give the max_num_seqs of {r.get('engine')!r}: its `max_num_seqs` is missing")
    if r["max_num_seqs"]:
        return int(r["max_num_seqs"])
    fields = ("requests", "every_request", "throughput", "generations", "guard_cost")
    return max(n for f in fields for n in [*_ints(r.get(f)), 16])


def dispatch_cases(table: pd.DataFrame) -> list[tuple[int, int]]:
    """``(max_num_seqs, batch)`` of each recorded engine and each batch whose answers it kept (``generations``),
    smallest batch first, each once: what :func:`flexfix.edition.glossary.decode_dispatch` asks vLLM about."""
    cases = {(max_num_seqs(r), n) for _, r in table.iterrows() for n in _ints(r.get("generations"))}
    return sorted(cases, key=lambda c: (c[1], c[0]))


def engine_guard(table: pd.DataFrame) -> pd.DataFrame:
    """One row per engine: the guard's mode, the ``max_num_seqs`` it ran with (:func:`max_num_seqs`), the requests
    it served, its outcome, and what the guard saw."""
    rows = []
    for _, r in table.iterrows():
        g = guard_summary(r["records"])
        first = g.get("first_alarm") or {}
        rows.append(
            {
                "engine": _with_patch(r),
                "guard": r.get("guard") or "none",
                "max_num_seqs": max_num_seqs(r),
                "requests": ",".join(str(n) for n in (r.get("generations") or r.get("every_request") or [])),
                "outcome": r["status"],
                "replays checked": g.get("replays_checked", 0),
                "replays with an alarm": g.get("replays_alarmed", 0),
                "steps run without the graph": g.get("eager_steps", 0),
                "fields named": _fields(g.get("alarms", {})),
                "first alarm at replay": first.get("replay_number"),  # counted over every graph of the engine
                "first alarm's graph, tokens": _graph_tokens(first.get("key")),
                "graphs captured": g.get("graphs_captured"),
                "graphs captured through": captured_through(g),
            }
        )
    ints = ["first alarm at replay", "first alarm's graph, tokens", "graphs captured"]
    return pd.DataFrame(rows).astype(dict.fromkeys(ints, "Int64"))


def _graph_tokens(key) -> int | None:
    """The token count of a graph's key (vLLM's batch descriptor, ``num_tokens=N``): the padded batch it was
    captured for; None without a key."""
    from flexfix.edition.printed import printed_int

    return printed_int(key, "num_tokens")


def first_message(table: pd.DataFrame) -> str | None:
    """The guard's message of the first engine it stopped (outcome ``guard_refused``), as the child reported it."""
    for _, r in table.iterrows():
        if r["status"] == "guard_refused":
            return r.get("message") or r["detail"]
    return None


def eager_vs_reference(guarded: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """For each engine pair with the same batch-invariance setting, and each request count both recorded: how many
    requests of the guarded engine (``eager``) have the reference's token ids, and its logprobs bitwise."""
    rows = []
    for _, g in guarded.iterrows():
        match = reference[reference["batch_invariant"] == g["batch_invariant"]]
        if match.empty:
            continue
        ref = _generations(match.iloc[0]["records"])
        for n, mine in sorted(_generations(g["records"]).items()):
            if n not in ref:
                continue
            pairs = [
                compare_generations(t, lp, rt, rlp)
                for t, lp, rt, rlp in zip(mine["tokens"], mine["logprobs"], ref[n]["tokens"], ref[n]["logprobs"])
            ]
            rows.append(
                {
                    "engine": g["engine"],
                    "reference": _with_patch(match.iloc[0]),
                    "requests": n,
                    "same tokens": sum(p["tokens_equal"] for p in pairs),
                    "bitwise equal": sum(p["logprobs_bitwise_equal"] for p in pairs),
                    "of": len(pairs),
                }
            )
    return pd.DataFrame(rows)


def _with_patch(r) -> str:
    """An engine's recorded name with ``, patched`` after its graph mode where it ran with flexfix's patch (the words
    of :func:`flexfix.edition.tables.invariance.engine_label`); a stock engine's name says ``stock`` already."""
    name = str(r["engine"])
    if is_missing(r.get("patched")):
        raise DataError(f"refusing to name the reference engine {name!r}: its `patched` is missing")
    if not r["patched"] or "patched" in name:
        return name
    return name.replace("full graphs", "full graphs, patched", 1) if "full graphs" in name else f"{name}, patched"


def _sizes(values) -> str:
    return ",".join(str(n) for n in (values or [])) or "none"


def engine_batches(table: pd.DataFrame) -> pd.DataFrame:
    """What each engine ran besides the answers kept for comparison: the batch sizes of its engine sweep (each batch
    alone and together, notebook 04's ``requests``), the batch sizes at which every request ran alone and among
    the others (``every_request``), and the batch sizes whose every answer was kept (``generations``)."""
    return pd.DataFrame(
        [
            {
                "engine": r["engine"],
                "engine sweep, batch sizes": _sizes(r.get("requests")),
                "every request alone and among": _sizes(r.get("every_request")),
                "answers kept, batch sizes": _sizes(r.get("generations")),
            }
            for _, r in table.iterrows()
        ]
    )


def false_alarms(table: pd.DataFrame) -> pd.DataFrame:
    """One row per engine under ``FLEXFIX_GUARD=log``: graphs captured, replays checked, fields per graph, alarms."""
    rows = []
    for _, r in table.iterrows():
        g = guard_summary(r["records"])
        rows.append(
            {
                "engine": _with_patch(r),  # the recorded name, with ", patched" where it ran with the patch
                "max_num_seqs": max_num_seqs(r),
                "engine sweep, batch sizes": _sizes(r.get("requests")),  # notebook 04's (r20 A3: and 01's, apart)
                "every request alone and among": _sizes(r.get("every_request")),
                "backend": r.get("backend", "FLEX_ATTENTION"),
                "model runner": {"v1": "V1", "v2": "V2"}.get(r.get("runner") or "") or _default_runner(g),
                "outcome": r["status"],
                "graphs captured": g.get("graphs_captured", 0),
                "replays checked": g.get("replays_checked", 0),
                "tensors per graph": g.get("fields_per_graph", 0),
                "alarms": sum(g.get("alarms", {}).values()),
                "fields with an alarm": _fields(g.get("alarms", {})),
                # the hook that saw its graphs captured (every engine installs both: ``hooks`` names them all)
                "graphs captured through": captured_through(g),
            }
        )
    return pd.DataFrame(rows)


def _default_runner(summary: dict) -> str:
    """``default (V1)`` / ``default (V2)``: the runner a release's default turned out to be, by the hook that saw its
    graphs captured (vLLM 0.20.0's default is the V1 runner, 0.26.0's model runner V2); ``default`` without one."""
    through = captured_through(summary)
    return "default (V1)" if "V1" in through else "default (V2)" if "V2" in through else "default"


def information(table: pd.DataFrame) -> pd.DataFrame:
    """One row per engine: how many replays the guard reported each ``field: kind`` as information (a changed
    number or shape, never an alarm), as its summary's ``information`` recorded them; 0 where it reported none."""
    rows = []
    for _, r in table.iterrows():
        info = guard_summary(r["records"]).get("information", {})
        if not isinstance(info, dict):
            raise DataError(f"refusing to count the information of {r['engine']!r}: its `information` is {info!r}")
        rows.append({"engine": _with_patch(r), **info})
    out = pd.DataFrame(rows).set_index("engine")
    out = out.fillna(0).astype(int) if len(out.columns) else out
    return out.rename(columns=lambda c: f"{c}{NOT_READ_MARK}" if str(c).rsplit(": ", 1)[0] in not_read_paths() else c)


# added to an information column of a field the guard of this commit does not compare (NOT_READ): an older guard's count
NOT_READ_MARK = " (older guard only; not compared now)"


def not_read_paths() -> set[str]:
    """The fields the guard of this commit does not compare, as ``Class.field`` (its ``NOT_READ``)."""
    from flexfix.guard.vllm_metadata import NOT_READ

    return {f"{cls}.{field}" for cls, fields in NOT_READ.items() for field in fields}


def guard_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Tokens/s with the guard checking over tokens/s without, in one engine: the ratio of medians and the range of
    the per-repetition ratios; the checks' own share of the wall time, the median repetition's and its range."""
    rows = []
    for _, r in table.iterrows():
        for rec in r["records"]:
            if rec.get("kind") == "guard_cost":
                rows.append(
                    {
                        "engine": _with_patch(r),
                        "max_num_seqs": max_num_seqs(r),
                        "requests": rec["requests"],
                        "tokens/s, guard on": round(rec["tokens_per_second_on"], 1),
                        "tokens/s, guard off": round(rec["tokens_per_second_off"], 1),
                        "on / off": round(rec["ratio"], 4),
                        "lowest pair": round(min(rec["pair_ratios"]), 4),
                        "highest pair": round(max(rec["pair_ratios"]), 4),
                        "repetitions": len(rec["pair_ratios"]),
                        # the same work's slowest over fastest repetition, guard on or off: how much the run drifted
                        "slowest / fastest repetition": round(
                            max(*rec["on_seconds"], *rec["off_seconds"]) / min(*rec["on_seconds"], *rec["off_seconds"]),
                            3,
                        ),
                        **_check_time(rec),
                    }
                )
    return pd.DataFrame(rows)


SHARE = "checking, % of wall time"  # the median repetition's
SPREAD = "checking %, lowest–highest repetition"


def _check_time(rec: dict) -> dict:
    """The guard's own host time in the guarded repetitions (recorded by the runs after dae1e4c): the median share
    of a guarded run's wall time spent checking, in percent, and the mean microseconds per replay checked."""
    shares, seconds, replays = rec.get("check_share"), rec.get("check_seconds"), rec.get("replays_checked")
    if not shares or not seconds or not replays or sum(replays) <= 0:
        return {SHARE: float("nan"), SPREAD: "", "µs per replay checked": float("nan")}
    return {
        SHARE: round(100 * statistics.median(shares), 3),
        SPREAD: f"{100 * min(shares):.2f}–{100 * max(shares):.2f}",  # how much the checks' share varied
        "µs per replay checked": round(1e6 * sum(seconds) / sum(replays), 1),
    }


def mutant_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each planted mutant without the guard (outcome; requests with the clean backend's tokens) and under
    ``FLEXFIX_GUARD=error`` (outcome; the fields the guard named, each with the kind of its alarm, and what the
    first alarm found: capture -> replay)."""
    clean = table[(table["mutant"] == "") & (table["graphs"] == "full")]
    ref = _generations(clean.iloc[0]["records"]) if not clean.empty else {}
    rows = []
    for mutant in sorted(m for m in table["mutant"].unique() if m):
        mine = table[(table["mutant"] == mutant) & (table["graphs"] == "full")]
        plain = mine[mine["guard"] == ""]
        guarded = mine[mine["guard"] == "error"]
        row = {"mutant": mutant}
        if not plain.empty:
            p = plain.iloc[0]
            gens = _generations(p["records"])
            # "ok" is the engine's status (it ran to the end), not a verdict on its answers: say "completed"
            row["without the guard"] = "completed" if p["status"] == "ok" else p["status"]
            row["requests with the clean tokens"] = _same_tokens(gens, ref)
            eager = table[(table["mutant"] == mutant) & (table["graphs"] == "eager")]
            # what the step's metadata asks for: the same mutant without graphs, every step built and run as it is
            row["requests as without graphs"] = (
                _same_tokens(gens, _generations(eager.iloc[0]["records"])) if not eager.empty else "not recorded"
            )
        if not guarded.empty:
            g = guarded.iloc[0]
            row["under FLEXFIX_GUARD=error"] = "completed" if g["status"] == "ok" else g["status"]
            summary = guard_summary(g["records"])
            row["fields named"] = _fields(summary.get("alarms", {}))
            row["alarms (field: kind)"] = ", ".join(sorted(summary.get("alarms", {}))) or "none"
            findings = (summary.get("first_alarm") or {}).get("findings") or []
            row["the first alarm found"] = "; ".join(_once(f) for f in findings) or "none"
            row["graphs captured through"] = captured_through(guard_summary(g["records"]))
        rows.append(row)
    return pd.DataFrame(rows)


_REPEATED = re.compile(
    r"^(?P<head>.*?: (?P<kind>\w+) '?(?P<a>[^' ]+)'? -> '?(?P<b>[^' ]+)'?) "
    r"\((?P=kind) (?P=a) -> (?P=b)(?:, )?(?P<rest>.*)\)$"
)


def _once(finding: str) -> str:
    """A guard finding with the change it states said once: ``seq_lens: pointer 'A' -> 'B' (pointer A -> B, shape
    [32])`` becomes ``seq_lens: pointer A -> B (shape [32])``; any other finding as it is."""
    m = _REPEATED.match(finding)
    if not m:
        return finding
    head = f"{finding.split(': ' + m['kind'], 1)[0]}: {m['kind']} {m['a']} -> {m['b']}"
    return f"{head} ({m['rest']})" if m["rest"] else head


def _same_tokens(mine: dict[int, dict], ref: dict[int, dict]) -> str:
    both = sorted(set(mine) & set(ref))
    if not both:
        return "not recorded"
    n = both[0]
    same = sum(a == b for a, b in zip(mine[n]["tokens"], ref[n]["tokens"]))
    return f"{same} of {len(ref[n]['tokens'])}"


RECORDED = ("guard_stock_error", "guard_stock_error_17", "guard_stock_eager", "guard_patched_reference",
            "guard_false_alarms", "guard_debug", "guard_cost", "guard_v0_20_2", "guard026_false_alarms",
            "guard026_mutants")  # fmt: skip


def recorded(data_dir, names: Iterable[str] = RECORDED) -> dict[str, tuple[pd.DataFrame, dict]]:
    """The guard's recorded GPU files (``<name>-cuda.json`` under ``data_dir``), each read through its schema
    (:data:`flexfix.edition.schemas.GUARD_RUNS`; ``guard_cost``: :data:`~flexfix.edition.schemas.GUARD_COST`), so
    that a file that lost what these views read is refused naming it: name -> (table, provenance)."""
    from flexfix.edition import schemas

    chosen = {"guard_cost": schemas.GUARD_COST}
    return {n: schemas.recorded(data_dir, n, chosen.get(n, schemas.GUARD_RUNS)) for n in names}


def stopped_runs(recorded: dict) -> pd.DataFrame:
    """The runs notebook 07 shows stopped under ``FLEXFIX_GUARD=error``, from :func:`recorded`'s dict:
    ``guard_stock_error`` and the guarded half of ``guard_stock_error_17`` (its other half ran without the guard)."""
    runs = [recorded["guard_stock_error"][0], recorded["guard_stock_error_17"][0].query("guard == 'error'")]
    return pd.concat(runs, ignore_index=True)
