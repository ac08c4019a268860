"""Timing decode attention: warmed-up repetitions, medians, and the bandwidth they imply.

* :func:`time_fn` runs ``fn`` ``warmup`` times, then times ``reps`` calls one by one: with
  CUDA events on a GPU (the GPU's own clock, no host overhead between the events but the
  launch itself), with ``time.perf_counter`` on CPU.  :class:`Timing` keeps every sample.
  With ``flush_l2`` each timed call starts with a cold L2 cache: before it, untimed, a buffer
  larger than the L2 (:data:`L2_FLUSH_BYTES`) is overwritten, as ``triton.testing.do_bench``
  does; without it a small case whose keys and values fit in the L2 (50 MB on an H100) is
  read from the cache at every repetition after the first, which flatters it.
* :func:`copy_bandwidth` measures the device-to-device copy rate of the same machine, the
  practical ceiling of a memory-bound kernel: bytes read + bytes written per second.
* :func:`kv_bytes` is what a decode step must read at least: every request's keys and
  values once.

The decode sweep (:func:`decode_sweep`) times, for each batch size and context length,
flex with vLLM's kernel options eagerly and as a CUDA-graph replay, flex with the
batch-invariant options, and ``scaled_dot_product_attention`` on the same keys and values
gathered densely (a dense reference, not a paged kernel).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from flexfix.edition.params import positive_int
from flexfix.mechanism import paged
from flexfix.mechanism.graphs import CudaGraphLaunch
from flexfix.mechanism.persistent import copy_to_persistent

__all__ = [
    "L2_FLUSH_BYTES",
    "Timing",
    "time_fn",
    "copy_bandwidth",
    "method_line",
    "kv_bytes",
    "kv_dtype",
    "DecodeCase",
    "decode_sweep",
    "TIMING_COLUMNS",
]

TIMING_COLUMNS = [
    "device",
    "impl",
    "l2",
    "batch",
    "context",
    "median_ms",
    "q25_ms",
    "q75_ms",
    "reps",
    "kv_bytes",
    "kv_GBps",
    "copy_GBps",
    "fraction_of_copy_bw",
]


@dataclass
class Timing:
    """Samples of one timed call, in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile(self, q: float) -> float:
        return float(torch.tensor(self.samples_ms, dtype=torch.float64).quantile(q))


# Overwritten before each timed call when the L2 is flushed: more than any L2 this runs on (H100 50 MB, H200 60 MB),
# the size triton.testing.do_bench uses.
L2_FLUSH_BYTES = 256 << 20


def time_fn(
    fn: Callable[[], object], *, warmup: int = 5, reps: int = 20, device: str = "cpu", flush_l2: bool = False
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then time ``reps`` calls one by one (``flush_l2``, on a GPU:
    each from a cold L2 cache, the flush itself not timed)."""
    positive_int("warmup", warmup, minimum=0)
    positive_int("reps", reps)
    if not isinstance(flush_l2, bool):
        raise ValueError(f"flush_l2 must be True or False, got {flush_l2!r}")
    for _ in range(warmup):
        fn()
    samples = []
    if device == "cuda":
        flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda") if flush_l2 else None
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if flush is not None:
                flush.zero_()  # evicts whatever fn left in the L2; on the stream, before start
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(samples)


def copy_bandwidth(device: str, nbytes: int = 1 << 30, *, reps: int = 10) -> float:
    """Bytes per second moved by ``dst.copy_(src)`` of ``nbytes``: read + write counted."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), warmup=3, reps=reps, device=device)
    return 2 * nbytes / (t.median / 1e3)


def kv_dtype(device: str) -> torch.dtype:
    """The dtype of the timed keys and values (and queries): bf16 on a GPU, as vLLM serves; fp32 on the CPU."""
    return torch.bfloat16 if device == "cuda" else torch.float32


def kv_bytes(batch: int, context: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Keys and values of ``batch`` requests of ``context`` tokens: the least a decode step reads."""
    return 2 * batch * context * num_kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


@dataclass(frozen=True)
class DecodeCase:
    """Head layout of the timed model (default: Llama-3-8B's 32 query / 8 KV heads of 128)."""

    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128


def _setup(case: DecodeCase, batch: int, context: int, device: str, dtype: torch.dtype):
    shape = paged.PagedShape(
        max_num_seqs=max(batch, 16),
        max_model_len=context,
        num_pages=batch * paged.cdiv(context, paged.PAGE_SIZE) + 1,
        num_heads=case.num_heads,
        num_kv_heads=case.num_kv_heads,
        head_dim=case.head_dim,
    )
    # Values do not change a timing: draw them on the device (a 4 GB cache drawn on the CPU takes seconds).
    g = torch.Generator(device=device).manual_seed(0)
    size = (1, shape.num_kv_heads, shape.num_pages * paged.PAGE_SIZE, shape.head_dim)
    k, v = (torch.randn(size, generator=g, device=device, dtype=dtype) for _ in range(2))
    step = paged.make_step(shape, [context] * batch, seed=1, device=device, dtype=dtype)
    views = paged.PersistentBuffers(shape, device=device).write(step, copy_to_persistent)
    return shape, k, v, step, views


def _dense(step: paged.DecodeStep, k: torch.Tensor, v: torch.Tensor, context: int):
    """Each request's keys and values gathered into [B, Hkv, context, D] and its query [B, Hq, 1, D]."""
    pos = (
        step.block_table.long()[:, :, None] * paged.PAGE_SIZE + torch.arange(paged.PAGE_SIZE, device=k.device)
    ).flatten(1)[:, :context]
    kd = k[0][:, pos].permute(1, 0, 2, 3).contiguous()
    vd = v[0][:, pos].permute(1, 0, 2, 3).contiguous()
    return step.query[0].permute(1, 0, 2)[:, :, None].contiguous(), kd, vd


def _impls(case, batch, context, device, dtype) -> dict[str, Callable[[], object]]:
    shape, k, v, step, views = _setup(case, batch, context, device, dtype)
    cache_tokens = k.shape[2]
    q, kd, vd = _dense(step, k, v, context)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    impls: dict[str, Callable[[], object]] = {"sdpa dense": lambda: sdpa(q, kd, vd, enable_gqa=True)}
    compiled = device == "cuda"
    for mode in ("vllm", "batch_invariant") if compiled else ("pytorch",):
        options = paged.kernel_options(mode)

        def attend(query, kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids, options=options):
            vw = paged.Views(kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids)
            mask = paged.make_block_mask(vw, query.shape[2], cache_tokens)
            return paged.flex_decode(query, k, v, mask, compiled=compiled, options=options)

        tensors = {"query": step.query, **views.as_dict()}
        mask = paged.make_block_mask(views, batch, cache_tokens)  # built once per step, as vLLM does
        impls[f"flex {mode} eager"] = lambda mask=mask, options=options: paged.flex_decode(
            step.query, k, v, mask, compiled=compiled, options=options
        )
        if compiled:
            graph = CudaGraphLaunch(attend)
            graph.capture(**tensors)
            impls[f"flex {mode} graph"] = graph.graph.replay
    return impls


def decode_sweep(
    batches: Sequence[int],
    contexts: Sequence[int],
    device: str,
    *,
    case: DecodeCase = DecodeCase(),
    warmup: int = 5,
    reps: int = 30,
    progress: bool = True,
    save: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Median time of each implementation for every batch x context, with its KV bandwidth
    and that bandwidth as a fraction of the device-to-device copy rate measured here.  On a GPU
    every implementation is timed twice, with a warm L2 (``l2="warm"``: repetitions back to back)
    and a cold one (``l2="flushed"``, see :func:`time_fn`); on CPU warm only."""
    from tqdm.auto import tqdm

    dtype = kv_dtype(device)
    copy_bps = copy_bandwidth(device, (1 << 30) if device == "cuda" else (1 << 26))
    rows = []
    cases = [(b, c) for b in batches for c in contexts]
    # disable only when asked: otherwise tqdm's own default, which TQDM_DISABLE=1 (a headless run) overrides
    for batch, context in tqdm(cases, desc="decode timing", **({} if progress else {"disable": True})):
        nbytes = kv_bytes(batch, context, case.num_kv_heads, case.head_dim, dtype)
        for impl, fn in _impls(case, batch, context, device, dtype).items():
            for l2 in ("warm", "flushed") if device == "cuda" else ("warm",):
                t = time_fn(fn, warmup=warmup, reps=reps, device=device, flush_l2=l2 == "flushed")
                kv_bps = nbytes / (t.median / 1e3)
                rows.append(
                    {
                        "device": device,
                        "impl": impl,
                        "l2": l2,
                        "batch": batch,
                        "context": context,
                        "median_ms": t.median,
                        "q25_ms": t.quantile(0.25),
                        "q75_ms": t.quantile(0.75),
                        "reps": reps,
                        "kv_bytes": nbytes,
                        "kv_GBps": kv_bps / 1e9,
                        "copy_GBps": copy_bps / 1e9,
                        "fraction_of_copy_bw": kv_bps / copy_bps,
                    }
                )
        if device == "cuda":
            torch.cuda.empty_cache()
        if save is not None:
            save(pd.DataFrame(rows, columns=TIMING_COLUMNS))
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def method_line(device: str) -> str:
    """The sizes behind the timing method, for a notebook to print: the timed dtype, the L2 flush buffer (on a GPU,
    the only device whose runs flush), the copy used for the bandwidth ceiling, and this GPU's L2 cache and SM
    count."""
    copy = (1 << 30) if device == "cuda" else (1 << 26)
    dtype = kv_dtype(device)
    size = torch.empty(0, dtype=dtype).element_size()
    line = f"K and V in {str(dtype).removeprefix('torch.')} ({size} bytes an element: s in the KV bytes, below); "
    if device == "cuda":  # only a GPU run flushes (decode_sweep): a CPU run has no flush to size
        line += f"L2 flush buffer {L2_FLUSH_BYTES >> 20} MiB; "
    line += f"bandwidth ceiling from a copy_ of {copy >> 20} MiB"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        line += f"; this GPU: L2 cache {props.L2_cache_size >> 20} MiB, {props.multi_processor_count} SMs"
    return line
