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
import random
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from flexfix.edition.params import positive_int
from flexfix.measure import children
from flexfix.measure.repro import CRASHES, Reporter, json_child_argv, json_child_main, run_child
from flexfix.mechanism import paged
from flexfix.mechanism.graphs import make_launch
from flexfix.mechanism.kernel_repro import COPIES, step_lengths, tolerance

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

KERNELS = ("flex", "analog_row", "analog_page")
BATCHES = (1, 2, 3, 4, 8, 15, 16, 17, 24, 32, 48, 64, 96, 128)
POSITIONS = ("first", "middle", "last")
MAX_WORKERS = 64  # child processes at a time
KERNEL_COLUMNS = [
    "config",
    "kernel",
    "options",
    "launch",
    "copy",
    "device",
    "capture",
    "batch",
    "position",
    "needle_index",
    "needle_query_block",
    "outcome",
    "bitwise_equal",
    "max_abs_diff",
    "max_error_vs_reference",
    "detail",
]


@dataclass(frozen=True)
class KernelConfig:
    """One way of running decode attention.

    ``kernel``: ``"flex"`` (``flex_attention``; compiled on CUDA, eager on CPU, where the
    compiled CPU kernel does not accept a block mask narrower than the cache), or the CPU
    analog :func:`flexfix.mechanism.paged.blocksparse_decode`, which reads ``kv_indices`` through
    the view's strides: ``"analog_row"`` (one softmax over all the pages of the query
    block) or ``"analog_page"`` (online softmax a page at a time, like flex with
    ``BLOCK_N = 16``).  ``options``: the kernel options of
    :func:`flexfix.mechanism.paged.kernel_options` (flex only).
    """

    kernel: str = "flex"
    options: str = "vllm"
    launch: str = "eager"
    copy: str = "sliced"

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        paged.kernel_options(self.options)  # raises on an unknown mode
        if self.launch not in ("eager", "graph", "frozen"):
            raise ValueError(f"launch must be 'eager', 'graph' or 'frozen', got {self.launch!r}")
        if self.copy not in COPIES:
            raise ValueError(f"copy must be one of {sorted(COPIES)}, got {self.copy!r}")

    @property
    def name(self) -> str:
        what = {
            "flex": f"flex, {self.options} options",
            "analog_row": "analog, row softmax",
            "analog_page": "analog, page-by-page softmax",
        }[self.kernel]
        return f"{what}, {self.launch}, {self.copy}"


def gpu_configs() -> list[KernelConfig]:
    """flex with each kernel-options mode x eager/graph x as_strided/sliced."""
    return [
        KernelConfig("flex", o, launch, c)
        for o in ("pytorch", "vllm", "batch_invariant")
        for launch in ("eager", "graph")
        for c in ("sliced", "as_strided")
    ]


def cpu_configs() -> list[KernelConfig]:
    """What runs meaningfully on CPU: flex's eager path (which evaluates the mask everywhere
    and ignores ``kv_indices``), both analog kernels, and the page-by-page one with both
    copies, eager and under the frozen launch."""
    return [
        KernelConfig("flex", "pytorch", "eager", "sliced"),
        KernelConfig("analog_row", "vllm", "eager", "sliced"),
        *(
            KernelConfig("analog_page", "vllm", launch, c)
            for launch in ("eager", "frozen")
            for c in ("sliced", "as_strided")
        ),
    ]


def parse_configs(text: str) -> list[KernelConfig]:
    """``"flex:vllm:graph:as_strided,analog_page:vllm:frozen:sliced"`` -> configurations."""
    configs = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 4:
            raise ValueError(f"kernel configuration {item!r}: expected KERNEL:OPTIONS:LAUNCH:COPY")
        configs.append(KernelConfig(*parts))
    return configs


@dataclass(frozen=True)
class SweepShape:
    """Sizes of a sweep: the paged cache, the needle's length, the capture step's longest sequence."""

    paged: paged.PagedShape = field(
        default_factory=lambda: paged.PagedShape(max_num_seqs=128, max_model_len=512, num_pages=8192)
    )
    needle_len: int = 300
    capture_len: int = 500  # graph capture step: another K than every measured step
    seed: int = 0

    @property
    def capture(self) -> str:
        """How the captured width compares with the replayed one: a longer capture leaves the
        replay reading stale rows (wrong results); a shorter one reads -1 pads (faults)."""
        return "K shrinks" if self.capture_len > self.needle_len else "K grows"

    def __post_init__(self) -> None:
        if not 1 <= self.needle_len <= self.paged.max_model_len:
            raise ValueError(f"needle_len={self.needle_len} is outside 1..max_model_len={self.paged.max_model_len}")
        if paged.cdiv(self.capture_len, paged.PAGE_SIZE) == paged.cdiv(self.needle_len, paged.PAGE_SIZE):
            raise ValueError(
                "capture_len must give another K than needle_len (else a graph replays with the "
                "width it captured and no misread can happen)"
            )
        pages = self.paged.max_num_seqs * paged.cdiv(max(self.needle_len, self.capture_len), paged.PAGE_SIZE)
        if pages > self.paged.num_pages - 1:
            raise ValueError(
                f"{self.paged.max_num_seqs} requests of up to {max(self.needle_len, self.capture_len)} "
                f"tokens need {pages} pages; the cache has {self.paged.num_pages - 1}"
            )


def needle_index(batch: int, position: str) -> int:
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    return {"first": 0, "middle": batch // 2, "last": batch - 1}[position]


def needle_step(sw: SweepShape, batch: int, position: str, *, device: str, dtype: torch.dtype) -> paged.DecodeStep:
    """A step of ``batch`` requests with the needle at ``position``.

    The needle's pages and query depend only on ``sw.seed``; the others' lengths (never
    longer than the needle), pages and queries on the seed and the batch size.
    """
    shape = sw.paged
    if not 1 <= batch <= shape.max_num_seqs:
        raise ValueError(f"batch={batch} is outside 1..max_num_seqs={shape.max_num_seqs}")
    at = needle_index(batch, position)
    g = torch.Generator().manual_seed(sw.seed)
    perm = torch.randperm(shape.num_pages - 1, generator=g) + 1
    n_pages = paged.cdiv(sw.needle_len, paged.PAGE_SIZE)
    needle_pages, free = perm[:n_pages], perm[n_pages:]
    needle_query = torch.randn(shape.num_heads, shape.head_dim, generator=g)

    g = torch.Generator().manual_seed(sw.seed * 100_003 + batch + 1)
    lens = [int(x) for x in torch.randint(1, sw.needle_len + 1, (batch,), generator=g)]
    lens[at] = sw.needle_len
    free = free[torch.randperm(free.numel(), generator=g)]
    table = torch.zeros(batch, max(paged.cdiv(n, paged.PAGE_SIZE) for n in lens), dtype=torch.int32)
    start = 0
    for i, n in enumerate(lens):
        k = paged.cdiv(n, paged.PAGE_SIZE)
        if i == at:
            table[i, :k] = needle_pages
        else:
            table[i, :k] = free[start : start + k]
            start += k
    query = torch.randn(1, shape.num_heads, batch, shape.head_dim, generator=g)
    query[0, :, at] = needle_query
    return paged.DecodeStep(
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        block_table=table.to(device),
        query=query.to(device=device, dtype=dtype),
    )


def _attention(cfg: KernelConfig, k_cache: torch.Tensor, v_cache: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The kernel of ``cfg`` as ``fn(query, **views) -> out``, the signature a launch replays."""
    cache_tokens = k_cache.shape[2]
    compiled = k_cache.is_cuda
    options = paged.kernel_options(cfg.options)

    def attend(query, kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids):
        views = paged.Views(kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids)
        if cfg.kernel != "flex":
            return paged.blocksparse_decode(query, k_cache, v_cache, views, reduction=cfg.kernel[len("analog_") :])
        mask = paged.make_block_mask(views, query.shape[2], cache_tokens)
        return paged.flex_decode(query, k_cache, v_cache, mask, compiled=compiled, options=options)

    return attend


class _Runner:
    """Runs one configuration's cells in this process, one launch per batch size."""

    def __init__(self, cfg: KernelConfig, sw: SweepShape, device: str):
        self.cfg, self.sw, self.device = cfg, sw, device
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.k_cache, self.v_cache = paged.make_cache(sw.paged, seed=sw.seed, device=device, dtype=self.dtype)
        self.buffers = paged.PersistentBuffers(sw.paged, device=device)
        self.fn = _attention(cfg, self.k_cache, self.v_cache)
        self.launches: dict[int, tuple] = {}

    def _launch_for(self, batch: int):
        """The graph (or frozen launch) of this batch size, captured on its own step."""
        if batch not in self.launches:
            lens = step_lengths(batch, self.sw.capture_len, random.Random(self.sw.seed + batch))
            step = paged.make_step(
                self.sw.paged, lens, seed=self.sw.seed + 7919 * batch, device=self.device, dtype=self.dtype
            )
            views = self.buffers.write(step, COPIES[self.cfg.copy])
            query = step.query.clone()
            launch = make_launch(self.cfg.launch, self.fn)
            launch.capture(query=query, **views.as_dict())
            self.launches[batch] = (launch, query)
        return self.launches[batch]

    def needle_output(self, batch: int, position: str) -> tuple[torch.Tensor, paged.DecodeStep]:
        step = needle_step(self.sw, batch, position, device=self.device, dtype=self.dtype)
        if self.cfg.launch == "eager":
            views = self.buffers.write(step, COPIES[self.cfg.copy])
            out = self.fn(step.query, **views.as_dict())
        else:
            launch, query = self._launch_for(batch)
            self.buffers.write(step, COPIES[self.cfg.copy])
            query.copy_(step.query)
            out = launch.replay()
        at = needle_index(batch, position)
        return out[0, :, at].float().cpu(), step


def _cell(cfg: KernelConfig, sw: SweepShape, device: str, batch: int, position: str) -> dict:
    at = needle_index(batch, position)
    return {
        "config": cfg.name,
        **asdict(cfg),
        "device": device,
        "capture": sw.capture,
        "batch": batch,
        "position": position,
        "needle_index": at,
        "needle_query_block": at // paged.Q_BLOCK,
    }


def measure_cells(
    cfg: KernelConfig, sw: SweepShape, device: str, cells: Sequence[tuple[int, str]], report: Callable[[dict], None]
) -> None:
    """Measure ``cells`` (batch, position) of one configuration in this process, reporting each
    as soon as it is known (after a first ``{"ready": ...}`` record once the needle ran alone).
    A kernel error (IndexError of the analog, a compile error) is the cell's outcome; a CUDA
    error poisons the process and is raised, for the caller to record."""
    runner = _Runner(cfg, sw, device)
    alone, step = runner.needle_output(1, "first")
    ref = paged.reference(step, runner.k_cache, runner.v_cache)[0, :, 0]
    tol = tolerance(runner.dtype)
    report({"ready": cfg.name})
    for batch, position in cells:
        row = _cell(cfg, sw, device, batch, position)
        try:
            out, _ = runner.needle_output(batch, position)
        except (IndexError, RuntimeError) as e:
            if "CUDA error" in str(e) or "illegal memory access" in str(e):
                raise
            row.update(
                outcome="index_error" if isinstance(e, IndexError) else "error",
                bitwise_equal=None,
                max_abs_diff=None,
                max_error_vs_reference=None,
                detail=str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
            )
        else:
            err = (out - ref).abs().max().item()
            row.update(
                outcome="ok" if err <= tol else "wrong_result",
                bitwise_equal=bool(torch.equal(out, alone)),
                max_abs_diff=(out - alone).abs().max().item(),
                max_error_vs_reference=err,
                detail="",
            )
        report(row)


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
                **_cell(cfg, sw, device, b, p),
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
