"""The rows of notebook 01's one table of outcomes (``outcomes.outcome_table``): the torch-only runs, the
every-request engines and the cache-placement runs, each counted as a row."""

from __future__ import annotations

import pandas as pd


def _recorded_in(table: pd.DataFrame, default: str = "this run") -> list[str]:
    """Which recording each row comes from (its results file, ``source``), so that repeats of one scenario are told
    apart, with "run k of n" where one recording holds a scenario more than once); ``default`` where the table has no
    ``source`` ("this run" for a live run; the file's name for one recorded file read alone)."""
    if "source" not in table:
        return [default] * len(table)
    keys = list(zip(table["scenario"], table["source"])) if "scenario" in table else list(table["source"])
    total = {k: keys.count(k) for k in keys}
    seen: dict = {}
    out = []
    for key, source in zip(keys, table["source"]):
        seen[key] = seen.get(key, 0) + 1
        out.append(f"{source}, run {seen[key]} of {total[key]}" if total[key] > 1 else str(source))
    return out


def _every_request_rows(every: pd.DataFrame, source: str) -> list[dict]:
    """One row per every-request engine: its label (saying "patched" where it is), the batches it planned and
    completed, and its status."""
    rows = []
    modes = [_batch_modes(run) for _, run in every.iterrows()]
    # r0102 round 17, D6: a file holding several engines names each row's engine, not "run k of n" (which in the
    # scenario rows means a repeat of one scenario)
    sources = list(every["source"]) if "source" in every else []
    for i, (r, mode) in enumerate(zip(every.itertuples(), modes)):
        done = [int(rec["requests"]) for rec in r.records if rec.get("kind") == "every_request"]
        name = r.engine.replace(" graphs", "")
        label = name if "stock" in name else name + ", patched"
        where = (
            (sources[i] + f", its {label} engine")
            if sources and sources.count(sources[i]) > 1
            else (sources[i] if sources else source)
        )
        rows.append(
            {
                "from": source,
                "experiment": "vLLM 0.20.0 engine, every request",
                "case": f"{label}: batches "
                f"{', '.join(map(str, r.every_request))} planned, {', '.join(map(str, done)) or 'none'} completed",
                "outcome": _every_outcome(r.status, r.records, mode),
                "recorded_in": where,
            }
        )
    return rows


# What an engine row's `ok` means in the one table (r0102 round 12, A1): the engine scenarios checked only request 0
# against itself alone, so `ok` there is a run that completed without a fault, not a correct one.
UNCHECKED_OK = "completed (request 0 only)"  # its first request compared with itself alone: no test of the fix


def engine_max_num_seqs(run) -> int:
    """The ``max_num_seqs`` an engine-sweep run started its engine with: its own where it set one, else the largest
    request count it planned (at least 16), as :func:`flexfix.measure.engine_sweep.llm_kwargs` sets it."""
    own = run.get("max_num_seqs") if hasattr(run, "get") else None
    if own is not None and not pd.isna(own) and int(own) > 0:
        return int(own)
    planned = [int(n) for key in ("requests", "every_request", "throughput", "generations", "guard_cost")
               for n in _counts(run.get(key) if hasattr(run, "get") else None)]  # fmt: skip
    return max([*planned, 16])


def _counts(value) -> list:
    """The request counts a run field holds: a list when read from a file, a tuple (or an array) in a live table."""
    import numpy as np

    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def _batch_modes(run: pd.Series) -> dict[int, str]:
    """What vLLM's dispatcher runs each completed every-request batch of ``run`` with (``FULL``, ``PIECEWISE`` or
    ``NONE``), on an engine with that run's ``max_num_seqs`` (:func:`flexfix.edition.glossary.decode_dispatch`)."""
    from flexfix.edition.glossary import decode_dispatch

    done = [int(rec["requests"]) for rec in run["records"] if rec.get("kind") == "every_request"]
    if not done:
        return {}
    table = decode_dispatch([(engine_max_num_seqs(run), n) for n in done])
    return dict(zip(table["decode batch"].astype(int), table["runs with"]))


def requests_differing(rec: dict) -> int:
    """How many requests of one every-request batch came out otherwise than alone (tokens or logprobs)."""
    return len(set(rec.get("tokens_differ", [])) | set(rec.get("logprobs_differ", [])))


_differ = requests_differing


def full_graph_split(run: pd.Series) -> tuple[list[dict], list[dict]]:
    """(the every-request batches ``run`` completed that vLLM's dispatcher replays with a FULL graph, the others):
    only the first can misread (:func:`_batch_modes`)."""
    modes = _batch_modes(run)
    done = [rec for rec in run["records"] if rec.get("kind") == "every_request"]
    full = [rec for rec in done if modes.get(int(rec["requests"])) == "FULL"]
    return full, [rec for rec in done if modes.get(int(rec["requests"])) != "FULL"]


def _every_outcome(status: str, records: list[dict], modes: dict[int, str] | None = None) -> str:
    """An every-request engine's outcome: its status, with how many requests of its completed batches came out
    otherwise than alone (its answers were checked against each request alone, not against a reference).  Where
    ``modes`` (batch -> graph mode from vLLM's dispatcher) marks a batch other than FULL, only the FULL-graph
    batches are counted as the test (a batch run outside a FULL graph tests nothing), and the others are named
    (r0102 round 13, D6)."""
    done = [rec for rec in records if rec.get("kind") == "every_request"]
    if not done:
        return status
    bad = sum(map(_differ, done))
    word = "wrong_result" if status == "ok" and bad else status
    modes = modes or {}
    other = [rec for rec in done if modes.get(int(rec["requests"]), "FULL") != "FULL"]
    if not other:
        return f"{word} ({bad} of {sum(int(rec['requests']) for rec in done)} requests differed from alone)"
    full = [rec for rec in done if rec not in other]
    said = (
        f"{sum(map(_differ, full))} of {sum(int(rec['requests']) for rec in full)} requests in FULL-graph batches "
        f"({', '.join(str(rec['requests']) for rec in full)}) differed from alone"
        if full
        else "no batch replayed a FULL graph"
    )
    for rec in other:
        said += (
            f"; batch {rec['requests']} ran {modes[int(rec['requests'])]} ({_differ(rec)} of {rec['requests']} "
            "differed; it tests nothing)"
        )
    return f"{word} ({said})"


def _torch_rows(runs: pd.DataFrame, source: str, experiment: str, recorded_in: str) -> list[dict]:
    """Torch-only runs, one row per copy, batch and outcome with its count and seeds (a row per run made the one table
    long: r0102 D13), as the placement rows are counted."""
    if runs.empty:
        return []
    size = runs.groupby(["copy", "batch"], sort=False).size()
    return [
        {"from": source, "experiment": experiment,
         "case": f"{copy}, batch {batch}: {len(grp)} of {size[(copy, batch)]} runs "
         f"(seeds {', '.join(map(str, sorted(set(grp['seed']))))})",
         "outcome": status, "recorded_in": recorded_in}
        for (copy, batch, status), grp in runs.groupby(["copy", "batch", "status"], sort=False)
    ]  # fmt: skip


def _placement_rows(runs: pd.DataFrame, source: str) -> list[dict]:
    """The cache-placement runs (notebook 01, "what decides"), one row per scenario and outcome, with its count: the
    scenarios of the placement table, labelled as there (a run that read in front of a cache is its own scenario)."""
    from flexfix.edition.tables.outcome_cause import SCENARIO_KEYS, run_outcomes, scenario_label

    keyed = runs.assign(touch=runs["touch"].fillna("").astype(str)) if "touch" in runs else runs
    keyed = keyed.assign(outcome=run_outcomes(runs))  # a fault in the run's own read is not the replay's outcome
    keys = [k for k in SCENARIO_KEYS if k in keyed]
    size = keyed.groupby(keys, sort=False).size()
    rows = []
    for key, grp in keyed.groupby([*keys, "outcome"], sort=False):
        *arm, st = key
        label = scenario_label(*arm)
        rows.append(
            {
                "from": source,
                "experiment": "torch-only, caches placed by hand",
                "case": f"{label}: {len(grp)} of {size[tuple(arm)]} runs "
                f"(seeds {', '.join(map(str, sorted(set(grp['seed']))))})",
                "outcome": st,
                "recorded_in": "outcome_cause" if source == "recorded" else source,
            }
        )
    return rows
