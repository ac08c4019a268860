"""Notebook 01's recordings in brief, right under its introduction (r0102 round 13, D1): every results file under
``data/`` that the notebook prints, one table row per experiment, each file named by machine, commit and time, with
what it gave and where the notebook shows it (r0102 round 22, A2: the sanitizer and the patched every-request engines
were missing; D1: plain words, no scenario letters or engine labels before the sections explain them).  Each file is
named in the form ``recorded on <GPU>, commit <c>, <time>``, which the edition index counts (round 22, A1)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural

_FRONT = {
    "default": " (where the allocator put it)",
    "guarded": " (mapped memory in front)",
    "fenced": " (unmapped memory in front)",
}
_HEAD = "| experiment | recording | what it gave | where this notebook shows it |\n|---|---|---|---|\n"


def _counts(statuses: pd.Series) -> str:
    total = len(statuses)
    return listing([f"`{s}` {n} of {total}" for s, n in statuses.value_counts().items()]) or "no run"


def _recorded(provs) -> str:
    """``recorded on <machine>, commit <c>, <time>`` for each distinct file, joined by ``<br>`` (one table cell)."""
    from flexfix.edition.tables.provenance import recorded_on

    provs = [provs] if isinstance(provs, dict) else list(provs)
    return "<br>".join(dict.fromkeys(recorded_on(p) for p in provs))


def _row(what: str, provs, gave: str, where: str) -> str:
    return f"| {what} | {_recorded(provs)} | {gave} | {where} |"


def _every_gave(every: pd.DataFrame) -> str:
    """Per engine of the every-request check: stock or patched, how many requests differed from alone over the
    batches it completed, and how it ended."""
    from flexfix.edition.tables.outcome_rows import requests_differing
    from flexfix.edition.tables.outcomes import every_request_engine

    said = []
    for _, run in every.iterrows():
        label = every_request_engine(run)
        done = [r for r in run["records"] if r.get("kind") == "every_request"]
        differ = sum(requests_differing(r) for r in done)
        sizes = [int(r["requests"]) for r in done]
        kind = "stock" if label.endswith("stock") else "patched"
        bi = f" `VLLM_BATCH_INVARIANT={int(run['batch_invariant'])}`" if "batch_invariant" in run else ""
        batches = f"batch{'es' if len(sizes) > 1 else ''} of {listing(sizes)}" if sizes else "no batch completed"
        said.append(
            f"{kind}{bi}: {differ} of {plural(sum(sizes), 'request')} differed from alone ({batches}), "
            f"ended `{run['status']}`"
        )
    return listing(said, sep="; ")


def recorded_brief(data_dir, device: str = "cpu", run_engine: bool = True, run_sanitizer: bool = False) -> str:
    """One table row per experiment whose recording the notebook prints (``device``, ``run_engine`` and
    ``run_sanitizer`` decide which: a GPU run repeats some of them live and shows its own instead), each outcome
    counted from its file, each file's machine, commit and time from its provenance."""
    from flexfix.edition import schemas
    from flexfix.edition.narrative import graph_path
    from flexfix.edition.tables import outcome_cause as cause_tables
    from flexfix.edition.tables.outcomes import every_request_engine
    from flexfix.measure import engine_sweep, record

    gpu = device == "cuda"
    engines_live, places_live, sanitizer_live = gpu and run_engine, gpu, gpu and run_sanitizer
    kernel, kernel_prov = schemas.recorded(data_dir, "ima_kernel", schemas.KERNEL_RUNS)
    big = kernel[kernel["batch"] > 16]
    batches = listing(sorted(set(big["batch"].astype(int))))
    rows = [
        _row(
            f"torch-only replays, {batches} requests",
            kernel_prov,
            "; ".join(f"`{copy}`: {_counts(g['status'])}" for copy, g in big.groupby("copy", sort=False)),
            'section "The torch-only runs as recorded on a GPU"' + (", after this run's own" if gpu else ""),
        )
    ]
    if not sanitizer_live:
        sanitizer, sanitizer_prov = schemas.recorded(data_dir, "ima_sanitizer", schemas.SANITIZER_RUNS)
        errors = "; ".join(
            f"`{r['copy']}`: {plural(int(r['sanitizer_errors'] or 0), 'error')}" for _, r in sanitizer.iterrows()
        )
        rows.append(
            _row(
                "compute-sanitizer on the torch-only scenario",
                sanitizer_prov,
                errors,
                'section "What compute-sanitizer sees", not rerun '
                + ("(`RUN_SANITIZER` is False)" if gpu else "(no GPU here)"),
            )
        )
    cause, cause_prov = cause_tables.recorded(data_dir)
    shown = cause[(cause["copy"] == "as_strided") & (cause["batch"] > 16) & cause["touch"].isna()]
    same = shown[shown["placement"] == shown["v_placement"]]
    rows.append(
        _row(
            "the same misread cells, KV caches placed by hand",
            cause_prov,
            listing([f"`{p}`{_FRONT.get(p, '')}: {_counts(g['status'])}" for p, g in _by_placement(same)], sep="; "),
            "only its `default` runs, in the table **Which recordings ran the same seeds**: this run repeats the "
            'placement runs live (section "Crash or wrong answer: what decides")'
            if places_live
            else 'section "Crash or wrong answer: what decides", in place of a live run',
        )
    )
    engines, engine_provs = schemas.recorded(data_dir, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    scen = engines[engines["scenario"].isin(["b", "d"])]
    gave = "; ".join(f"({s}) {g['what'].iloc[0]}: {_counts(g['status'])}" for s, g in scen.groupby("scenario"))
    if engines_live:
        where = 'here only: this run repeats the engine runs live (section "The real vLLM 0.20.0 engine")'
    else:
        gave += "; these files also hold the other engine runs that section shows"
        where = 'section "The real vLLM 0.20.0 engine", in place of a live run'
    used = _sources(engine_provs, record.RECORDED_ENGINE_TABLES, scen) if engines_live else engine_provs
    rows.append(_row("the real vLLM 0.20.0 engine, scenarios (b) and (d)", used, gave, where))
    safety, safety_prov = schemas.recorded(data_dir, "stock_workarounds", schemas.ENGINE_SWEEPS)
    safety_rows = engine_sweep.request_rows(safety)
    said, _ = graph_path.without_full(safety_rows)
    said += graph_path.with_full(safety, safety_rows)  # r0102 round 23, A2: every setting of the file, full graphs too
    rows.append(
        _row(
            "stock vLLM 0.20.0's ways around the bug, every request alone, then all together (notebook 02's checks)",
            safety_prov,
            "; ".join(f"{words}: {counts} requests differed from alone" for words, counts in said),
            'quoted in section "The real vLLM 0.20.0 engine"; notebook 02 shows it whole',
        )
    )
    every, every_provs = schemas.recorded(data_dir, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    graphs = listing(sorted({every_request_engine(r).split(", ")[2] for _, r in every.iterrows()}))
    rows.append(
        _row(
            f"every request alone, then all together, {graphs} graphs: stock and patched",
            every_provs,
            _every_gave(every),
            'section "Every request checked: stock vs patched"' + (", after this run's own" if engines_live else ""),
        )
    )
    n = len({p for r in rows for p in r.split(" | ")[1].split("<br>")})
    return markdown(
        f"**What this notebook shows from earlier runs.** Besides what it measures live, it prints "
        f"{plural(n, 'recording')}: results files under `data/`, each written by one earlier run and named by the "
        "machine, commit and time it ran at. One row per experiment; the section named in the last column explains "
        "it.",
        _HEAD + "\n".join(rows),
        _KEY,
    )


def _by_placement(runs: pd.DataFrame):
    return runs.groupby("placement", sort=False)


def _sources(provs: list, names, rows: pd.DataFrame) -> list:
    """The provenances of the files (``names``, in the order ``schemas.recorded`` read them) that ``rows`` came from:
    a row names the machine, commit and date of the recordings it counts, not of every file read."""
    names = [names] if isinstance(names, str) else list(names)
    used = set(rows["source"]) if "source" in rows else set(names)
    return [p for n, p in zip(names, provs, strict=True) if n in used] or list(provs)


# the outcome words of the table, which it uses before any section defines them (r0102 round 14, D1)
_KEY = (
    "*Outcomes:* `ok` a right answer (an engine: it completed), `wrong_result` a silently wrong one, "
    "`illegal_memory_access` a crash."
)
