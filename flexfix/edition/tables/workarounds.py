"""What a user of vLLM 0.20.x can do without the plugin (notebook 02): the ways around the bug, whether each answered
every request as it answers it alone, and what each costs in output tokens per second against the patched engine."""

from __future__ import annotations

import pandas as pd

__all__ = ["WAYS", "NOT_RECORDED", "workaround_key", "workaround_table"]

# (graphs, max_num_seqs) of a recorded engine -> (the way around the bug, the vLLM argument that sets it)
WAYS = {
    ("piecewise", 0): ("piecewise CUDA graphs only", 'compilation_config={"cudagraph_mode": "PIECEWISE"}'),
    ("eager", 0): ("no CUDA graphs", "enforce_eager=True"),
    ("full", 16): ("at most 16 requests at once", "max_num_seqs=16"),
}
PATCHED = ("the plugin (patched, full graphs)", "FLEXFIX_PATCH=1")
# A cell of a setting the file behind that column did not record (the checks hold no patched engine).
NOT_RECORDED = "not recorded in this file"


def workaround_key(run) -> tuple[str, int]:
    """``(graphs, max_num_seqs)`` of one recorded engine (a row of an engine-sweep table)."""
    return str(run["graphs"]), int(run.get("max_num_seqs") or 0)


def _way(run) -> tuple[str, str]:
    if bool(run["patched"]):
        return PATCHED
    key = workaround_key(run)
    if key not in WAYS:
        raise ValueError(f"{run['engine']}: no way around the bug is known for graphs={key[0]}, max_num_seqs={key[1]}")
    return WAYS[key]


def workaround_table(safety: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """One row per way around the bug (and the patched engine): how many requests came out otherwise in the batch
    than alone at each request count (``safety``: stock 0.20.0 engines with ``every_request``), and output tokens per
    second at each request count with its ratio to the patched engine's (``cost``: engines with ``throughput``).  Each
    column names the model its engines ran (the checks and the costs may come from different models)."""
    from flexfix.edition.checks import DataError
    from flexfix.measure import engine_sweep

    requests = engine_sweep.request_rows(safety)
    speed = engine_sweep.throughput_rows(cost)
    if requests.empty or speed.empty:
        raise DataError("the workaround tables hold no every-request or no throughput record: nothing to show")
    keys = {r["engine"]: _way(r) for _, r in pd.concat([safety, cost]).iterrows()}
    patched = speed[speed["patched"]].set_index("requests")["tokens_per_second"]
    if patched.empty:
        raise DataError("the workaround costs hold no patched engine: no reference for the ratios")
    models = {r["engine"]: str(r.get("model") or "?") for _, r in pd.concat([safety, cost]).iterrows()}
    rows: dict[tuple[str, str], dict] = {}
    for r in requests.itertuples():
        row = rows.setdefault(keys[r.engine], {})
        differ = len(set(r.tokens_differ) | set(r.logprobs_differ))
        row[f"differed, {r.requests} requests ({models[r.engine]} model)"] = (
            f"{differ} of {r.requests}" if r.engine_status == "ok" else r.engine_status
        )
    for r in speed.itertuples():
        row = rows.setdefault(keys[r.engine], {})
        model = f"({models[r.engine]} model)"
        row[f"tokens/s, {r.requests} {model}"] = round(float(r.tokens_per_second))
        if r.requests not in patched.index:
            raise DataError(f"the workaround costs: no patched engine at {r.requests} requests to compare with")
        row[f"vs patched, {r.requests} {model}"] = round(float(r.tokens_per_second) / float(patched[r.requests]), 2)
    table = pd.DataFrame(
        [{"way around the bug": way, "vLLM setting": setting, **row} for (way, setting), row in rows.items()]
    ).set_index("way around the bug")
    return table.fillna(NOT_RECORDED)
