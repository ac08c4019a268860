"""What ``flexfix record PART`` will do, decided before any of it runs: one planner per part.

Each planner checks every argument of its part (a usage error, exit 2, naming the first bad one) and returns a
:class:`Job`: the results name, the device, the parameters recorded in provenance, the work, and how many records the
complete file will hold where that is known in advance.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from flexfix.edition import params, results
from flexfix.measure.record import engines, kernel
from flexfix.measure.record.limits import (
    GPU_PARTS,
    MAX_BATCH,
    MAX_CONTEXT,
    MAX_ENGINE_WORKERS,
    MAX_REPEATS,
    MAX_REQUESTS,
    MAX_SEEDS,
    MAX_TIMING_KV_BYTES,
    MAX_WORKERS,
)

__all__ = ["Job", "OPTION_PARTS", "DEFAULT_NAMES", "DEFAULT_SCENARIOS", "plan"]

# Which parts use each option (an option given to a part that does not use it is refused).
OPTION_PARTS = {
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
DEFAULT_NAMES = {
    "kernel": "ima_kernel",
    "sanitizer": "ima_sanitizer",
    "engine": "engine_scenarios",
    "invariance": "kernel_invariance",
    "timing": "decode_timing",
    "engine-sweep": "engine_sweep",
}
DEFAULT_SCENARIOS = "a,b,c,d,threshold,stock_16,stock_17,stock_24,stock_32,patched_inprocess,patched_plugin"


@dataclass
class Job:
    """What a part will do, decided (and every argument checked) before any of it runs."""

    part: str
    name: str
    device: str
    params: dict[str, Any]
    run: Callable[[Callable[[pd.DataFrame], None]], pd.DataFrame]
    expected: int | None  # records the complete file will hold, where known in advance


Parser = argparse.ArgumentParser


def _check(p: Parser, check: Callable[[], Any]) -> Any:
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


def _ints(p: Parser, option: str, text: str, **bounds) -> list[int]:
    return _check(p, lambda: params.parse_ints(option, text, **bounds))


def _workers(p: Parser, args: argparse.Namespace, maximum: int) -> int:
    return _check(
        p, lambda: params.positive_int("--workers", 1 if args.workers is None else args.workers, maximum=maximum)
    )


def _unique(p: Parser, option: str, names: list[str], quote: bool = False) -> None:
    for n in names:
        if names.count(n) > 1:
            p.error(f"{option}: {n!r} is listed twice" if quote else f"{option}: {n} is listed twice")


def _device(p: Parser, args: argparse.Namespace) -> str:
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


def plan_kernel(p: Parser, args: argparse.Namespace, name: str) -> Job:
    seeds = _check(
        p, lambda: params.positive_int("--seeds", 5 if args.seeds is None else args.seeds, maximum=MAX_SEEDS)
    )
    batches = _ints(p, "--batches", _given(args.batches, "48"), maximum=MAX_BATCH)
    workers = _workers(p, args, MAX_WORKERS)
    device = _device(p, args)
    job_params = {"seeds": list(range(seeds)), "batches": batches, "workers": workers}
    return Job(
        "kernel",
        name,
        device,
        job_params,
        lambda save: kernel.kernel_outcomes(device, job_params["seeds"], batches, save=save, workers=workers),
        2 * len(batches) * seeds,
    )


def plan_sanitizer(p: Parser, args: argparse.Namespace, name: str) -> Job:
    batches = _ints(p, "--batches", _given(args.batches, "48"), maximum=MAX_BATCH)
    if len(batches) != 1:
        p.error(f"--batches: record sanitizer runs one batch size, got {len(batches)} ({args.batches})")
    device = _device(p, args)
    return Job(
        "sanitizer",
        name,
        device,
        {"batch": batches[0], "seed": 0},
        lambda save: kernel.sanitizer_outcomes(batches[0], save=save),
        2,
    )


def plan_engine(p: Parser, args: argparse.Namespace, name: str) -> Job:
    from flexfix.integration.engine import SCENARIOS

    names = [s.strip() for s in _given(args.scenarios, DEFAULT_SCENARIOS).split(",")]
    for n in names:
        if n not in SCENARIOS:
            p.error(f"--scenarios: unknown scenario {n!r}; expected some of {', '.join(SCENARIOS)}")
    _unique(p, "--scenarios", names)
    workers = _workers(p, args, MAX_ENGINE_WORKERS)
    device = _device(p, args)
    job_params = {"scenarios": names, "model": "tiny", "max_tokens": 32, "workers": workers}
    return Job(
        "engine",
        name,
        device,
        job_params,
        lambda save: engines.engine_outcomes(names, engines.model_dir("tiny"), save=save, workers=workers),
        len(names),
    )


def _capture(invariance, capture_len: int):
    params.positive_int("--capture-len", capture_len)
    try:
        return invariance.SweepShape(capture_len=capture_len)
    except ValueError as e:
        raise ValueError(f"--capture-len {capture_len}: {e}") from None


def plan_invariance(p: Parser, args: argparse.Namespace, name: str) -> Job:
    from flexfix.measure import invariance

    workers = _workers(p, args, MAX_WORKERS)
    capture_len = 500 if args.capture_len is None else args.capture_len
    sweep = _check(p, lambda: _capture(invariance, capture_len))
    batches = _ints(
        p, "--batches", _given(args.batches, ",".join(map(str, invariance.BATCHES))), maximum=sweep.paged.max_num_seqs
    )
    configs = None
    if args.configs is not None:
        configs = _check(p, lambda: _prefixed("--configs", invariance.parse_configs, args.configs))
        if not configs:
            p.error("--configs: no configuration given (expected KERNEL:OPTIONS:LAUNCH:COPY,...)")
        _unique(p, "--configs", [c.name for c in configs], quote=True)
    device = _device(p, args)
    if configs is None:
        configs = invariance.gpu_configs() if device == "cuda" else invariance.cpu_configs()
    for c in configs:
        if c.launch == "graph" and device != "cuda":
            p.error(f"--configs: {c.kernel}:{c.options}:{c.launch}:{c.copy} needs a CUDA graph, and this run is on cpu")
    job_params = {
        "configs": [c.name for c in configs],
        "batches": batches,
        "positions": list(invariance.POSITIONS),
        "needle_len": sweep.needle_len,
        "capture_len": sweep.capture_len,
        "shape": str(sweep.paged),
    }
    return Job(
        "invariance",
        name,
        device,
        job_params,
        lambda save: invariance.kernel_sweep(configs, sweep, device, batches, workers=workers, save=save),
        len(configs) * len(batches) * len(invariance.POSITIONS),
    )


def plan_timing(p: Parser, args: argparse.Namespace, name: str) -> Job:
    import torch

    from flexfix.measure import timing

    batches = _ints(p, "--batches", _given(args.batches, "1,8,16,32,64,128"), maximum=MAX_BATCH)
    contexts = _ints(p, "--contexts", _given(args.contexts, "256,1024,4096,8192"), maximum=MAX_CONTEXT)
    device = _device(p, args)
    case = timing.DecodeCase()
    dtype = "bfloat16" if device == "cuda" else "float32"
    need = timing.kv_bytes(max(batches), max(contexts), case.num_kv_heads, case.head_dim, getattr(torch, dtype))
    if need > MAX_TIMING_KV_BYTES[device]:
        p.error(
            f"--batches {max(batches)} with --contexts {max(contexts)}: one step reads {need / 2**30:.1f} GiB of "
            f"keys and values ({dtype}); the limit on {device} is {MAX_TIMING_KV_BYTES[device] / 2**30:.0f} GiB "
            "(choose smaller --batches or --contexts)"
        )
    job_params = {"batches": batches, "contexts": contexts, "case": str(case)}
    return Job(
        "timing", name, device, job_params, lambda save: timing.decode_sweep(batches, contexts, device, save=save), None
    )


def _runs(parse_runs, text, requests, every, throughput, repeats):
    try:
        return parse_runs(
            text, requests=tuple(requests), every_request=tuple(every), throughput=tuple(throughput), repeats=repeats
        )
    except ValueError as e:
        raise ValueError(f"--runs: {e}") from None


def plan_engine_sweep(p: Parser, args: argparse.Namespace, name: str) -> Job:
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
    runs = _check(p, lambda: _runs(parse_runs, args.runs or "tiny:bi1:full", requests, every, throughput, repeats))
    names = [r.name for r in runs]
    _unique(p, "--runs", names, quote=True)
    workers = _workers(p, args, MAX_ENGINE_WORKERS)
    if workers > 1 and throughput:
        p.error(f"--workers {workers} with --throughput: engines that time throughput run one at a time")
    device = _device(p, args)
    return Job(
        "engine-sweep",
        name,
        device,
        {"runs": names, "repeats": repeats, "workers": workers},
        lambda save: engines.engine_sweep(runs, save=save, workers=workers),
        len(runs),
    )


PLANNERS: dict[str, Callable[[Parser, argparse.Namespace, str], Job]] = {
    "kernel": plan_kernel,
    "sanitizer": plan_sanitizer,
    "engine": plan_engine,
    "invariance": plan_invariance,
    "timing": plan_timing,
    "engine-sweep": plan_engine_sweep,
}


def plan(p: Parser, args: argparse.Namespace) -> Job:
    """Check every argument (exit 2 naming the first bad one) and decide what the part will do."""
    for option, parts in OPTION_PARTS.items():
        if getattr(args, option) is not None and args.part not in parts:
            flag = "--" + option.replace("_", "-")
            p.error(f"{flag} does not apply to record {args.part} (it is an option of: {', '.join(parts)})")
    name = _given(args.name, DEFAULT_NAMES[args.part])
    _check(p, lambda: _prefixed("--name", results.results_path, args.out, name, "cpu"))  # a plain file stem
    return PLANNERS[args.part](p, args, name)
