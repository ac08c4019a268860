"""Batch invariance at kernel level: one "needle" request alone, then inside batches of B.

The needle is a fixed request (its pages, its query, its sequence length); the other
requests of a batch are random and never longer than the needle, so the step's width
``K`` is the needle's whatever the batch.  For every configuration (kernel, kernel
options, launch, copy) and every batch size and needle position, a *cell* records
whether the needle's attention output is bitwise equal (``torch.equal``) to its output
alone, the largest absolute difference, and the error against the fp32 reference.

Launches: ``eager`` calls the kernel on the step's views; ``graph`` captures a CUDA
graph once per batch size on a different step (another ``K``) and replays it, as vLLM
does; ``frozen`` is the CPU analog of ``graph`` (:mod:`flexfix.mechanism.graphs`).

Each configuration runs in a child process (:mod:`flexfix.measure.repro`): an as_strided copy
under a graph may hit an illegal memory access, which kills the child.  The cell it was
measuring gets that outcome and a fresh child carries on with the next cell, so a crash
is a cell value, never a missing cell.
"""

from __future__ import annotations

import functools
import numbers
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

import pandas as pd
import torch

from flexfix.edition.params import positive_int
from flexfix.measure import children
from flexfix.measure.needle import (
    BATCHES,
    KERNEL_COLUMNS,
    POSITIONS,
    KernelConfig,
    SweepShape,
    cell_keys,
    cpu_configs,
    gpu_configs,
    measure_cells,
    needle_index,
    needle_step,
    parse_configs,
)
from flexfix.measure.outcomes import CRASHES, Reporter, json_child_argv, json_child_main, run_child
from flexfix.mechanism import paged

__all__ = [
    "parse_configs",
    "BATCHES",
    "POSITIONS",
    "KERNEL_COLUMNS",
    "KernelConfig",
    "SweepShape",
    "gpu_configs",
    "cpu_configs",
    "needle_index",
    "needle_step",
    "measure_cells",
    "kernel_sweep",
    "verdicts",
]

MAX_WORKERS = 64  # child processes at a time


def _child_argv(cfg: KernelConfig, sw: SweepShape, device: str, cells) -> list[str]:
    spec = {
        "config": asdict(cfg),
        "shape": {**asdict(sw), "paged": asdict(sw.paged)},
        "device": device,
        "cells": [list(c) for c in cells],
    }
    return json_child_argv("flexfix.measure.invariance", spec)


def _from_spec(spec: dict) -> tuple[KernelConfig, SweepShape, str, list[tuple[int, str]]]:
    shape = dict(spec["shape"])
    shape["paged"] = paged.PagedShape(**shape["paged"])
    return (
        KernelConfig(**spec["config"]),
        SweepShape(**shape),
        spec["device"],
        [(int(b), str(p)) for b, p in spec["cells"]],
    )


def _run_cells(
    cfg: KernelConfig,
    sw: SweepShape,
    device: str,
    cells: list[tuple[int, str]],
    timeout: float,
    stop: threading.Event | None = None,
) -> list[dict]:
    """``cells`` of one configuration in child processes, a new child after each crash; ``stop``
    (set by the sweep on an interrupt) kills the running child and starts no other."""
    rows: list[dict] = []
    todo = list(cells)
    while todo:
        out = run_child(_child_argv(cfg, sw, device, todo), timeout=timeout, stop=stop)
        ready = any("ready" in r for r in out.records)
        measured = [r for r in out.records if "ready" not in r]
        rows.extend(measured)
        todo = todo[len(measured) :]
        if not todo:
            break
        if out.status == "ok":  # finished without measuring everything: do not loop forever
            raise RuntimeError(f"{cfg.name}: the child stopped after {len(measured)} cells without an error")
        # The child died: on todo[0] if it was measuring, else before any cell, which would
        # happen again: then every remaining cell gets that outcome.
        failed = todo[:1] if ready else todo
        detail = (out.detail or "")[:200] if ready else f"before the first cell: {(out.detail or '')[:180]}"
        rows.extend(
            {
                **cell_keys(cfg, sw, device, b, p),
                "outcome": out.status,
                "bitwise_equal": None,
                "max_abs_diff": None,
                "max_error_vs_reference": None,
                "detail": detail,
            }
            for b, p in failed
        )
        todo = todo[1:] if ready else []
    return rows


def may_crash(cfg: KernelConfig, device: str) -> bool:
    """A configuration whose child can die mid-sweep: the as_strided copy replayed from a CUDA graph (notebook
    01's bug: an illegal memory access poisons the process).  Every crash costs a new child process.  (On CPU
    the frozen launch's misread is an IndexError, a cell's outcome: the child carries on.)"""
    return device == "cuda" and cfg.copy == "as_strided" and cfg.launch == "graph"


def _units(
    configs: Sequence[KernelConfig], batches: Sequence[int], positions: Sequence[str], device: str
) -> list[tuple[KernelConfig, list[tuple[int, str]]]]:
    """How a parallel sweep cuts its work: one unit (one child, one compile) per configuration, except that
    a configuration that may crash gets a unit per batch size, so that each crash costs one batch size's
    cells in a child of its own instead of restarting the configuration's remaining cells one after
    another.  The longest units first."""
    units = []
    for cfg in configs:
        if may_crash(cfg, device):
            units += [(cfg, [(b, p) for p in positions]) for b in batches]
        else:
            units.append((cfg, [(b, p) for b in batches for p in positions]))
    return sorted(units, key=lambda unit: -len(unit[1]))


def kernel_sweep(
    configs: Iterable[KernelConfig],
    sw: SweepShape,
    device: str,
    batches: Sequence[int] = BATCHES,
    positions: Sequence[str] = POSITIONS,
    *,
    timeout: float = 600,
    workers: int = 1,
    progress: bool = True,
    save: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Every configuration x batch x position, in child processes.

    When a child dies (an illegal memory access, a segfault, a timeout) the cell it was on
    gets that outcome and a new child resumes after it.  With ``workers > 1`` the units of
    :func:`_units` (a configuration, or one batch size of a configuration that may crash) run in
    their own children, that many at a time (:func:`flexfix.measure.children.run_pool`: separate
    processes, separate CUDA contexts: a crash stays in its child; bitwise results do not
    depend on what else runs).  ``save`` receives the table so far after each unit.

    An interrupt (``KeyboardInterrupt``: Ctrl-C, a notebook's interrupt, SIGTERM under
    :func:`flexfix.measure.children.interruptible`) or a failing unit stops the sweep at once: the
    units not started are cancelled, every running child is killed, the units that finished
    are passed to ``save`` one last time, and the exception is re-raised.
    """
    from tqdm.auto import tqdm

    configs = list(configs)
    for b in batches:
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 1 <= b <= sw.paged.max_num_seqs:
            raise ValueError(f"batch size {b!r} is not an integer in 1..max_num_seqs={sw.paged.max_num_seqs}")
    batches = [int(b) for b in batches]  # numpy integers too: the children's specs are JSON
    for p in positions:
        needle_index(1, p)
    positive_int("workers", workers, maximum=MAX_WORKERS)
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"configuration {name!r} is listed twice")
    for label, values in (("batch size", list(batches)), ("position", list(positions))):
        for v in values:
            if values.count(v) > 1:
                raise ValueError(f"{label} {v!r} is listed twice")
    cells = [(b, p) for b in batches for p in positions]
    units = _units(configs, batches, positions, device) if workers > 1 else [(cfg, cells) for cfg in configs]
    rows: list[dict] = []
    order = {(cfg.name, b, p): i for i, (cfg, (b, p)) in enumerate((c, cell) for c in configs for cell in cells)}

    def table() -> pd.DataFrame:
        ordered = sorted(rows, key=lambda r: order[(r["config"], r["batch"], r["position"])])
        return pd.DataFrame(ordered, columns=KERNEL_COLUMNS)

    # disable only when asked: otherwise tqdm's own default, which TQDM_DISABLE=1 (a headless run) overrides
    with tqdm(total=len(configs) * len(cells), desc="kernel sweep", **({} if progress else {"disable": True})) as bar:

        def finished(index: int, done: list[dict]) -> None:
            rows.extend(done)
            bar.update(len(done))
            if save is not None:
                save(table())

        jobs = [functools.partial(_run_cells, cfg, sw, device, unit, timeout) for cfg, unit in units]
        children.run_pool(jobs, workers, finished)  # each job gets the pool's stop event
    return table()


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: cells, bitwise-equal cells, crashed cells (illegal memory access, index
    error, timeout), cells whose kernel failed otherwise (``error``: e.g. refused by the compiler),
    wrong results, the largest difference, and a verdict (``invariant`` when every cell ran and
    was bitwise equal)."""
    crash = table["outcome"].isin(CRASHES)
    error = ~crash & ~table["outcome"].isin(["ok", "wrong_result"])
    summary = (
        table.assign(crash=crash, error=error, equal=table["bitwise_equal"].fillna(False).astype(bool))
        .groupby("config", sort=False)
        .agg(
            cells=("batch", "size"),
            bitwise_equal=("equal", "sum"),
            crashed=("crash", "sum"),
            errors=("error", "sum"),
            wrong=("outcome", lambda s: int((s == "wrong_result").sum())),
            max_abs_diff=("max_abs_diff", "max"),
        )
    )
    summary["verdict"] = [
        "crashes"
        if r.crashed
        else "kernel errors"
        if r.errors
        else "wrong results"
        if r.wrong
        else "invariant"
        if r.bitwise_equal == r.cells
        else "varies with the batch"
        for r in summary.itertuples()
    ]
    return summary


def _child(spec: dict, reporter: Reporter) -> None:
    cfg, sw, device, cells = _from_spec(spec)
    measure_cells(cfg, sw, device, cells, reporter.record)
    if device == "cuda":
        torch.cuda.synchronize()
    reporter.finish("ok", cfg.name)


def main(argv: Sequence[str] | None = None) -> int:
    return json_child_main("flexfix.measure.invariance", _child, argv)


if __name__ == "__main__":
    sys.exit(main())
