"""Record the GPU evidence: every crash scenario in its child process, written with provenance.

    python -m flexfix.measure.record kernel --out build/results      # torch-only repro + sanitizer
    python -m flexfix.measure.record engine --out build/results      # vLLM 0.20.0 engine scenarios
    python -m flexfix.measure.record invariance --out build/results  # kernel-level batch invariance (notebook 04)
    python -m flexfix.measure.record timing --out build/results      # decode attention timing (notebook 05)
    python -m flexfix.measure.record engine-sweep --runs tiny:bi1:full,tiny:bi0:eager --name engine_sweep
                                             # engine invariance / every request / throughput (04, 05, 01)

Meant for a GPU machine with vLLM 0.20.0; the files it writes are what ``data/`` holds.
On CPU, ``kernel`` runs the frozen-launch analog instead (and says so in provenance); ``sanitizer``,
``engine`` and ``engine-sweep`` need a GPU and are refused without one.

Every argument is checked before any work: a bad value, a size over its maximum, an option that does
not apply to the part, an unwritable ``--out``, ``--device cuda`` without a GPU, or a results file the
run would replace with fewer records (without ``--replace``) is a usage error naming it (exit 2).
Progress goes to ``<name>-<device>.partial.json`` after each unit (run, cell group, engine); the
complete file is written at the end, and the partial one removed.  Ctrl-C or SIGTERM stops the run
within seconds, kills every child process, keeps the finished units in the partial file, says where,
and exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from flexfix.edition import params, results
from flexfix.measure import children
from flexfix.measure.repro import Outcome, run_kernel_in_child

# The engine tables recorded on the H100, in data/ (one run could not hold every scenario).
RECORDED_ENGINE_TABLES = [
    "engine_scenarios",
    "engine_scenarios_part2",
    "engine_scenarios_part3",
    "engine_scenarios_part4",
    "engine_scenarios_repeats",
]

# The kernel-level needle sweep recorded on the H100 (the second file: cells the first run's time limit cut off).
RECORDED_KERNEL_INVARIANCE = ["kernel_invariance", "kernel_invariance_part2"]
# Every request of a batch against itself alone: stock vLLM 0.20.0, and the patched engine as the control.
RECORDED_EVERY_REQUEST = ["engine_every_request_stock", "engine_sweep_tiny_full"]

# The engine sweeps recorded on the H100 (notebooks 04 and 05; the every-request check of notebook 01).
RECORDED_SWEEP_TABLES = [
    "engine_sweep_tiny_full",
    "engine_sweep_variance_full",
    "engine_sweep_tiny_more",
    "engine_sweep_variance_eager",
]

# Output tokens per second, each file one command: per model every graph mode x BI, back to back.
RECORDED_THROUGHPUT_TABLES = [
    "engine_throughput_variance",
    "engine_throughput_variance_repeat",
    "engine_throughput_tiny",
    "engine_throughput_tiny_repeat",
]

# Largest values the command line accepts (refused by name above them, before any work).
MAX_SEEDS = 100
MAX_BATCH = 128  # the persistent buffers of the kernel repro and of the needle sweep hold 128 requests
MAX_CONTEXT = 32768
MAX_REQUESTS = 256  # engine runs (flexfix.measure.engine_sweep.EngineRun)
MAX_REPEATS = 100
MAX_WORKERS = min(64, 4 * (os.cpu_count() or 1))
MAX_ENGINE_WORKERS = 16  # engines side by side on one GPU (each a CUDA context, a KV cache and its graphs)
# Keys and values one timed decode step reads (timing.kv_bytes); the sweep holds about twice that.
MAX_TIMING_KV_BYTES = {"cpu": 4 << 30, "cuda": 16 << 30}
GPU_PARTS = ("sanitizer", "engine", "engine-sweep")

__all__ = [
    "RECORDED_ENGINE_TABLES",
    "RECORDED_SWEEP_TABLES",
    "RECORDED_THROUGHPUT_TABLES",
    "RECORDED_KERNEL_INVARIANCE",
    "RECORDED_EVERY_REQUEST",
    "kernel_outcomes",
    "sanitizer_outcomes",
    "engine_outcomes",
    "record_engine",
    "outcome_row",
    "engine_sweep",
    "engines_side_by_side",
    "record_engines_side_by_side",
    "model_dir",
]


def outcome_row(outcome: Outcome, **keys) -> dict:
    return {
        **keys,
        "status": outcome.status,
        "detail": outcome.detail,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "seconds": outcome.seconds,
        "records": outcome.records,
        "stderr_tail": outcome.stderr_tail[-6:],
        **outcome.extra,
    }


def _no_save(table: pd.DataFrame) -> None:
    pass


def _pooled(
    jobs: Sequence[Callable[[Any], tuple[dict, str]]],
    workers: int,
    progress: Callable[[str], None],
    save: Callable[[pd.DataFrame], None],
) -> pd.DataFrame:
    """Run ``jobs`` (each ``job(stop) -> (row, progress line)``, starting its child under the pool's stop
    event) ``workers`` at a time (:func:`flexfix.measure.children.run_pool`); ``save`` gets the rows finished so far,
    in job order, after each.  An interrupt kills the running children and keeps what ``save`` got."""
    done: dict[int, dict] = {}

    def finished(index: int, result: tuple[dict, str]) -> None:
        done[index], line = result
        progress(line)
        save(pd.DataFrame([done[i] for i in sorted(done)]))

    children.run_pool(jobs, workers, finished)
    return pd.DataFrame([done[i] for i in sorted(done)])


def kernel_outcomes(
    device: str,
    seeds: Sequence[int],
    batches: Sequence[int],
    copies=("as_strided", "sliced"),
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = _no_save,
    *,
    workers: int = 1,
) -> pd.DataFrame:
    """The torch-only repro for every copy x batch x seed, each in its own child, ``workers`` at a time;
    ``save`` gets the table after each run (an interrupt -- ``KeyboardInterrupt`` -- kills the running
    children and leaves the saved runs where ``save`` put them)."""
    seeds = params.positive_ints("seeds", seeds, minimum=0)
    batches = params.positive_ints("batches", batches, maximum=MAX_BATCH)
    params.positive_int("workers", workers, maximum=MAX_WORKERS)

    def job(copy: str, batch: int, seed: int, stop) -> tuple[dict, str]:
        out = run_kernel_in_child(copy, device, batch, seed, timeout=240, stop=stop)
        launch = "graph" if device == "cuda" else "frozen"
        row = outcome_row(out, copy=copy, batch=batch, seed=seed, device=device, launch=launch)
        return row, f"{copy:>10} batch {batch:3d} seed {seed}: {out}"

    jobs = [functools.partial(job, copy, batch, seed) for copy in copies for batch in batches for seed in seeds]
    return _pooled(jobs, workers, progress, save)


def sanitizer_outcomes(
    batch: int = 48,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = _no_save,
) -> pd.DataFrame:
    """Both copies under compute-sanitizer memcheck (frozen launch, no caching allocator)."""
    params.positive_int("batch", batch, maximum=MAX_BATCH)
    rows = []
    for copy in ("as_strided", "sliced"):
        out = run_kernel_in_child(copy, "cuda", batch, seed, sanitizer=True, timeout=240)
        progress(f"sanitizer {copy}: {out} ({out.extra.get('sanitizer_errors')} errors)")
        rows.append(outcome_row(out, copy=copy, batch=batch, seed=seed, device="cuda", launch="frozen"))
        save(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def _scenario_job(name: str, model_dir: Path, side_by_side: bool, stop) -> tuple[dict, str]:
    """One engine scenario of :data:`flexfix.integration.engine.SCENARIOS` in its child: (row, progress line)."""
    from flexfix.integration.engine import SCENARIOS, run_scenario

    # Side by side, engines start more slowly (each compiles and captures while the others do).
    out = run_scenario(name, model_dir, shared_gpu=side_by_side, stop=stop, timeout=420 if side_by_side else 150)
    sc = SCENARIOS[name]
    row = outcome_row(
        out,
        scenario=name,
        what=sc.what,
        expected=sc.expect,
        patch=sc.patch,
        batch_invariant=sc.batch_invariant,
        requests=list(sc.requests),
    )
    return row, f"engine {name}: {out}"


def _run_job(run, model_dir: Path, side_by_side: bool, timeout: float, stop) -> tuple[dict, str]:
    """One :class:`flexfix.measure.engine_sweep.EngineRun` in its child: (row, progress line)."""
    from dataclasses import asdict

    from flexfix.measure.engine_sweep import run_engine

    out = run_engine(run, model_dir, timeout=timeout, shared_gpu=side_by_side, stop=stop)
    return outcome_row(out, engine=run.name, **asdict(run)), f"engine {run.name}: {out}"


def _check_scenarios(names: Sequence[str]) -> None:
    from flexfix.integration.engine import SCENARIOS

    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown engine scenario {unknown[0]!r}; expected one of {sorted(SCENARIOS)}")


def _check_runs(runs: Sequence, workers: int) -> None:
    if workers > 1 and any(run.throughput for run in runs):
        raise ValueError("engines that time throughput must run one at a time (workers=1), not side by side")


def engine_outcomes(
    names: Sequence[str],
    model_dir: Path,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = _no_save,
    *,
    workers: int = 1,
) -> pd.DataFrame:
    """Engine scenarios, each in its own child, ``workers`` at a time; ``save`` gets the table after each,
    so a cut-off run keeps them.  One at a time, each engine sizes its KV cache by vLLM's memory profiling
    (``gpu_memory_utilization``); side by side (``workers > 1``) they share the GPU, which that profiling
    cannot (it fails when another process frees memory meanwhile), so each takes a fixed KV cache instead
    (:data:`flexfix.integration.engine.SHARED_GPU`)."""
    _check_scenarios(names)
    params.positive_int("workers", workers, maximum=MAX_ENGINE_WORKERS)
    jobs = [functools.partial(_scenario_job, name, model_dir, workers > 1) for name in names]
    return _pooled(jobs, workers, progress, save)


def model_dir(config: str) -> Path:
    """The Llama checkpoint of ``config`` (written once per machine, in the temp folder)."""
    from flexfix.integration.engine import write_llama

    return write_llama(Path(tempfile.gettempdir()) / "flexfix-models" / config, config)


def engine_sweep(
    runs: Sequence,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = _no_save,
    timeout: float = 480,
    *,
    workers: int = 1,
) -> pd.DataFrame:
    """:class:`flexfix.measure.engine_sweep.EngineRun` s, each in its own child, ``workers`` at a time (side by side
    with a fixed KV cache each, as :func:`engine_outcomes`); ``save`` gets the table after each engine.
    Throughput runs are timings: run them one at a time."""
    runs = list(runs)
    params.positive_int("workers", workers, maximum=MAX_ENGINE_WORKERS)
    _check_runs(runs, workers)
    models = {run.model: model_dir(run.model) for run in runs}  # written once, before any child starts
    jobs = [functools.partial(_run_job, run, models[run.model], workers > 1, timeout) for run in runs]
    return _pooled(jobs, workers, progress, save)


def engines_side_by_side(
    names: Sequence[str],
    runs: Sequence,
    *,
    workers: int,
    progress: Callable[[str], None] = print,
    save_scenarios: Callable[[pd.DataFrame], None] = _no_save,
    save_runs: Callable[[pd.DataFrame], None] = _no_save,
    timeout: float = 480,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`engine_outcomes` of ``names`` and :func:`engine_sweep` of ``runs`` in one pool, ``workers`` engines
    at a time: (scenario table, run table), each saved as its engines finish."""
    runs = list(runs)
    _check_scenarios(names)
    params.positive_int("workers", workers, maximum=MAX_ENGINE_WORKERS)
    _check_runs(runs, workers)
    models = {m: model_dir(m) for m in {"tiny", *(run.model for run in runs)}}
    jobs = [functools.partial(_scenario_job, name, models["tiny"], workers > 1) for name in names]
    jobs += [functools.partial(_run_job, run, models[run.model], workers > 1, timeout) for run in runs]
    done: dict[int, dict] = {}

    def finished(index: int, result: tuple[dict, str]) -> None:
        done[index], line = result
        progress(line)
        if index < len(names):
            save_scenarios(pd.DataFrame([done[i] for i in sorted(done) if i < len(names)]))
        else:
            save_runs(pd.DataFrame([done[i] for i in sorted(done) if i >= len(names)]))

    children.run_pool(jobs, workers, finished)
    return (
        pd.DataFrame([done[i] for i in sorted(done) if i < len(names)]),
        pd.DataFrame([done[i] for i in sorted(done) if i >= len(names)]),
    )


def record_engine(
    names: Sequence[str],
    out_dir,
    device: str,
    name: str = "engine_scenarios",
    progress: Callable[[str], None] = print,
    *,
    replace: bool = False,
    workers: int = 1,
) -> tuple[pd.DataFrame, Path]:
    """Write the tiny Llama, run ``names`` (``workers`` engines side by side), save the table after each (to
    the partial file), then write the complete file (``replace``: even over one with more records)."""
    params = {"scenarios": list(names), "model": "tiny", "max_tokens": 32, "workers": workers}
    model = model_dir("tiny")
    table = engine_outcomes(
        names,
        model,
        progress,
        save=lambda t: results.write_results(out_dir, name, t, device, params, partial=True),
        workers=workers,
    )
    return table, results.write_results(out_dir, name, table, device, params, replace=replace)


def record_engines_side_by_side(
    names: Sequence[str],
    runs: Sequence,
    out_dir,
    device: str,
    *,
    workers: int,
    scenarios_name: str = "engine_scenarios",
    runs_name: str = "every_request",
    replace: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`engines_side_by_side`, each table saved to its partial file as engines finish, then written
    complete: the scenarios to ``scenarios_name``, the runs to ``runs_name``."""
    runs = list(runs)
    scenario_params = {"scenarios": list(names), "model": "tiny", "max_tokens": 32, "workers": workers}
    run_params = {"runs": [r.name for r in runs], "workers": workers}
    scenario_table, run_table = engines_side_by_side(
        names,
        runs,
        workers=workers,
        save_scenarios=lambda t: results.write_results(
            out_dir, scenarios_name, t, device, scenario_params, partial=True
        ),
        save_runs=lambda t: results.write_results(out_dir, runs_name, t, device, run_params, partial=True),
    )
    results.write_results(out_dir, scenarios_name, scenario_table, device, scenario_params, replace=replace)
    results.write_results(out_dir, runs_name, run_table, device, run_params, replace=replace)
    return scenario_table, run_table


# The command line.

# Which parts use each option (an option given to a part that does not use it is refused).
_OPTION_PARTS = {
    "runs": ("engine-sweep",),
    "requests": ("engine-sweep",),
    "every_request": ("engine-sweep",),
    "throughput": ("engine-sweep",),
    "repeats": ("engine-sweep",),
    "configs": ("invariance",),
    "workers": ("invariance", "kernel", "engine", "engine-sweep"),
    "capture_len": ("invariance",),
    "contexts": ("timing",),
    "seeds": ("kernel",),
    "batches": ("kernel", "sanitizer", "invariance", "timing"),
    "scenarios": ("engine",),
}
_DEFAULT_NAMES = {
    "kernel": "ima_kernel",
    "sanitizer": "ima_sanitizer",
    "engine": "engine_scenarios",
    "invariance": "kernel_invariance",
    "timing": "decode_timing",
    "engine-sweep": "engine_sweep",
}
_UNITS = {
    "kernel": "runs",
    "sanitizer": "runs",
    "engine": "engine scenarios",
    "invariance": "cells",
    "timing": "timings",
    "engine-sweep": "engines",
}
_DEFAULT_SCENARIOS = "a,b,c,d,threshold,stock_16,stock_17,stock_24,stock_32,patched_inprocess,patched_plugin"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flexfix.measure.record",
        description="Record the GPU evidence with provenance (see the module's docstring).",
    )
    p.add_argument("part", choices=list(_DEFAULT_NAMES))
    p.add_argument("--name", default=None, help="results name (default: the part's)")
    p.add_argument("--runs", default=None, help="engine-sweep: MODEL:bi0|bi1|stock:full|piecewise|eager,...")
    p.add_argument("--requests", default=None, help="engine-sweep: needle batch sizes (default: all of REQUESTS)")
    p.add_argument("--every-request", default=None, help="engine-sweep: N for which every request is checked")
    p.add_argument("--throughput", default=None, help="engine-sweep: N for output tokens per second")
    p.add_argument(
        "--repeats", type=int, default=None, help=f"engine-sweep: timed repetitions per throughput N (1..{MAX_REPEATS})"
    )
    p.add_argument("--configs", default=None, help="invariance: KERNEL:OPTIONS:LAUNCH:COPY,... (default: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"kernel, invariance: child processes at a time (1..{MAX_WORKERS}); engine, engine-sweep: engines "
        f"side by side on the GPU (1..{MAX_ENGINE_WORKERS}), each then with a fixed KV cache",
    )
    p.add_argument("--capture-len", type=int, default=None, help="invariance: longest sequence at graph capture")
    p.add_argument("--contexts", default=None, help=f"timing: context lengths (each 1..{MAX_CONTEXT})")
    p.add_argument("--out", default="build/results", help="results folder (created if missing)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if a GPU is usable")
    p.add_argument("--seeds", type=int, default=None, help=f"kernel: seeds 0..N-1 (N in 1..{MAX_SEEDS})")
    p.add_argument(
        "--batches",
        default=None,
        help=f"batch sizes, each 1..{MAX_BATCH} (defaults: kernel/sanitizer 48; invariance "
        "flexfix.measure.invariance.BATCHES; timing 1,8,16,32,64,128)",
    )
    p.add_argument("--scenarios", default=None, help=f"engine: scenario names (default: {_DEFAULT_SCENARIOS})")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a results file holding more records than this run writes (or a partial file left by an "
        "interrupted run); without it such a run is refused before it starts",
    )
    return p


@dataclass
class _Job:
    """What a part will do, decided (and every argument checked) before any of it runs."""

    part: str
    name: str
    device: str
    params: dict[str, Any]
    run: Callable[[Callable[[pd.DataFrame], None]], pd.DataFrame]
    expected: int | None  # records the complete file will hold, where known in advance


def _check(p: argparse.ArgumentParser, check: Callable[[], Any]) -> Any:
    """``check()``, a ValueError turned into argparse's usage error (exit 2)."""
    try:
        return check()
    except ValueError as e:
        p.error(str(e))


def _prefixed(option: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, its ValueError prefixed with the option it is about."""
    try:
        return fn(*args)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def _given(value: str | None, default: str) -> str:
    """An option's text, its default only when it was not given (an empty value is not a default)."""
    return default if value is None else value


def _ints(p, option: str, text: str, **bounds) -> list[int]:
    return _check(p, lambda: params.parse_ints(option, text, **bounds))


def _device(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    has_gpu = params.cuda_available()
    if args.device == "cuda" and not has_gpu:
        p.error("--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)")
    device = args.device or ("cuda" if has_gpu else "cpu")
    if args.part in GPU_PARTS and device != "cuda":
        why = "compute-sanitizer" if args.part == "sanitizer" else "the vLLM engine"
        p.error(
            f"record {args.part} needs a CUDA GPU ({why}); "
            + ("none is usable here" if not has_gpu else "not --device cpu")
        )
    if args.part == "sanitizer" and shutil.which("compute-sanitizer") is None:
        p.error("record sanitizer needs compute-sanitizer on PATH (CUDA toolkit); it is not there")
    return device


def _plan(p: argparse.ArgumentParser, args: argparse.Namespace) -> _Job:
    """Check every argument (exit 2 naming the first bad one) and decide what the part will do."""
    part = args.part
    for option, parts in _OPTION_PARTS.items():
        if getattr(args, option) is not None and part not in parts:
            flag = "--" + option.replace("_", "-")
            p.error(f"{flag} does not apply to record {part} (it is an option of: {', '.join(parts)})")
    name = _given(args.name, _DEFAULT_NAMES[part])
    _check(p, lambda: _prefixed("--name", results.results_path, args.out, name, "cpu"))  # a plain file stem
    if part == "kernel":
        seeds = _check(
            p, lambda: params.positive_int("--seeds", 5 if args.seeds is None else args.seeds, maximum=MAX_SEEDS)
        )
        batches = _ints(p, "--batches", _given(args.batches, "48"), maximum=MAX_BATCH)
        workers = _workers(p, args, MAX_WORKERS)
        device = _device(p, args)
        job_params = {"seeds": list(range(seeds)), "batches": batches, "workers": workers}
        return _Job(
            part,
            name,
            device,
            job_params,
            lambda save: kernel_outcomes(device, job_params["seeds"], batches, save=save, workers=workers),
            2 * len(batches) * seeds,
        )
    if part == "sanitizer":
        batches = _ints(p, "--batches", _given(args.batches, "48"), maximum=MAX_BATCH)
        if len(batches) != 1:
            p.error(f"--batches: record sanitizer runs one batch size, got {len(batches)} ({args.batches})")
        device = _device(p, args)
        return _Job(
            part,
            name,
            device,
            {"batch": batches[0], "seed": 0},
            lambda save: sanitizer_outcomes(batches[0], save=save),
            2,
        )
    if part == "engine":
        from flexfix.integration.engine import SCENARIOS

        names = [s.strip() for s in (args.scenarios if args.scenarios is not None else _DEFAULT_SCENARIOS).split(",")]
        for n in names:
            if n not in SCENARIOS:
                p.error(f"--scenarios: unknown scenario {n!r}; expected some of {', '.join(SCENARIOS)}")
            if names.count(n) > 1:
                p.error(f"--scenarios: {n} is listed twice")
        workers = _workers(p, args, MAX_ENGINE_WORKERS)
        device = _device(p, args)
        job_params = {"scenarios": names, "model": "tiny", "max_tokens": 32, "workers": workers}
        return _Job(
            part,
            name,
            device,
            job_params,
            lambda save: engine_outcomes(names, model_dir("tiny"), save=save, workers=workers),
            len(names),
        )
    if part == "invariance":
        from flexfix.measure import invariance

        workers = _workers(p, args, MAX_WORKERS)
        capture_len = 500 if args.capture_len is None else args.capture_len
        sweep = _check(p, lambda: _capture(invariance, capture_len))
        batches = _ints(
            p,
            "--batches",
            _given(args.batches, ",".join(map(str, invariance.BATCHES))),
            maximum=sweep.paged.max_num_seqs,
        )
        configs = (
            _check(p, lambda: _prefixed("--configs", invariance.parse_configs, args.configs))
            if args.configs is not None
            else None
        )
        if configs is not None:
            if not configs:
                p.error("--configs: no configuration given (expected KERNEL:OPTIONS:LAUNCH:COPY,...)")
            seen = [c.name for c in configs]
            for c in seen:
                if seen.count(c) > 1:
                    p.error(f"--configs: {c!r} is listed twice")
        device = _device(p, args)
        if configs is None:
            configs = invariance.gpu_configs() if device == "cuda" else invariance.cpu_configs()
        for c in configs:
            if c.launch == "graph" and device != "cuda":
                p.error(
                    f"--configs: {c.kernel}:{c.options}:{c.launch}:{c.copy} needs a CUDA graph, and this run is on cpu"
                )
        job_params = {
            "configs": [c.name for c in configs],
            "batches": batches,
            "positions": list(invariance.POSITIONS),
            "needle_len": sweep.needle_len,
            "capture_len": sweep.capture_len,
            "shape": str(sweep.paged),
        }
        return _Job(
            part,
            name,
            device,
            job_params,
            lambda save: invariance.kernel_sweep(configs, sweep, device, batches, workers=workers, save=save),
            len(configs) * len(batches) * len(invariance.POSITIONS),
        )
    if part == "timing":
        from flexfix.measure import timing

        batches = _ints(p, "--batches", _given(args.batches, "1,8,16,32,64,128"), maximum=MAX_BATCH)
        contexts = _ints(p, "--contexts", _given(args.contexts, "256,1024,4096,8192"), maximum=MAX_CONTEXT)
        device = _device(p, args)
        case = timing.DecodeCase()
        dtype = "bfloat16" if device == "cuda" else "float32"
        import torch

        need = timing.kv_bytes(max(batches), max(contexts), case.num_kv_heads, case.head_dim, getattr(torch, dtype))
        if need > MAX_TIMING_KV_BYTES[device]:
            p.error(
                f"--batches {max(batches)} with --contexts {max(contexts)}: one step reads {need / 2**30:.1f} GiB of "
                f"keys and values ({dtype}); the limit on {device} is {MAX_TIMING_KV_BYTES[device] / 2**30:.0f} GiB "
                "(choose smaller --batches or --contexts)"
            )
        job_params = {"batches": batches, "contexts": contexts, "case": str(case)}
        return _Job(
            part, name, device, job_params, lambda save: timing.decode_sweep(batches, contexts, device, save=save), None
        )
    # engine-sweep
    from flexfix.measure.engine_sweep import REQUESTS, parse_runs

    if args.runs is not None and not args.runs.strip():
        p.error("--runs: no engine run given (expected MODEL:bi0|bi1|stock:GRAPHS,...)")
    requests = (
        REQUESTS
        if args.requests is None
        else _ints(p, "--requests", args.requests, maximum=MAX_REQUESTS, allow_empty=True)
    )
    every = _ints(p, "--every-request", args.every_request or "", maximum=MAX_REQUESTS, allow_empty=True)
    throughput = _ints(p, "--throughput", args.throughput or "", maximum=MAX_REQUESTS, allow_empty=True)
    repeats = _check(
        p, lambda: params.positive_int("--repeats", 3 if args.repeats is None else args.repeats, maximum=MAX_REPEATS)
    )
    if not (requests or every or throughput):
        p.error("--requests, --every-request and --throughput are all empty: the engines would measure nothing")
    runs = _check(
        p,
        lambda: _runs(parse_runs, args.runs or "tiny:bi1:full", requests, every, throughput, repeats),
    )
    names = [r.name for r in runs]
    for n in names:
        if names.count(n) > 1:
            p.error(f"--runs: {n!r} is listed twice")
    workers = _workers(p, args, MAX_ENGINE_WORKERS)
    if workers > 1 and throughput:
        p.error(f"--workers {workers} with --throughput: engines that time throughput run one at a time")
    device = _device(p, args)
    return _Job(
        part,
        name,
        device,
        {"runs": names, "repeats": repeats, "workers": workers},
        lambda save: engine_sweep(runs, save=save, workers=workers),
        len(runs),
    )


def _workers(p: argparse.ArgumentParser, args: argparse.Namespace, maximum: int) -> int:
    return _check(
        p, lambda: params.positive_int("--workers", 1 if args.workers is None else args.workers, maximum=maximum)
    )


def _capture(invariance, capture_len: int):
    params.positive_int("--capture-len", capture_len)
    try:
        return invariance.SweepShape(capture_len=capture_len)
    except ValueError as e:
        raise ValueError(f"--capture-len {capture_len}: {e}") from None


def _runs(parse_runs, text, requests, every, throughput, repeats):
    try:
        return parse_runs(
            text, requests=tuple(requests), every_request=tuple(every), throughput=tuple(throughput), repeats=repeats
        )
    except ValueError as e:
        raise ValueError(f"--runs: {e}") from None


def _recorded(path: Path) -> tuple[str | None, int | None] | None:
    """(device kind, records) of a results file at ``path``; None if there is none; Nones if unreadable."""
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
        return payload["provenance"]["device_kind"], len(payload["records"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _check_out(p: argparse.ArgumentParser, args: argparse.Namespace, job: _Job) -> None:
    """``--out`` a writable folder, and nothing there this run would replace unasked."""
    _check(p, lambda: params.writable_folder("--out", args.out))
    final = results.results_path(args.out, job.name, job.device)
    partial = results.results_path(args.out, job.name, job.device, partial=True)
    old = _recorded(final)
    if job.device == "cpu" and old is not None and old[0] == "cuda":
        p.error(f"--out: {final} holds a GPU-recorded result; a CPU run does not replace it")
    if (
        old is not None
        and old[1] is not None
        and job.expected is not None
        and job.expected < old[1]
        and not args.replace
    ):
        p.error(
            f"--out: {final} holds {old[1]} records and this run would write {job.expected}: pass --replace to "
            "replace it, or choose another --out or --name"
        )
    left = _recorded(partial)
    if left is not None and not args.replace:
        what = f"{left[1]} records" if left[1] is not None else "an unreadable table"
        p.error(
            f"--out: {partial} holds {what} of an interrupted run: move it away first, or pass --replace to "
            "overwrite it"
        )


class _Progress:
    """The ``save`` of a running part: the table so far, to the partial results file."""

    def __init__(self, out: str, job: _Job):
        self.out, self.job = out, job
        self.path: Path | None = None
        self.count = 0

    def __call__(self, table: pd.DataFrame) -> None:
        self.path = results.write_results(
            self.out, self.job.name, table, self.job.device, self.job.params, partial=True
        )
        self.count = len(table)

    def kept(self) -> str:
        unit = _UNITS[self.job.part]
        if self.path is None:
            return f"no {unit} had finished: nothing written"
        return f"the {self.count} finished {unit} are kept in {self.path}"


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    prog = f"{p.prog} {args.part}"
    progress: _Progress | None = None
    try:
        with children.interruptible():
            job = _plan(p, args)
            _check_out(p, args, job)
            progress = _Progress(args.out, job)
            try:
                table = job.run(progress)
                path = results.write_results(args.out, job.name, table, job.device, job.params, replace=args.replace)
            except (results.ResultsError, OSError) as e:
                print(f"{prog}: {e}; {progress.kept()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt as exc:
        kept = progress.kept() if progress is not None else "nothing had started"
        print(f"{prog}: interrupted by {children.signal_name(exc)}; {kept}", file=sys.stderr)
        return children.exit_status(exc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    children.run_main(main, "python -m flexfix.measure.record")
