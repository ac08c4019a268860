"""The needle and its cells, measured in this process: one configuration, one batch size, one position at a time.

A configuration (:class:`KernelConfig`) is a kernel, its options, a launch and a copy; the needle is a fixed request
(:func:`needle_step`) placed first, in the middle or last of a batch whose other requests are random and never
longer than it.  :func:`measure_cells` measures cells in this process; :mod:`flexfix.measure.invariance` runs them in
child processes, where a crash is a cell value.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from flexfix.mechanism import paged
from flexfix.mechanism.graphs import make_launch
from flexfix.mechanism.kernel_repro import COPIES, step_lengths, tolerance

__all__ = [
    "KERNELS",
    "BATCHES",
    "POSITIONS",
    "KERNEL_COLUMNS",
    "KernelConfig",
    "SweepShape",
    "gpu_configs",
    "cpu_configs",
    "parse_configs",
    "needle_index",
    "needle_step",
    "measure_cells",
    "cell_keys",
]

KERNELS = ("flex", "analog_row", "analog_page")
BATCHES = (1, 2, 3, 4, 8, 15, 16, 17, 24, 32, 48, 64, 96, 128)
POSITIONS = ("first", "middle", "last")
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


def cell_keys(cfg: KernelConfig, sw: SweepShape, device: str, batch: int, position: str) -> dict:
    """The columns that name a cell: its configuration, batch size and the needle's place."""
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
        row = cell_keys(cfg, sw, device, batch, position)
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
