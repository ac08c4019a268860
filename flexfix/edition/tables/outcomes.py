"""The crash scenarios' outcomes: torch-only runs, compute-sanitizer, and the vLLM engine (notebooks 01, 02)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from flexfix.edition.tables.outcome_rows import (  # noqa: F401 (_placement_rows: tests)
    UNCHECKED_OK,
    _every_request_rows,
    _placement_rows,
    _recorded_in,
    _torch_rows,
    engine_max_num_seqs,
)

__all__ = [
    "outcome_summary",
    "engine_summary",
    "threshold_table",
    "sanitizer_view",
    "outcome_table",
    "batch_records",
    "select_scenarios",
    "replay_steps",
    "ChildLog",
    "ENGINE_OK",
    "UNCHECKED_OK",
    "engine_max_num_seqs",
    "every_request_dispatch",
    "every_request_engine",
    "show_whole",
    "dispatch_pairs",
]


def outcome_summary(table: pd.DataFrame, by: tuple[str, ...] = ("copy", "batch")) -> pd.DataFrame:
    """Per group: how many runs ended in each outcome."""
    counts = table.groupby(list(by))["status"].value_counts().unstack(fill_value=0)
    counts["runs"] = counts.sum(axis=1)
    # no name on the columns: rendered, "status" sat above the batch column and read as its name (r0102 round 8, D16)
    counts.columns.name = None
    return counts


# Scenario descriptions as this edition words them, where the recorded one misleads ("unpatched" in a patched one).
_WHAT = {
    # the route named (r0102 round 12, D8): apply() in the engine's own process, as patched_inprocess
    "patched_d": "in-process route: flexfix's vllm_patch.apply() in the engine's process "
    "(VLLM_ENABLE_V1_MULTIPROCESSING=0); scenario (d) (VLLM_BATCH_INVARIANT=0, 48 requests) with the fix",
}


# How the engines' log line words the status `ok` (r0102 round 12, A1; round 20, A2): a scenario engine compared only
# request 0 with itself alone (its `request0_*` fields; request 0 sits in query block 0, which the bug never misreads),
# the every-request engines every request; so a scenario engine's `ok` is a run that completed without a fault.
ENGINE_OK = (
    "ok (completed without a fault; each scenario engine compared only request 0 with itself alone, "
    "the every-request engines every request)"
)


# The results files the recorded torch-only and sanitizer runs come from (flexfix.measure.record's plan).
_KERNEL_FILE, _SANITIZER_FILE = "ima_kernel", "ima_sanitizer"


def _what(scenario: str, what: str) -> str:
    return _WHAT.get(scenario, what)


def engine_summary(table: pd.DataFrame, recorded_in: str = "this run") -> pd.DataFrame:
    """One line per engine scenario run: what it is, what happened, the batches it completed, the engine's last word,
    and which recording it comes from (a scenario repeated in several recordings has one line per recording;
    ``recorded_in`` names the recording of a table without a ``source`` column: "this run", or the one file it was
    read from)."""
    out = table[["scenario", "what", "status"]].copy().rename(columns={"status": "outcome"})
    out["what"] = [_what(n, w) for n, w in zip(out["scenario"], out["what"])]
    out["batch sizes completed"] = [", ".join(str(r["requests"]) for r in recs) or "none" for recs in table["records"]]
    # the engine's last word where it did not complete (an ok run's detail only repeats its description)
    out["detail"] = [d.split("] ")[-1] if st != "ok" else "" for d, st in zip(table["detail"], table["status"])]
    out["recorded_in"] = _recorded_in(table, recorded_in)
    return out.set_index("scenario")


def threshold_table(table: pd.DataFrame) -> pd.DataFrame:
    """Stock vLLM 0.20.0 (no patch, VLLM_BATCH_INVARIANT=0): which request counts completed, with each engine's
    ``max_num_seqs`` (which sets the batch sizes it captured full graphs for)."""
    rows = []
    for _, r in table[table["patch"] == "none"].iterrows():
        if not r["batch_invariant"]:
            done = {rec["requests"] for rec in r["records"]}
            how = "one engine, growing batches" if r["scenario"] == "threshold" else "fresh engine"
            # the engines' max_num_seqs: their largest batch, at least 16 (flexfix.integration.engine)
            seqs = max(max(r["requests"]), 16)
            for n in r["requests"]:
                state = (
                    "completed"
                    if n in done
                    else (r["status"] if n == min(set(r["requests"]) - done) else "not reached")
                )
                rows.append(
                    {"requests": n, "how": how, "max_num_seqs": seqs, "scenario": r["scenario"], "outcome": state}
                )
    return pd.DataFrame(rows).sort_values(["how", "requests"]).reset_index(drop=True)


def sanitizer_view(table: pd.DataFrame, lines: int = 6) -> pd.DataFrame:
    """The sanitizer runs, one row per copy, with the launch each recorded (r0102 round 20, B2: ``frozen`` is the
    compiled kernel launched without a graph, with the captured strides) and the first lines of memcheck's report."""
    out = table[["copy", "launch", "status", "sanitizer_errors"]].copy()
    out["first_report"] = [
        " | ".join(ln.strip("= ").strip() for ln in ls[1 : 1 + lines]) for ls in table["sanitizer_lines"]
    ]
    return out.set_index("copy")


def outcome_table(
    kernel: pd.DataFrame,
    sanitizer: pd.DataFrame,
    engine: pd.DataFrame,
    sources: tuple[str, str, str] = ("recorded", "recorded", "recorded"),
    this_run: pd.DataFrame | None = None,
    this_run_source: str = "this run",
    every: pd.DataFrame | None = None,
    every_this_run: pd.DataFrame | None = None,
    placements: pd.DataFrame | None = None,
    placements_source: str = "recorded",
    this_run_file: str | Path | None = None,
) -> pd.DataFrame:
    """The outcomes in one table; ``sources`` says where each of the three tables comes from (the
    recorded files, or this run), a column of its own.  ``this_run``: this run's torch-only runs, listed first
    (``this_run_source`` names them, with their launch); None gives one row saying they are not in this table.
    ``every`` (recorded) and ``every_this_run``: the every-request engines; ``placements``: the cache-placement runs
    (``placements_source`` says where they come from); each left out when None.  ``this_run_file``: the results
    file this run's torch-only runs were written to, named in their ``recorded_in``."""
    rows = []
    if this_run is None:
        rows.append(
            {"from": this_run_source, "experiment": "torch-only", "case": "not given to this table", "outcome": "—"}
        )
    else:
        written = f"RESULTS_DIR/{Path(this_run_file).name}" if this_run_file else this_run_source
        for launch, runs in this_run.groupby("launch", sort=False):
            rows += _torch_rows(runs, this_run_source, f"torch-only, {launch} launch", written)
    rows += _torch_rows(
        kernel, sources[0], "torch-only, graph launch", _KERNEL_FILE if sources[0] == "recorded" else sources[0]
    )
    rows += [
        {
            "from": sources[1],
            "experiment": "compute-sanitizer memcheck",
            "case": f"{r.copy} ({r.sanitizer_errors} errors)",
            "outcome": r.status,
            "recorded_in": _SANITIZER_FILE if sources[1] == "recorded" else sources[1],
        }
        for r in sanitizer.itertuples()
    ]
    rows += [
        {
            "from": sources[2],
            "experiment": "vLLM 0.20.0 engine",
            "case": f"({r.scenario}) {_what(r.scenario, r.what)}",
            "outcome": UNCHECKED_OK if r.status == "ok" else r.status,
            "recorded_in": where,
        }
        for r, where in zip(engine.itertuples(), _recorded_in(engine, sources[2]))
    ]
    if every_this_run is not None:
        rows += _every_request_rows(every_this_run, this_run_source)
    if every is not None:
        rows += _every_request_rows(every, "recorded")
    if placements is not None:
        rows += _placement_rows(placements, placements_source)
    out = pd.DataFrame(rows)
    out["recorded_in"] = out["recorded_in"].fillna(out["from"]) if "recorded_in" in out else out["from"]
    return out


def batch_records(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario x batch that an engine completed."""
    rows = [{"scenario": r["scenario"], **rec} for _, r in table.iterrows() for rec in r["records"]]
    return pd.DataFrame(rows)


def select_scenarios(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The rows of ``table`` for the engine scenarios ``names``, in that order; a ResultsError naming every
    scenario that is missing (a recorded file that lost rows must not be shown as if complete)."""
    from flexfix.edition.results import ResultsError

    missing = [n for n in names if n not in set(table["scenario"])]
    if missing:
        raise ResultsError(
            f"no recorded run of scenario(s) {', '.join(missing)} (have {sorted(set(table['scenario']))})"
        )
    return pd.concat([table[table["scenario"] == n] for n in names], ignore_index=True)


def replay_steps(runs: pd.DataFrame, copy: str, batch: int, seed: int) -> tuple[str, pd.DataFrame]:
    """One torch-only run of :func:`~flexfix.measure.record.kernel_outcomes`: its outcome line, and its steps (capture,
    then each replay) with the width ``K``, the strides the step was written with and those the launch read with, the
    error against the fp32 reference and the step's outcome."""
    run = runs[(runs["copy"] == copy) & (runs["batch"] == batch) & (runs["seed"] == seed)]
    if len(run) != 1:
        raise ValueError(f"no single run of copy={copy!r}, batch={batch}, seed={seed} among these runs")
    r = run.iloc[0]
    detail = str(r["detail"])  # an ok or wrong run's detail names the run again: said once (r0102 D12)
    name = detail if detail.startswith(f"{copy} copy,") else f"{copy} copy, batch {batch}, seed {seed}"
    line = f"{name}: {r['status']}" + ("" if name == detail else f" ({detail})")
    line += f"; {_tolerance_said(r.get('device'))}; each step's longest sequence (`max_seq_len`) is set by the "
    line += "scenario (flexfix.mechanism.kernel_repro.KernelScenario), the other requests' lengths drawn at random up "
    line += "to it from the seed, and `K` follows from `max_seq_len` (flexfix.mechanism.paged.DecodeStep.width)"
    steps = pd.DataFrame(r["records"])[["step", "K", "written_stride", "launch_stride", "max_error", "outcome"]]
    steps["ran"] = "yes"
    planned = _planned_steps(copy, batch, seed)
    # each step's longest sequence, from which K follows (r0102 round 12, D5): read from the plan, as K is
    steps.insert(1, "max_seq_len", planned["max_seq_len"].iloc[: len(steps)].to_list())
    if len(steps) < len(planned) and r["status"] != "ok" and len(steps):
        frozen = steps["launch_stride"].iloc[0]  # a graph launches every replay with the capture's strides
        later = planned.iloc[len(steps) :].assign(launch_stride=[frozen] * (len(planned) - len(steps)))
        later["max_error"], later["outcome"] = float("nan"), "no answer"
        later["ran"] = ["no: the process died here"] + ["no: never reached"] * (len(later) - 1)
        steps = pd.concat([steps, later[steps.columns]], ignore_index=True)
        line += "; the steps it never finished are shown as planned (K and the strides the copy writes, from the plan)"
    return line, steps


def _tolerance_said(device) -> str:
    """What ``max_error`` is compared with: the tolerance of the device's dtype (kernel_repro.tolerance)."""
    import torch

    from flexfix.mechanism.kernel_repro import tolerance

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return (
        f"a step is wrong_result when its max_error, against a float32 reference computed from the block tables "
        f"alone, exceeds {tolerance(dtype):.0e} (the {str(dtype).removeprefix('torch.')} tolerance)"
    )


def _planned_steps(copy: str, batch: int, seed: int) -> pd.DataFrame:
    """The torch-only scenario's steps as planned, computed on CPU: each step's ``K`` and the strides ``copy`` writes
    its ``kv_indices`` with (:func:`flexfix.mechanism.kernel_repro.scenario_steps`, the same steps on any device)."""
    from flexfix.mechanism import paged
    from flexfix.mechanism.kernel_repro import COPIES, KernelScenario, scenario_steps

    sc = KernelScenario(copy=copy, batch=batch, seed=seed)
    buffers, rows = paged.PersistentBuffers(sc.shape, device="cpu"), []
    for i, step in scenario_steps(sc, device="cpu"):
        views = buffers.write(step, COPIES[copy])
        rows.append({"step": "capture" if i == 0 else f"replay {i}", "K": step.width,
                     "max_seq_len": int(step.seq_lens.max()),
                     "written_stride": list(views.kv_indices.stride())})  # fmt: skip
    return pd.DataFrame(rows)


def every_request_engine(run) -> str:
    """An every-request engine's label as its rows carry it (``tiny, BI=1, full, patched``;
    :func:`flexfix.edition.tables.every_request_table`)."""
    if all(k in run.index for k in ("model", "batch_invariant", "graphs", "patched")):
        patched = "patched" if bool(run["patched"]) else "stock"
        return f"{run['model']}, BI={int(run['batch_invariant'])}, {run['graphs']}, {patched}"
    engine = str(run["engine"]).replace(" graphs", "")
    return engine if "stock" in engine else f"{engine}, patched"


def every_request_dispatch(every: pd.DataFrame, with_engine: bool = False) -> list[tuple]:
    """``(max_num_seqs, batch)`` of each batch an every-request engine completed, in order: what to ask vLLM's
    dispatcher (:func:`flexfix.edition.glossary.decode_dispatch`) whether the batch replayed a FULL graph.  With
    ``with_engine``, ``(engine, max_num_seqs, batch)``: the engine's label first, so the dispatch table says whose
    batch each row is (engines of one check can have different ``max_num_seqs``)."""
    pairs = []
    for _, run in every.iterrows():
        seqs = engine_max_num_seqs(run)
        head = (every_request_engine(run),) if with_engine else ()
        pairs += [(*head, seqs, int(r["requests"])) for r in run["records"] if r.get("kind") == "every_request"]
    return list(dict.fromkeys(pairs))


def dispatch_pairs(threshold: pd.DataFrame) -> list[tuple[int, int]]:
    """``(max_num_seqs, requests)`` of the threshold table's counts past one query block that completed or first
    faulted: the decode batches whose graph mode decides what their outcome says (one pair each, in order)."""
    past = threshold[(threshold["requests"] > 16) & (threshold["outcome"] != "not reached")]
    return list(dict.fromkeys(zip(past["max_num_seqs"].astype(int), past["requests"].astype(int))))


def show_whole(table: pd.DataFrame) -> None:
    """Display ``table`` with every row (pandas cuts a table past ``display.max_rows`` to its ends and a "...")."""
    from IPython.display import display

    with pd.option_context("display.max_rows", None):
        display(table)


class ChildLog:
    """A ``progress`` callback for the child-process runners (``record.kernel_outcomes``, ``record.record_engine``,
    ``outcome_cause.run_scenarios``) that keeps their log lines in ``lines`` instead of printing each, and says in one
    line how many children ran, how they ended and how long they took (r0102 D5: a log is not a lesson; the tables
    that follow give the outcomes)."""

    _LINE = re.compile(r": (\w+) \((exit \S+|killed by \S+), ([\d.]+) s\)")

    def __init__(self, words_are_outcomes: bool = True) -> None:
        """``words_are_outcomes`` False for the placement runs (``outcome_cause.run_scenarios``), whose children's
        last status words are not the outcomes of their tables; for the other runners they are the status column."""
        self.lines: list[str] = []
        self.words_are_outcomes = words_are_outcomes

    def __call__(self, line: str) -> None:
        self.lines.append(str(line))

    def summary(self, what: str, where: str = "in the table below", ok_as: str = "ok") -> str:
        """One line: how many children ran, how long each took and how they ended; ``where`` names the table that
        counts their status (r0102 round 7, A5: the table right below may be another one); ``ok_as`` the words for
        the status `ok` (r0102 round 12, A1: an engine's `ok` is a run that completed, its answers unchecked)."""
        found = [m for m in map(self._LINE.search, self.lines) if m]
        if not found:
            return f"{what}: no child process reported"
        ends = Counter(m.group(1) for m in found)
        secs = [float(m.group(3)) for m in found]
        runs = f"{what}: {len(found)} run{'s' if len(found) > 1 else ''}, each alone in a fresh process"
        runs += ", so that a crash ends only its own run"
        low, high = f"{min(secs):.0f}", f"{max(secs):.0f}"
        runs += f" (about {low} s each)" if low == high else f" ({low}-{high} s each)"
        if not self.words_are_outcomes:  # a child's last word is not where its run went wrong: the tables say that
            return f"{runs}; the tables below say how each ended"
        return f"{runs}; their status {where}: " + ", ".join(
            f"{n} {ok_as if w == 'ok' else w}" for w, n in ends.most_common()
        )
