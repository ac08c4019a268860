"""Notebook 02's cost recording (``stock_workaround_cost``): what it keeps of each engine's workload, read from its
records (r0102 round 21, B2), so that "the same model and the same requests" of the ratios to the patched engine is
shown, not asserted: each engine's model, patch, graph mode, ``VLLM_BATCH_INVARIANT``, ``max_num_seqs``, the request
counts timed, the output tokens asked of each request, the timed repetitions and the output tokens it produced. The
prompts themselves are not kept: that every engine got the same ones is this code's setting
(:mod:`flexfix.measure.engine_sweep`), and the sentence says so."""

from __future__ import annotations

import numbers

import pandas as pd

from flexfix.edition.narrative import listing, markdown

__all__ = ["workload_table", "workload_said"]


def _refuse(run, what: str):
    from flexfix.edition.checks import DataError

    raise DataError(f"refusing the cost recording (stock_workaround_cost), engine {run.get('engine')!r}: {what}")


def _count(run, value, what: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        _refuse(run, f"{what} is {value!r}, not a whole number of at least {least}")
    return int(value)


def _startup_bi(run) -> str:
    from flexfix.edition.narrative.cost_setup import startup_record

    startup = startup_record(run["records"])
    if startup is None or startup.get("VLLM_BATCH_INVARIANT") not in ("0", "1"):
        _refuse(run, "no startup record with its VLLM_BATCH_INVARIANT (0 or 1)")
    return startup["VLLM_BATCH_INVARIANT"]


def _outputs(run) -> dict[int, int]:
    out = {}
    for r in run["records"] or []:
        if isinstance(r, dict) and r.get("kind") == "throughput":
            n = _count(run, r.get("requests"), "a throughput record's request count")
            out[n] = _count(run, r.get("output_tokens"), f"the output tokens at {n} requests", least=0)
    if not out:
        _refuse(run, "no throughput record")
    return out


def workload_table(cost: pd.DataFrame) -> pd.DataFrame:
    """One row per engine of the cost recording: its settings and workload, each as its record keeps it."""
    from flexfix.edition.tables.workarounds import PATCHED, WAYS, workaround_key

    rows = []
    for _, run in cost.iterrows():
        way = PATCHED[0] if bool(run["patched"]) else WAYS.get(workaround_key(run), (str(run["engine"]),))[0]
        if not isinstance(run.get("model"), str) or not isinstance(run.get("graphs"), str):
            _refuse(run, "no model or no graph mode")
        bi = _startup_bi(run)
        seqs = _count(run, run.get("max_num_seqs"), "max_num_seqs", least=0)
        outs = _outputs(run)
        rows.append(
            {
                "engine": way,
                "model": run["model"],
                "copy": "patched" if bool(run["patched"]) else "stock",
                "graphs": run["graphs"],
                "VLLM_BATCH_INVARIANT": bi,
                "max_num_seqs": str(seqs) if seqs else "not set (the largest request count)",
                "requests timed": listing([str(n) for n in outs]),
                "output tokens asked per request": _count(run, run.get("throughput_tokens"), "throughput_tokens"),
                "timed repetitions": _count(run, run.get("repeats"), "repeats"),
                "output tokens produced": listing([f"{t} ({n} requests)" for n, t in outs.items()]),
            }
        )
    return pd.DataFrame(rows).set_index("engine")


def workload_said(cost: pd.DataFrame) -> str:
    """What the engines share, by their records, and what the recording does not keep (the prompts)."""
    from flexfix.measure import engine_sweep

    table = workload_table(cost).drop(columns=["copy", "graphs", "max_num_seqs"])
    same = [c for c in table.columns if table[c].nunique() == 1]
    differ = [c for c in table.columns if c not in same]
    shared = listing([f"{c}: {table[c].iloc[0]}" for c in same], sep="; ")
    models = sorted(set(cost["model"]))
    lengths = listing([f"{engine_sweep.PROMPT_LENGTHS[m][0]} to {engine_sweep.PROMPT_LENGTHS[m][1]}" for m in models])
    text = (
        f"**What the cost recording keeps of each engine's workload** (the table above, read from its records): "
        f"every engine of it has {shared or 'nothing in common'}"
        + (f"; they differ in {listing(differ)}" if differ else "")
        + ". The recording does not keep the prompts: that each engine was given the same ones, drawn by "
        f"`flexfix.measure.engine_sweep` with one fixed seed for all engines ({lengths} tokens long, decoded "
        "greedily), is what this code does, not something the recording shows."
    )
    return markdown(text)
