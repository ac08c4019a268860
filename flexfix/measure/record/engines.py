"""vLLM engines, each in its own child: the crash scenarios and the engine sweeps, one at a time or side by side."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from flexfix.edition import params, results
from flexfix.measure import children
from flexfix.measure.record.limits import MAX_ENGINE_WORKERS
from flexfix.measure.record.pool import no_save, outcome_row, pooled

__all__ = [
    "engine_outcomes",
    "engine_sweep",
    "engines_side_by_side",
    "model_dir",
    "record_engine",
    "record_engines_side_by_side",
]


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
    save: Callable[[pd.DataFrame], None] = no_save,
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
    return pooled(jobs, workers, progress, save)


def model_dir(config: str) -> Path:
    """The Llama checkpoint of ``config`` (written once per machine, in the temp folder)."""
    from flexfix.integration.engine import write_llama

    return write_llama(Path(tempfile.gettempdir()) / "flexfix-models" / config, config)


def engine_sweep(
    runs: Sequence,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = no_save,
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
    return pooled(jobs, workers, progress, save)


def engines_side_by_side(
    names: Sequence[str],
    runs: Sequence,
    *,
    workers: int,
    progress: Callable[[str], None] = print,
    save_scenarios: Callable[[pd.DataFrame], None] = no_save,
    save_runs: Callable[[pd.DataFrame], None] = no_save,
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
    progress: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`engines_side_by_side`, each table saved to its partial file as engines finish, then written
    complete: the scenarios to ``scenarios_name``, the runs to ``runs_name``; ``progress`` gets each engine's line."""
    runs = list(runs)
    scenario_params = {"scenarios": list(names), "model": "tiny", "max_tokens": 32, "workers": workers}
    run_params = {"runs": [r.name for r in runs], "workers": workers}
    scenario_table, run_table = engines_side_by_side(
        names,
        runs,
        workers=workers,
        progress=progress,
        save_scenarios=lambda t: results.write_results(
            out_dir, scenarios_name, t, device, scenario_params, partial=True
        ),
        save_runs=lambda t: results.write_results(out_dir, runs_name, t, device, run_params, partial=True),
    )
    results.write_results(out_dir, scenarios_name, scenario_table, device, scenario_params, replace=replace)
    results.write_results(out_dir, runs_name, run_table, device, run_params, replace=replace)
    return scenario_table, run_table
