"""What a reproduction run saw, in words (notebooks 01 and 02): torch-only runs, compute-sanitizer, engines."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import DataError, require, require_numbers, require_steps
from flexfix.edition.narrative import OUTCOME_WORDS, listing, markdown, plural, span
from flexfix.edition.narrative.sanitizer import sanitizer_read
from flexfix.edition.narrative.threshold import completed_full, crash_threshold
from flexfix.edition.tables.outcomes import engine_max_num_seqs, every_request_engine

__all__ = [
    "KERNEL_RUN_COLUMNS",
    "SANITIZER_COLUMNS",
    "ENGINE_SCENARIO_COLUMNS",
    "kernel_outcomes",
    "faces",
    "sanitizer_read",
    "engine_scenarios",
    "crash_threshold",
    "every_request",
    "completed_full",
]

# The columns each function states something of (a notebook reads its recorded files with them: results.recorded(...,
# columns=...)): torch-only runs (ima_kernel), compute-sanitizer runs (ima_sanitizer), engine scenarios.
KERNEL_RUN_COLUMNS = ("copy", "batch", "seed", "status", "records")
SANITIZER_COLUMNS = ("copy", "status", "sanitizer_errors", "sanitizer_lines")
ENGINE_SCENARIO_COLUMNS = ("scenario", "what", "status", "records")

CRASHES = ("illegal_memory_access", "index_error", "timeout", "error")  # no answer at all

BOTH_OUTCOMES = (
    "A crash and a silently wrong answer are two faces of this one misread; which one a run gets, and why, is "
    "examined below."
)


def scenario_sizes(prov: dict | None) -> tuple | None:
    """The scenario sizes a recording kept (its capture length and replay lengths), or None where it kept none."""
    params = (prov or {}).get("parameters") or {}
    if "capture_len" not in params or "replay_lens" not in params:
        return None
    return int(params["capture_len"]), tuple(int(n) for n in params["replay_lens"])


def sizes_said(named: list[tuple[str, dict | None]]) -> tuple[bool, str]:
    """Whether the recordings ``named`` ((where, provenance) pairs) kept the same scenario sizes, and a clause that
    says so from their provenance: the sizes where all kept them, else which did not keep them."""
    sizes = {where: scenario_sizes(prov) for where, prov in named}
    missing = [where for where, size in sizes.items() if size is None]
    if missing:
        return False, (
            f"same seeds; the scenario sizes are not among the parameters of {listing(missing)}, so these "
            "parameters do not show that they ran the same sizes"
        )
    if len(set(sizes.values())) > 1:
        said = listing([f"{w}: capture {c}, replays {listing(list(r))}" for w, (c, r) in sizes.items()])
        return False, f"same seeds, but other scenario sizes ({said})"
    capture, replays = next(iter(sizes.values()))
    return True, f"same seeds and scenario sizes (capture {capture}, replays {listing(list(replays))})"


def _steps_word(records: list[dict]) -> str:
    """Where a run first went wrong: "the capture step", "replay 1", ..."""
    for i, rec in enumerate(records):
        if rec.get("outcome") != "ok":
            return "the capture step" if i == 0 else f"replay {i}"
    return f"replay {len(records)}"  # the process died after the last recorded step


def _under_tolerance(group: pd.DataFrame) -> str:
    """``, under the bfloat16 tolerance 5e-02``: the tolerance the runs' one device compares ``max_error`` with
    (:func:`flexfix.mechanism.kernel_repro.tolerance`, bfloat16 on a GPU, float32 on CPU); empty if the device is
    not recorded or mixed."""
    devices = set(group["device"]) if "device" in group else set()
    if len(devices) != 1:
        return ""
    import torch

    from flexfix.mechanism.kernel_repro import tolerance

    dtype = torch.bfloat16 if devices == {"cuda"} else torch.float32
    return f", under the {str(dtype).removeprefix('torch.')} tolerance {tolerance(dtype):.0e}"


def kernel_outcomes(runs: pd.DataFrame, where: str, both_faces: bool = True) -> str:
    """One paragraph per (copy, batch) of torch-only runs (``flexfix.measure.record.kernel_outcomes``): how many were
    right at every step, and how the others went wrong and where, with the errors against the fp32 reference; the
    sentence on the bug's two faces unless ``both_faces`` is False (a notebook says it once)."""
    what = f"the torch-only runs of {where}"
    require(runs, what, values=("copy", "batch", "status", "records"))
    for (_, run), steps in zip(runs.iterrows(), require_steps(runs, what, "records", ["outcome"])):
        measured = [s.get("max_error") for s in steps if s["outcome"] in ("ok", "wrong_result")]
        if measured:
            require_numbers(measured, what, "a measured step's max_error")
        if run["status"] == "ok" and any(s["outcome"] != "ok" for s in steps):
            raise DataError(f"{what}: a run with status 'ok' has a step that is not: the table contradicts itself")
    lines, wrong_groups, right_groups = [], [], []
    for (copy, batch), group in runs.groupby(["copy", "batch"], sort=False):
        n = len(group)
        counts = group["status"].value_counts()
        ok = int(counts.get("ok", 0))
        errors = [r["max_error"] for recs in group["records"] for r in recs if r.get("max_error") is not None]
        if ok == n:
            right_groups.append(f"`{copy}` at batch {batch}")
            lines.append(
                f"* `{copy}`, batch {batch}: right at every step in all {plural(n, 'run')} "
                f"(max error against the fp32 reference {span(errors, '{:.1e}')}{_under_tolerance(group)})."
            )
            continue
        wrong_groups.append(f"`{copy}` at batch {batch} ({n - ok} of {plural(n, 'run')})")
        parts = [f"{int(c)} with {OUTCOME_WORDS.get(s, s)}" for s, c in counts.items() if s != "ok"]
        first = sorted({_steps_word(recs) for recs in group.loc[group.status != "ok", "records"]})
        capture_errs = [recs[0]["max_error"] for recs in group["records"] if recs and recs[0].get("max_error")]
        wrong = [
            r["max_error"]
            for recs in group["records"]
            for r in recs
            if r.get("outcome") == "wrong_result" and r.get("max_error") is not None
        ]
        line = f"* `{copy}`, batch {batch}: {n - ok} of {plural(n, 'run')} went wrong ({listing(parts)})"
        line += f", first at {listing(first)}"
        silent = [
            i
            for i, (status, recs) in enumerate(zip(group["status"], group["records"]))
            if status != "wrong_result" and any(r.get("outcome") == "wrong_result" for r in recs)
        ]
        if silent:
            line += (
                f"; {plural(len(silent), 'of these runs', 'of these runs')} also answered a later replay silently "
                "wrong (a step that read only pages inside the cache, but not the request's)"
            )
        if capture_errs:
            line += f"; the capture step itself was right (error {span(capture_errs, '{:.1e}')})"
        if wrong:
            line += f"; the wrong steps were off by {span(wrong, '{:.2g}')}"
        lines.append(line + ".")
    if wrong_groups:
        head = f"**What {where} saw:** {listing(wrong_groups)} went wrong"
        head += f"; {listing(right_groups)} matched the reference at every step." if right_groups else "."
        if not runs["status"].isin(CRASHES).any():
            head += (
                " None of them crashed: every wrong run answered silently wrong, so these runs show no illegal "
                "memory access, the notebook's title notwithstanding. The notebook looks for it again in the real "
                'engine (section "The real vLLM 0.20.0 engine") and with the memory in front of the KV cache '
                'unmapped (section "Crash or wrong answer: what decides", which also says what makes a run crash).'
            )
    else:
        head = f"**What {where} saw:** every run matched the reference at every step."
    # The two faces of the bug are worth a sentence only where the buggy copy ran.
    both = BOTH_OUTCOMES if both_faces and (runs["copy"] == "as_strided").any() else ""
    return markdown(head, "\n".join(lines), both)


def _faces(runs: pd.DataFrame) -> dict[int, str]:
    buggy = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16)]
    return {int(r.seed): str(r.status) for r in buggy.itertuples()}


def faces(
    this_run: pd.DataFrame,
    this_where: str,
    recorded: pd.DataFrame,
    recorded_where: str,
    device: str,
    this_prov: dict | None = None,
    recorded_prov: dict | None = None,
) -> str:
    """The `as_strided` runs past one query block of two runs, seed by seed: the same outcome or another one. On a CPU
    run the first is the frozen-launch analog, whose index error stands for a crash: it is not compared with a GPU.
    That both read the same cells is said only where both provenances (``this_prov``, ``recorded_prov``) kept the
    same scenario sizes."""
    require(recorded, "the recorded torch-only runs", values=("copy", "batch", "seed", "status"))
    theirs = _faces(recorded)
    counts = pd.Series(list(theirs.values()), dtype=object).value_counts()
    said = listing([f"{plural(int(c), 'run')} with {OUTCOME_WORDS.get(s, s)}" for s, c in counts.items()])
    if device != "cuda":
        return markdown(
            f"The recorded GPU runs of `as_strided` past one query block ended in {said}. This run is the CPU analog: "
            "it shows which cells a replay reads, not which outcome (a crash or a silently wrong answer) a GPU run "
            "shows."
        )
    require(this_run, "this run's torch-only runs", values=("copy", "batch", "seed", "status"))
    mine = _faces(this_run)
    common = sorted(set(mine) & set(theirs))
    if not common:
        return markdown(f"{this_where} and {recorded_where} share no seed of `as_strided` past one query block.")
    same = [s for s in common if mine[s] == theirs[s]]
    other = [s for s in common if mine[s] != theirs[s]]
    text = f"Seed by seed, `as_strided` past one query block ({plural(len(common), 'seed')} in both runs): "
    if other:
        pairs = sorted({(mine[s], theirs[s]) for s in other})
        text += (
            f"**{len(other)} of {len(common)} gave another outcome in {this_where} than in {recorded_where}** ("
            + listing([f"{OUTCOME_WORDS.get(a, a)} here, {OUTCOME_WORDS.get(b, b)} there" for a, b in pairs])
            + ")"
        )
        text += f"; {len(same)} the same." if same else "."
    else:
        text += f"the same outcome in both runs for all {len(common)}"
        buggy = [t[(t["copy"] == "as_strided") & (t["batch"] > 16)] for t in (this_run, recorded)]
        same_step = all(len({_steps_word(list(r)) for t in buggy for r in t.loc[t["seed"] == s, "records"]}) == 1
                        for s in common)  # fmt: skip
        same_sizes, sizes = sizes_said([(this_where, this_prov), (recorded_where, recorded_prov)])
        cells = "the same kernel and misread cells" if same_sizes else "the same kernel"
        text += (f", at the same step: the two figures of the errors draw the same crosses ({cells}; {sizes})"
                 f"{_errors_compared(this_run, recorded)}." if same_step else ".")  # fmt: skip
    return markdown(text)


def _errors_compared(this_run: pd.DataFrame, recorded: pd.DataFrame) -> str:
    """Whether the two runs measured the same error at every step of every (copy, batch, seed) both ran."""
    key = ["copy", "batch", "seed"]
    both = this_run[key + ["records"]].merge(recorded[key + ["records"]], on=key, suffixes=("_a", "_b"))
    uneven = sum(len(a) != len(b) for a, b in zip(both.records_a, both.records_b))
    pairs = [
        (x.get("max_error"), y.get("max_error")) for a, b in zip(both.records_a, both.records_b) for x, y in zip(a, b)
    ]
    steps = [p for p in pairs if p != (None, None)]
    if not steps:
        return ""
    same = sum(a == b for a, b in steps)
    if same == len(steps):
        text = f"; so are the measured errors, equal at all {plural(len(steps), 'step')} both runs measured"
    else:
        text = f"; the measured errors differ at {len(steps) - same} of the {plural(len(steps), 'step')}"
        text += " both runs measured"
    if uneven:
        text += (
            f" (the two runs recorded different numbers of steps for {plural(uneven, 'scenario')}; only the steps "
            "both have are compared)"
        )
    return text


def _engine_word(status: str) -> str:
    return "completed" if status == "ok" else OUTCOME_WORDS.get(status, status)


def engine_scenarios(runs: pd.DataFrame, names: list[str]) -> str:
    """Scenario by scenario: what it is and what every run of it did (a scenario may be recorded several
    times: the repeats count)."""
    require(runs, "the engine scenarios", values=("scenario", "what", "status"))
    lines = []
    for name in names:
        group = runs[runs["scenario"] == name]
        if group.empty:
            lines.append(f"* ({name}): not in these results.")
            continue
        counts = group["status"].value_counts()
        said = listing([f"{_engine_word(s)} ({c} of {len(group)})" for s, c in counts.items()])
        lines.append(f"* ({name}) {group['what'].iloc[0]}: {said}.")
    return markdown("\n".join(lines))


def every_request(
    runs: pd.DataFrame,
    rows: pd.DataFrame,
    dispatch: pd.DataFrame | None = None,
    full_elsewhere: list[int] = (),
    gpus: tuple[str, str] | None = None,
) -> str:
    """The every-request check (each request alone, then all together; ``rows`` from
    :func:`flexfix.edition.tables.every_request_table`): per engine, its ``max_num_seqs``, whether any request came
    out otherwise in the batch than alone (and in which query block), which batches it completed, and the batch it
    did not complete; with ``dispatch`` (:func:`flexfix.edition.glossary.decode_dispatch` of those engines), which of
    its batches vLLM's dispatcher runs with a FULL graph; with ``full_elsewhere`` (:func:`completed_full` of the same
    run's crash-threshold engines), whether a batch it faulted at was completed there replaying a FULL graph; with
    ``gpus`` (the GPU of those engines, the GPU of these), that comparison is made only where the two are the same."""
    other_gpu = gpus is not None and gpus[0] != gpus[1]
    if other_gpu:
        full_elsewhere = ()
    require(runs, "the every-request engines", ["every_request"], values=("engine", "status"))
    counts = ("requests", "requests_with_other_tokens", "requests_with_other_logprobs")
    require(rows, "the every-request rows", ["their_query_blocks", "max_abs_logprob_diff"], values=("engine", *counts))
    require(
        rows,
        "the every-request rows",
        values=("max_abs_logprob_diff",),
        where=lambda t: t["requests_with_other_tokens"] + t["requests_with_other_logprobs"] > 0,
        condition="where requests came out differently",
    )
    lines = []
    for _, run in runs.iterrows():
        planned = list(run.get("every_request") or [])
        label = every_request_engine(run)
        mine = rows[rows["engine"] == label]
        done = [int(n) for n in mine["requests"]]
        differing = mine[mine["requests_with_other_tokens"] + mine["requests_with_other_logprobs"] > 0]
        if len(differing):
            found = [
                f"at {r['requests']} requests {plural(int(r['requests_with_other_tokens']), 'request')} came out with "
                f"other tokens than alone (query block {listing(r['their_query_blocks'])}; logprobs off by up to "
                f"{r['max_abs_logprob_diff']:.3g})"
                for _, r in differing.iterrows()
            ]
            line = f"* **{label}** answered wrongly: {listing(found, sep='; ')}"
        elif done:
            line = (
                f"* **{label}** answered every request as it does alone (tokens and bitwise "
                f"logprobs) at {listing(done)} requests"
            )
        elif run["status"] == "ok" and planned:
            raise DataError(
                f"the every-request engines: {label} completed, but no row of the table is its: the rows and the "
                "runs name their engines differently"
            )
        else:
            line = f"* **{label}** completed no batch"
        seqs = engine_max_num_seqs(run)
        line = line.replace(f"**{label}**", f"**{label}** (`max_num_seqs` {seqs})", 1)
        if dispatch is not None:
            key = dispatch["engine"] == label if "engine" in dispatch else dispatch["max_num_seqs"] == seqs
            pairs = zip(dispatch[key]["decode batch"], dispatch[key]["runs with"])
            full = sorted({int(b) for b, m in pairs if m == "FULL" and int(b) > 16})
            if full:
                many = len(full) > 1
                said = f"batch{'es' * many} of {listing(full)} replay{'s' * (not many)}"
                line += f"; by vLLM's dispatcher its {said} a FULL decode graph"
        line += f". It was given batches of {listing(planned)} requests and completed {listing(done) or 'none of them'}"
        if run["status"] != "ok":
            rest = [n for n in planned if n not in done]
            line += f"; then {OUTCOME_WORDS.get(run['status'], run['status'])}" + (
                f", before it completed the batch of {rest[0]} (the engine's status in the table)" if rest else ""
            )
            if rest and rest[0] in full_elsewhere:
                line += (
                    f". An engine of the crash-threshold table completed a batch of {rest[0]} replaying a FULL decode "
                    "graph too, so vLLM's dispatch does not explain this fault: not every misreading replay faults "
                    '(section "Crash or wrong answer: what decides"), so the batch at which an engine dies varies'
                )
        lines.append(line + ".")
    if other_gpu and (runs["status"] != "ok").any():
        lines.append(
            f"\nThe crash-threshold engines ran on {gpus[0]}, these on {gpus[1]}: whether an engine there completed "
            "the batch these faulted at replaying a FULL graph, and so whether vLLM's dispatch explains the fault, "
            "is not compared across GPUs."
        )
    return markdown("\n".join(lines))


def every_request_lead(live: pd.DataFrame | None, data_dir, where_live: str) -> str:
    """The every-request check's outcome first, one clause per engine (r0102 round 12, D4: the caveats came before any
    result): this run's engines where it ran them (``live``), else the recorded ones read from ``data_dir``; how many
    requests of each completed batch came out otherwise than alone, and how the engine ended."""
    from flexfix.edition import schemas
    from flexfix.edition.tables.provenance import recorded_where
    from flexfix.measure import record

    if live is not None:
        runs, where = live, where_live
    else:
        runs, provs = schemas.recorded(data_dir, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
        where = recorded_where(provs)
    require(runs, "the every-request engines", ["every_request", "records"], values=("engine", "status"))
    said = []
    for _, run in runs.iterrows():
        done = [rec for rec in run["records"] if rec.get("kind") == "every_request"]
        differ = [len(set(r.get("tokens_differ", [])) | set(r.get("logprobs_differ", []))) for r in done]
        batches = listing([f"{d} of {r['requests']}" for d, r in zip(differ, done)]) or "no batch completed"
        rest = [n for n in run["every_request"] if n not in {int(r["requests"]) for r in done}]
        end = "and it completed every batch" if run["status"] == "ok" else f"then `{run['status']}`"
        end += f" before it completed the batch of {rest[0]}" if run["status"] != "ok" and rest else ""
        said.append(f"**{every_request_engine(run)}**: {batches} requests differed from alone, {end}")
    return markdown(
        f"{EVERY_REQUEST_KEY}\n\n**The outcome first** ({where}): " + "; ".join(said) + ". Why the batches and engines "
        "differ, and how to read the tables, follows."
    )


# r0102 round 13, D8: the engine labels, read before the outcome line that uses them.
EVERY_REQUEST_KEY = (
    "*Key:* an engine is named `model, BI=…, graph mode, stock|patched`: the model (`tiny`: the tiny Llama of the "
    "section on the real engine), `BI=` its `VLLM_BATCH_INVARIANT`, the CUDA-graph mode, and `stock` (vLLM 0.20.0 as "
    "shipped: the positive control, where the bug can show) or `patched` (with flexfix's fix, which notebook 02 "
    "introduces: the negative control, where nothing should differ)."
)
