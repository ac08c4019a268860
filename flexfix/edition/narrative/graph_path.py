"""What notebook 01's scenarios (b) and (d) show about the crash's cause, and what supports the CUDA-graph path as
that cause (r0102 round 15, B2): what (b) and (d) ran with, as their records keep it (r0102 round 21, B1), and
what else this code's scenario definitions set (r0102 round 17, B1), so both faulting rules out batch invariance and
no more; the engines
without full graphs are notebook 02's recorded workaround checks (stock vLLM 0.20.0 with piecewise graphs and with
none), whose counts are read here."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown

IMA = "illegal_memory_access"
_NO_FULL = {"piecewise": "piecewise CUDA graphs only", "eager": "no CUDA graphs"}


def _faulted(runs: pd.DataFrame, name: str) -> bool | None:
    group = runs[runs["scenario"] == name]
    return None if group.empty else bool((group["status"] == IMA).any())


_PATCH = {
    "none": "nothing patched",
    "bi_only": "only `supports_batch_invariance` forced True",
    "inprocess": "flexfix's patch applied in the engine's process",
    "plugin": "flexfix's patch through the plugin",
}


def scenario_difference(first: str = "b", second: str = "d") -> str:
    """What scenarios ``first`` and ``second`` differ in and what graph mode they run, by this code's definitions:
    ``flexfix.integration.engine.SCENARIOS`` and ``scenario_env`` (r0102 round 17, B1): the environment variables
    and the patch that differ, and that no scenario definition sets a CUDA graph mode (so each engine runs vLLM's
    default one). These are this code's settings: a run's record does not keep its ``VLLM_ENABLE_V1_MULTIPROCESSING``
    or a graph mode (r0102 round 21, B1), and the sentence says so."""
    import dataclasses

    from flexfix.integration import engine

    a, b = engine.SCENARIOS[first], engine.SCENARIOS[second]
    ea, eb = engine.scenario_env(a), engine.scenario_env(b)
    diffs = [f"`{k}` ({ea.get(k)} in ({first}), {eb.get(k)} in ({second}))" for k in ea if ea.get(k) != eb.get(k)]
    if a.patch != b.patch:
        diffs.append(f"the patch ({_PATCH[a.patch]} in ({first}), {_PATCH[b.patch]} in ({second}))")
    if a.requests != b.requests:
        diffs.append(f"the requests ({listing(list(a.requests))} against {listing(list(b.requests))})")
    graph_fields = [
        f.name for f in dataclasses.fields(engine.Scenario) if any(w in f.name for w in ("graph", "compil", "eager"))
    ]
    graphs = (
        f"their definitions set the graph mode in {listing(graph_fields)}"
        if graph_fields
        else "neither definition sets a CUDA graph mode, so an engine started from them runs vLLM's default one (the "
        'mode the dispatcher table of the section "At which `K` vLLM captures its decode graphs" above is computed '
        f"in, for ({second})'s engine; ({first})'s engine's dispatch was not read back from it)"
    )
    said = listing(diffs) if diffs else "nothing"
    unkept = [f"`{k}`" for k in ea if k not in _RECORDED_ENV] + ["a graph mode"]
    kept = f"{', '.join(unkept[:-1])} or {unkept[-1]}" if len(unkept) > 1 else unkept[0]
    return (
        f"By this code's scenario definitions (`flexfix.integration.engine.SCENARIOS`), they differ in {said}; "
        f"{graphs}. These are this code's settings, not read from the runs: a run's record does not keep {kept}"
    )


# the environment variables a run's record keeps, under its own fields (``batch_invariant``, ``patch``)
_RECORDED_ENV = ("VLLM_BATCH_INVARIANT", "FLEXFIX_PATCH")


def _bi_differs(runs: pd.DataFrame, first: str = "b", second: str = "d") -> bool:
    """Whether the records say ``first`` ran with batch invariance and ``second`` without (each one value)."""
    a = {bool(v) for v in runs.loc[runs["scenario"] == first, "batch_invariant"]}
    b = {bool(v) for v in runs.loc[runs["scenario"] == second, "batch_invariant"]}
    return len(a) == 1 and len(b) == 1 and a != b


def recorded_settings(runs: pd.DataFrame, names: tuple[str, ...] = ("b", "d")) -> str:
    """What the runs' own records say each scenario of ``names`` ran with (r0102 round 21, B1): its
    ``VLLM_BATCH_INVARIANT``, its patch and its requests, each value as recorded (several where its runs differ)."""
    said = []
    for name in names:
        group = runs[runs["scenario"] == name]
        if group.empty:
            continue
        bi = listing(sorted({"1" if bool(v) else "0" for v in group["batch_invariant"]}))
        patch = listing(sorted({_PATCH.get(str(v), str(v)) for v in group["patch"]}))
        reqs = listing(sorted({int(n) for r in group["requests"] for n in (r if isinstance(r, list | tuple) else [r])}))
        said.append(f"({name}) `VLLM_BATCH_INVARIANT`={bi}, {patch}, {reqs} requests")
    return listing(said, sep="; ")


def without_full(rows: pd.DataFrame) -> tuple[list[tuple[str, str]], bool]:
    """Notebook 02's stock engines without full graphs (``engine_sweep.request_rows`` of ``stock_workarounds``): per
    graph mode, its words and how many requests came out otherwise in the batch than alone at each count (``0 of 48
    and 0 of 128``), and whether every engine completed with none differing."""
    from flexfix.edition.tables.outcome_rows import requests_differing

    said, agree = [], True
    for graphs, words in _NO_FULL.items():
        mine = rows[(rows["graphs"] == graphs) & ~rows["patched"].astype(bool)]
        counts = []
        for r in mine.itertuples():
            agree = agree and r.engine_status == "ok" and requests_differing(r._asdict()) == 0
            counts.append(_count(r))
        if counts:
            said.append((words, listing(counts)))
    return said, agree


def _count(r) -> str:
    """One recorded request count of an engine (a row of ``engine_sweep.request_rows``): how many requests came out
    otherwise in the batch than alone (``0 of 48``), or how the engine ended where it did not complete."""
    from flexfix.edition.tables.outcome_rows import requests_differing

    return (
        f"{requests_differing(r._asdict())} of {r.requests}"
        if r.engine_status == "ok"
        else f"`{r.engine_status}` at {r.requests}"
    )


def with_full(safety: pd.DataFrame, rows: pd.DataFrame) -> list[tuple[str, str]]:
    """Notebook 02's recorded stock engines that keep full graphs (r0102 round 23, A2: its third way around the bug,
    at most 16 requests at once), from ``safety`` (``stock_workarounds``) and its ``engine_sweep.request_rows``: per
    engine, 02's words for it (:data:`flexfix.edition.tables.workarounds.WAYS`) with its vLLM argument, and how many
    requests came out otherwise in the batch than alone at each count."""
    from flexfix.edition.tables.workarounds import WAYS, workaround_key

    keys = {r["engine"]: workaround_key(r) for _, r in safety.iterrows()}
    said = []
    for engine, mine in rows[(rows["graphs"] == "full") & ~rows["patched"].astype(bool)].groupby("engine", sort=False):
        graphs, seqs = keys[engine]
        words, arg = WAYS.get((graphs, seqs), (f"`max_num_seqs` {seqs}", f"max_num_seqs={seqs}"))
        said.append((f"full graphs but {words} (`{arg}`)", listing([_count(r) for r in mine.itertuples()])))
    return said


def support(engine_runs: pd.DataFrame, data_dir) -> str:
    """One paragraph: whether (b) and (d) both faulted in ``engine_runs`` and what that shows, then notebook 02's
    recorded stock engines without full graphs and the one with full graphs but few requests at once, counted from
    ``stock_workarounds``."""
    from flexfix.edition import schemas
    from flexfix.edition.tables.outcome_rows import requests_differing
    from flexfix.edition.tables.provenance import recorded_from
    from flexfix.measure import engine_sweep

    b, d = _faulted(engine_runs, "b"), _faulted(engine_runs, "d")
    differ = scenario_difference("b", "d")
    if b and d and not _bi_differs(engine_runs):
        first = (
            f"(b) and (d) both faulted in these runs, but their records say they ran with "
            f"{recorded_settings(engine_runs)}: not one with batch invariance and one without, so they do not tell "
            f"whether the crash belongs to batch invariance. {differ}."
        )
    elif b and d:  # r0102 round 21, B1: the conclusion rests on what the records keep, the rest is scoped
        first = (
            f"(b) and (d) both faulted in these runs. Their records say they ran with "
            f"{recorded_settings(engine_runs)}. So the crash does not belong to batch invariance: that rests on these "
            f"recorded settings alone. {differ}, so these runs do not show whether those unrecorded settings matter; "
            "that the crash belongs to the full-graph path is not shown by (b) and (d) but follows from the mechanism."
        )
    else:
        first = (
            "(b) and (d) did not both fault in these runs, so they do not tell whether the crash belongs to batch "
            f"invariance. {differ}."
        )
    safety, prov = schemas.recorded(data_dir, "stock_workarounds", schemas.ENGINE_SWEEPS)
    rows = engine_sweep.request_rows(safety)
    found, agree = without_full(rows)
    said = [f"with {words}, {counts} requests came out otherwise in the batch than alone" for words, counts in found]
    if not said:
        return markdown(first + " Notebook 02's recorded workaround checks hold no engine without full graphs.")
    model = listing(sorted({str(m) for m in safety.get("model", pd.Series(["?"])).dropna()})) or "?"
    # r0102 round 20, B3: what those checks found, not that they "agree" on the cause: their run's own stock engines
    # with full graphs are its positive control, and where none of them failed the checks cannot tell the cause.
    full = rows[(rows["graphs"] == "full") & ~rows["patched"].astype(bool)]
    control = any(r.engine_status != "ok" or requests_differing(r._asdict()) for r in full.itertuples())
    why = (
        "their run's stock engines with full graphs failed, so they are a test of the full-graph path"
        if control
        else "that is what was recorded, not a test of the cause: those checks had no positive control in their own "
        "run (no stock engine of theirs with full graphs failed either), so they do not contradict the full-graph "
        "path as the cause, and do not show it"
    )
    full_said = "".join(  # r0102 round 23, A2: the file's settings that keep full graphs, named too
        f"; with {words}, {counts} requests came out otherwise in the batch than alone"
        for words, counts in with_full(safety, rows)
    )
    return markdown(
        f"{first} Notebook 02's recorded checks of stock vLLM 0.20.0's ways around the bug ({recorded_from(prov)}, "
        f"{model} model): {listing(said, sep='; ')}{full_said}"
        + (f"; {why}." if agree else ", so they do not all agree with it.")
    )


def k_at_capture_line() -> str:
    """``K at capture`` with its chain in one sentence (r0102 round 16, D6): the capture batch is a uniform decode
    batch of query length 1, so each sequence is one token long, one page per request, and ``K`` is one page per
    request of a query block (:func:`flexfix.edition.glossary.k_at_capture`)."""
    from flexfix.edition import glossary
    from flexfix.mechanism import paged

    k = glossary.k_at_capture()
    pages = paged.cdiv(1, paged.PAGE_SIZE)
    return (
        f"K at capture: {k} (the capture batch is a uniform decode batch, uniform_decode_query_len = 1 token per "
        f"request without speculative decoding, so every sequence is 1 token long: {pages} page per request, and "
        f"K = {paged.Q_BLOCK} * cdiv(1, {paged.PAGE_SIZE}) = {k})"
    )
