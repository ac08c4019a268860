"""Notebook 01's results in brief, right under its introduction (r0102 round 13, D1): what the recordings under
``data/`` show, each with the GPU it ran on, in a few lines: the torch-only replays, the engine scenarios, the
every-request stock engine, and the placement runs that make the same misread crash or answer silently wrong.  The
live run's own outcomes follow in each section; the sentence says so."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown

_FRONT = {"guarded": " (memory in front mapped)", "fenced": " (memory in front unmapped)"}


def _counts(statuses: pd.Series) -> str:
    total = len(statuses)
    return listing([f"`{s}` {n} of {total}" for s, n in statuses.value_counts().items()]) or "no run"


def recorded_brief(data_dir, device: str = "cpu", run_engine: bool = True) -> str:
    """Four short lines from the recordings: each outcome counted from its file, each file's GPU from its provenance.

    Each line says where the notebook shows that recording (r0102 round 15, A1): on a GPU run the engine scenarios
    (with ``run_engine``) and the placement runs are rerun live and their sections show only the live runs, so those
    recordings appear in this brief alone; without a GPU the sections show the recordings in place of a live run."""
    from flexfix.edition import schemas
    from flexfix.edition.tables import outcome_cause as cause_tables
    from flexfix.edition.tables.outcomes import every_request_engine
    from flexfix.edition.tables.provenance import recorded_from
    from flexfix.measure import record

    kernel, kernel_prov = schemas.recorded(data_dir, "ima_kernel", schemas.KERNEL_RUNS)
    big = kernel[kernel["batch"] > 16]
    torch_line = "; ".join(f"{copy}: {_counts(g['status'])}" for copy, g in big.groupby("copy", sort=False))
    engines, engine_provs = schemas.recorded(data_dir, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    scen = engines[engines["scenario"].isin(["b", "d"])]
    engine_line = "; ".join(f"({s}): {_counts(g['status'])}" for s, g in scen.groupby("scenario"))
    engine_provs = _sources(engine_provs, record.RECORDED_ENGINE_TABLES, scen)
    every, every_provs = schemas.recorded(data_dir, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    stocks = every[[("stock" in every_request_engine(run)) for _, run in every.iterrows()]]
    stock = [f"{every_request_engine(run)} ended `{run['status']}`" for _, run in stocks.iterrows()]
    every_provs = _sources(every_provs, record.RECORDED_EVERY_REQUEST, stocks)
    cause, cause_prov = cause_tables.recorded(data_dir)
    shown = cause[(cause["copy"] == "as_strided") & (cause["batch"] > 16) & cause["touch"].isna()]
    places = [
        f"`{p}`{_FRONT.get(p, '')}: {_counts(g['status'])}"
        for p, g in shown[shown["placement"] == shown["v_placement"]].groupby("placement", sort=False)
    ]
    gpu = device == "cuda"
    engines_live, places_live = gpu and run_engine, gpu
    return markdown(
        "**The recordings in brief** (read from `data/`; after each, where this notebook shows it: "
        + (
            _gpu_lead(engines_live)  # r0102 round 21, A2: the lead agrees with the bullets below it
            if gpu
            else "without a GPU the sections show these recordings where a GPU run would show its own"
        )
        + '; the table "The crash scenarios in one table" gathers what the sections show):',
        f"* torch-only replays at {listing(sorted(set(big['batch'].astype(int))))} requests "
        f"({recorded_from(kernel_prov)}): {torch_line}; shown again below, beside this run's own torch-only runs;",
        f"* the real vLLM 0.20.0 engine, scenarios (b) and (d) ({recorded_from(engine_provs)}): {engine_line}; "
        + _where(engines_live, "the engine scenarios"),
        f"* every request checked, stock with full graphs ({recorded_from(every_provs)}): {listing(stock) or 'none'}; "
        + "shown again below"
        + (", after this run's own every-request engines;" if engines_live else ";"),
        f"* the same misread cells with both caches placed by hand ({recorded_from(cause_prov)}): "
        f"{listing(places, sep='; ')}; "
        + (  # r0102 round 20, A1: its `default` runs are a row of the same-seeds table, so not "shown only here"
            "this run repeats the placement runs live, and the section below shows its own runs instead; its `default` "
            "runs appear again there, in the table **Which recordings ran the same seeds**."
            if places_live
            else _where(False, "the placement runs").rstrip(";") + "."
        ),
        _KEY,
    )


def _sources(provs: list, names, rows: pd.DataFrame) -> list:
    """The provenances of the files (``names``, in the order ``schemas.recorded`` read them) that ``rows`` came from:
    a bullet names the machine, commit and date of the recordings it counts, not of every file read."""
    names = [names] if isinstance(names, str) else list(names)
    used = set(rows["source"]) if "source" in rows else set(names)
    return [p for n, p in zip(names, provs, strict=True) if n in used] or list(provs)


def _gpu_lead(engines_live: bool) -> str:
    """Where a GPU run shows the recordings: only the engine scenarios' (when this run repeats them) appear nowhere
    else; the torch-only and every-request recordings are shown again below, beside this run's own, and of the
    placement runs the `default` ones."""
    if engines_live:
        return (
            "this GPU run repeats some of them live; only the engine scenarios' recordings are shown here and nowhere "
            "else, as their section shows this run's engines instead; the others appear again below, beside this "
            "run's own runs (of the placement runs, only the `default` ones)"
        )
    return (
        "this GPU run repeats some of them live; each appears again below, beside this run's own runs where it has "
        "any (of the placement runs, the `default` ones)"
    )


def _where(live: bool, what: str) -> str:
    if live:
        return f"shown only here: this run repeats {what} live, and the section below shows its own runs instead;"
    return f"shown again below in place of a live run (this run does not repeat {what});"


# the words of the brief, which it uses before "Words first" defines anything (r0102 round 14, D1)
_KEY = (
    '*Key:* (b), (d): engine scenarios of the section "The real vLLM 0.20.0 engine"; an engine label such as '
    "`tiny, BI=0, full, stock` is the model, `VLLM_BATCH_INVARIANT` (BI) off or on, the graph mode and whether vLLM's "
    "copy is patched; `default`, `guarded`, `fenced`: a KV cache where the allocator put it, behind memory placed "
    'mapped, or behind memory left unmapped (section "Crash or wrong answer: what decides"); `ok` a right answer, '
    "`wrong_result` a silently wrong one, `illegal_memory_access` a crash."
)
