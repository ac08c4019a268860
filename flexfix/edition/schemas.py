"""The recorded tables the notebooks read, each with what its readers need: columns, values, nested records.

A notebook reads a recorded file through :func:`recorded` with the file's :class:`Schema`: every column its tables,
figures and sentences show must be there (``columns``), with a value wherever one is expected (``values``: never
null), every nested record (an engine's batches, a run's steps, a serving stage) with its keys, and the rules that
tie them together hold (a run that completed holds every batch it planned).  A file that lost a column, whose
values were nulled or whose nested records were emptied is refused with a
:class:`flexfix.edition.results.ResultsError` naming the file, the record and what it lacks -- never shown as if
whole.  Columns that may legitimately be null (a signal for a process that was not killed, the exit status of a
server that had not exited) are in ``columns`` only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from flexfix.edition import results
from flexfix.edition.checks import is_missing

__all__ = [
    "Schema",
    "check_records",
    "recorded",
    "KERNEL_RUNS",
    "SANITIZER_RUNS",
    "ENGINE_SCENARIOS",
    "ENGINE_SWEEPS",
    "KERNEL_CELLS",
    "DECODE_TIMING",
    "RELEASES",
    "PATCH_CHECKS",
    "SERVING",
    "GUARD_RUNS",
    "GUARD_COST",
    "GUARD_SERVING",
]

Rule = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Schema:
    """What the readers of one kind of recorded table need (see the module doc)."""

    what: str
    values: tuple[str, ...]
    columns: tuple[str, ...] = ()
    steps: str | None = None  # the column of nested records (a list of objects in every record)
    step_kind: str | None = None  # the nested records' key that says which kind each is ("kind", "stage")
    step_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by kind; "*" for every kind
    step_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    step_skipped: str | None = None  # a nested record whose key of this name is set was not run: it needs no more
    rules: tuple[Rule, ...] = ()


def _step_problem(schema: Schema, step: Any) -> str | None:
    if not isinstance(step, dict):
        return "is not an object"
    kind = step.get(schema.step_kind) if schema.step_kind else "*"
    if schema.step_kind and (is_missing(kind) or kind not in schema.step_values):
        return f"has no known {schema.step_kind} ({kind!r})"
    if schema.step_skipped and step.get(schema.step_skipped):
        return None if "requests" in step else "lacks requests"
    values = (*schema.step_values.get("*", ()), *(schema.step_values.get(kind, ()) if kind != "*" else ()))
    columns = (*schema.step_columns.get("*", ()), *(schema.step_columns.get(kind, ()) if kind != "*" else ()))
    lacking = [k for k in (*values, *columns) if k not in step]
    if lacking:
        return f"lacks {', '.join(lacking)}"
    empty = [k for k in values if is_missing(step[k])]
    return f"has no value for {', '.join(empty)}" if empty else None


def check_records(path: str | os.PathLike, table: pd.DataFrame, schema: Schema) -> None:
    """The nested records and the rules of ``schema`` on a table read from ``path`` (columns and values were
    checked by :func:`flexfix.edition.results.read_results`); a :class:`~flexfix.edition.results.ResultsError`."""
    for i, record in enumerate(table.to_dict(orient="records")):
        if schema.steps is not None:
            steps = record[schema.steps]
            if not isinstance(steps, list):
                raise results.ResultsError(f"{path}: record {i}: {schema.steps} is not a list ({schema.what})")
            for j, step in enumerate(steps):
                problem = _step_problem(schema, step)
                if problem:
                    raise results.ResultsError(
                        f"{path}: record {i}: {schema.steps}[{j}] {problem}: refusing to show {schema.what}"
                    )
        for rule in schema.rules:
            problem = rule(record)
            if problem:
                raise results.ResultsError(f"{path}: record {i}: {problem}: refusing to show {schema.what}")


def recorded(
    data_dir: str | os.PathLike, names: str | Sequence[str], schema: Schema, device: str = "cuda"
) -> tuple[pd.DataFrame, Any]:
    """``results.recorded`` (one name: ``(table, provenance)``) or ``results.recorded_all`` (a list of names:
    ``(table with a source column, [provenance, ...])``), every file checked against ``schema``."""
    single = isinstance(names, str)
    tables, provs = [], []
    for name in [names] if single else list(names):
        path = results.results_path(data_dir, name, device)
        table, prov = results.read_results(path, columns=schema.columns, values=schema.values)
        check_records(path, table, schema)
        tables.append(table if single else table.assign(source=name))
        provs.append(prov)
    if not tables:
        raise ValueError("recorded needs at least one results name")
    if single:
        return tables[0], provs[0]
    return pd.concat(tables, ignore_index=True), provs


# The rules.


def _ok_steps_ok(record: Mapping[str, Any]) -> str | None:
    steps = record["records"]
    if not steps:
        return "a run without a single step (nothing was measured)"
    if record["status"] == "ok" and any(s["outcome"] != "ok" for s in steps):
        return "status 'ok' with a step that is not"
    return None


def _errors_have_lines(record: Mapping[str, Any]) -> str | None:
    if record["sanitizer_errors"] and not record["sanitizer_lines"]:
        return f"{record['sanitizer_errors']} errors reported and no line of the report"
    return None


def _batches_planned(record: Mapping[str, Any]) -> str | None:
    planned, done = list(record["requests"]), [s["requests"] for s in record["records"]]
    if any(n not in planned for n in done):
        return f"batches {done} that were not planned ({planned})"
    if record["status"] == "ok" and sorted(done) != sorted(planned):
        return f"status 'ok' but batches {done} of the {planned} planned"
    return None


def _kinds_planned(record: Mapping[str, Any]) -> str | None:
    steps = record["records"]
    for kind, column in (("invariance", "requests"), ("every_request", "every_request"), ("throughput", "throughput")):
        planned = set(record[column] or [])
        done = {s["requests"] for s in steps if s.get("kind") == kind}
        if not done <= planned:
            return f"{kind} records at {sorted(done - planned)} requests, which {column} does not plan"
        if record["status"] == "ok" and done != planned:
            return f"status 'ok' but {kind} records at {sorted(done)} of the {sorted(planned)} planned"
    if not any(s.get("kind") == "startup" for s in steps) and record["status"] == "ok":
        return "status 'ok' without its startup record"
    return None


def _seqs_known(record: Mapping[str, Any]) -> str | None:
    """max_num_seqs: absent in the files recorded before the option existed (the default), never null, and the one
    the engine's name says (``..., max_num_seqs 16``)."""
    seqs = record.get("max_num_seqs", 0)
    if is_missing(seqs):
        return "max_num_seqs is null (absent would be the default)"
    said = re.search(r"max_num_seqs (\d+)", str(record["engine"]))
    if said and int(said.group(1)) != seqs:
        return f"an engine named for max_num_seqs {said.group(1)} with max_num_seqs {seqs}"
    return None


_MEASURED_STAGE = ("ok", "errored", "errors", "compared", "bitwise_equal", "tokens_differ", "logprobs_differ")


def _stages_ran(record: Mapping[str, Any]) -> str | None:
    if record["status"] != "startup_failed" and not record["records"]:
        return f"status {record['status']!r} without a single stage"
    for stage in record["records"]:
        if stage["stage"] == "stream" and not stage.get("skipped"):
            empty = [k for k in _MEASURED_STAGE if is_missing(stage.get(k))]
            if empty:
                return f"its streamed stage has no value for {', '.join(empty)}"
    return None


def _cell_measured(record: Mapping[str, Any]) -> str | None:
    if record["outcome"] == "ok":
        empty = [k for k in ("bitwise_equal", "max_abs_diff", "max_error_vs_reference") if is_missing(record[k])]
        if empty:
            return f"a measured cell (outcome 'ok') without {', '.join(empty)}"
    return None


def _affected_copy_known(record: Mapping[str, Any]) -> str | None:
    if record["verdict"] == "affected" and is_missing(record["copy_sha256"]):
        return "an affected release without the hash of its copy_to_persistent"
    return None


def _patched_release_measured(record: Mapping[str, Any]) -> str | None:
    if record["release_class"] == "as_strided":
        empty = [k for k in ("bi_before", "bi_after", "copy_before", "copy_after") if is_missing(record[k])]
        if empty:
            return f"an affected release without {', '.join(empty)}"
    return None


def _server_said(record: Mapping[str, Any]) -> str | None:
    if not record["log_tail"] and record["status"] != "startup_failed":
        return "a server whose log kept no line"
    if record["ima_in_log"] and not record["ima_lines"]:
        return "an illegal memory access in the log without the line naming it"
    if record["status"] == "server_died" and is_missing(record["server_exited_with"]):
        return "a server that died without its exit status"
    return None


def _plugin_said(record: Mapping[str, Any]) -> str | None:
    said = record.get("plugin_log", record.get("plugin_stderr"))
    if not isinstance(said, list):
        return "no plugin_log or plugin_stderr (what the plugin said)"
    if len(said) != 1 and not any("the plugin said" in g for g in record["gaps"]):
        return f"the plugin said {len(said)} lines and no gap names it"
    return None


_GUARD_PLANS = (("invariance", "requests"), ("every_request", "every_request"), ("generations", "generations"))


def _guard_run_whole(record: Mapping[str, Any]) -> str | None:
    """A guard run's records are the ones it planned, its guard's count is there, a refusal has its message."""
    steps, plans = record["records"], (*_GUARD_PLANS, ("guard_cost", "guard_cost"), ("throughput", "throughput"))
    if not any(record[column] for _, column in plans):
        return "a run that planned no batch (requests, every_request, generations, guard_cost, throughput empty)"
    for kind, column in plans:
        planned, done = set(record[column]), {s["requests"] for s in steps if s["kind"] == kind}
        if not done <= planned or (record["status"] == "ok" and done != planned):
            return f"{kind} records at {sorted(done)} requests, status {record['status']!r}, {column} {sorted(planned)}"
    if record["guard"] and not any(s["kind"] == "guard" for s in steps):
        return f"a run under FLEXFIX_GUARD={record['guard']} without its guard record"
    if record["status"] == "guard_refused" and is_missing(record.get("message")):
        return "a run the guard stopped without the guard's message"
    alarmed = [s for s in steps if s["kind"] == "guard" and s["replays_alarmed"] and is_missing(s["first_alarm"])]
    return "a guard that alarmed without its first alarm" if alarmed else None


# The tables.

KERNEL_RUNS = Schema(
    "the torch-only runs",
    values=("copy", "batch", "seed", "device", "launch", "status", "detail", "records"),
    columns=("signal", "exit_code", "seconds"),
    steps="records",
    step_values={"*": ("step", "K", "written_stride", "launch_stride", "outcome")},
    step_columns={"*": ("max_error",)},
    rules=(_ok_steps_ok,),
)
SANITIZER_RUNS = Schema(
    "the compute-sanitizer runs",
    values=("copy", "batch", "launch", "status", "detail", "sanitizer_errors", "sanitizer_lines"),
    columns=("signal", "exit_code"),
    rules=(_errors_have_lines,),
)
ENGINE_SCENARIOS = Schema(
    "the engine scenarios",
    values=("scenario", "what", "expected", "patch", "batch_invariant", "requests", "status", "detail", "records"),
    columns=("signal", "patched_in_child"),
    steps="records",
    step_values={
        "*": (
            "requests",
            "completed",
            "tokens",
            "distinct_tokens_request0",
            "seconds",
            "request0_tokens_equal_alone",
            "request0_logprobs_bitwise_equal_alone",
        )
    },
    rules=(_batches_planned,),
)
ENGINE_SWEEPS = Schema(
    "the engine sweeps",
    values=(
        *("engine", "model", "batch_invariant", "graphs", "patched", "requests", "samplings", "every_request"),
        *("throughput", "repeats", "status", "detail", "records"),
    ),
    columns=("signal",),
    steps="records",
    step_kind="kind",
    step_values={
        "startup": ("seconds",),
        "invariance": (
            *("requests", "sampling", "position", "needle_index", "tokens_equal", "logprobs_bitwise_equal"),
            *("steps_equal", "max_abs_logprob_diff", "distinct_tokens", "seconds"),
        ),
        "every_request": ("requests", "tokens_differ", "logprobs_differ", "max_abs_logprob_diff"),
        "throughput": ("requests", "output_tokens", "seconds", "tokens_per_second"),
    },
    step_columns={"invariance": ("first_token_mismatch",)},
    rules=(_kinds_planned, _seqs_known),
)
KERNEL_CELLS = Schema(
    "the needle cells",
    values=("config", "kernel", "options", "launch", "copy", "device", "batch", "position", "outcome", "detail"),
    columns=("bitwise_equal", "max_abs_diff", "max_error_vs_reference"),  # null where the cell crashed
    rules=(_cell_measured,),
)
DECODE_TIMING = Schema(
    "the kernel timings",
    values=("device", "impl", "batch", "context", "median_ms", "kv_bytes", "copy_GBps", "fraction_of_copy_bw"),
    columns=("q25_ms", "q75_ms", "reps", "kv_GBps"),
)
RELEASES = Schema(
    "the release survey",
    values=("version", "copy_class", "verdict", "bi_override", "source_file"),
    columns=("copy_sha256",),  # null where the release has no copy_to_persistent
    rules=(_affected_copy_known,),
)
PATCH_CHECKS = Schema(
    "the patch checks",
    values=("version", "release_class", "apply", "gaps"),
    columns=("bi_before", "bi_after", "copy_before", "copy_after"),  # null where there is nothing to patch
    rules=(_plugin_said, _patched_release_measured),
)
SERVING = Schema(
    "the serving run",
    values=(
        *("scenario", "what", "model", "FLEXFIX_PATCH", "VLLM_BATCH_INVARIANT", "requests", "expected", "status"),
        *("as_expected", "detail", "ima_in_log", "ima_lines", "plugin_lines", "log_tail", "records"),
    ),
    columns=("server_exited_with", "startup_seconds"),  # null: the server had not exited, or did not start
    steps="records",
    step_kind="stage",
    step_values={
        "alone": ("requests", "ok", "errored", "errors", "failed", "seconds"),
        "together": (
            "requests",
            "ok",
            "errored",
            "errors",
            "failed",
            "seconds",
            "compared",
            "bitwise_equal",
            "tokens_differ",
            "logprobs_differ",
            "differ",
        ),
        "stream": ("requests",),
    },
    step_columns={"together": ("max_abs_logprob_diff",)},
    step_skipped="skipped",
    rules=(_stages_ran, _server_said),
)
GUARD_RUNS = Schema(
    "the replay guard's runs",
    values=(
        *("engine", "model", "backend", "runner", "batch_invariant", "graphs", "guard", "mutant", "status", "detail"),
        *("requests", "every_request", "generations", "guard_cost", "throughput", "records"),
    ),
    columns=("message",),  # null where the guard stopped nothing
    steps="records",
    step_kind="kind",
    step_values={
        "startup": (),
        "invariance": ("requests",),
        "every_request": ("requests",),
        "generations": ("requests", "tokens", "logprobs"),
        "guard": (
            *("replays_checked", "replays_alarmed", "eager_steps", "alarms", "graphs_captured", "fields_per_graph"),
            *("hooks", "facts"),
        ),
        "guard_cost": ("requests", "tokens_per_second_on", "tokens_per_second_off", "ratio", "pair_ratios"),
    },
    step_columns={"guard": ("first_alarm",)},  # null where nothing alarmed
    rules=(_guard_run_whole,),
)
# The guard's cost as recorded since dae1e4c: the checks' own host time too (guard_cost_first has none).
GUARD_COST = replace(
    GUARD_RUNS,
    what="the replay guard's cost",
    columns=(),  # its runs record no message: a run the guard stopped is refused (the rule) for lacking one
    step_values={
        **GUARD_RUNS.step_values,
        "guard_cost": (
            *GUARD_RUNS.step_values["guard_cost"],
            *("on_seconds", "off_seconds", "check_share", "check_seconds", "replays_checked"),
        ),
    },
)
GUARD_SERVING = replace(
    SERVING,
    what="the guarded serving run",
    values=(*SERVING.values, "FLEXFIX_GUARD", "guard_refused_in_log", "guard_lines"),
    step_values={**SERVING.step_values, "together": (*SERVING.step_values["together"], "streams")},
)
