"""The torch-only reproduction: persistent buffers + capture once + replay with a new K.

One scenario = a decode batch of ``batch`` requests, captured at a step whose longest
sequence gives width ``K_capture``, then replayed on steps whose longest sequences
give other widths.  Before each replay the step's metadata is written into the same
persistent buffers with the chosen copy (``as_strided`` as in vLLM 0.20.0, or
``sliced`` as in the fix) and the query into the captured query buffer; the launch
(a CUDA graph, or the CPU frozen launch) then runs with what it froze at capture.
Every replay is compared with the fp32 reference of :func:`flexfix.mechanism.paged.reference`.

``placement`` chooses where the KV cache sits (:mod:`flexfix.mechanism.cache_placement`): what lies in front of
it decides whether a misread ``-1`` pad faults or only skips pages (:mod:`flexfix.measure.outcome_cause`).

Run it in a child process (:mod:`flexfix.measure.repro`) wherever it may fault.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from flexfix.edition.params import positive_int
from flexfix.mechanism import paged
from flexfix.mechanism.cache_placement import PLACEMENTS, place
from flexfix.mechanism.graphs import make_launch
from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

__all__ = ["COPIES", "KernelScenario", "tolerance", "run_kernel_scenario", "scenario_steps", "step_lengths"]

COPIES: dict[str, Callable] = {
    "as_strided": copy_to_persistent_as_strided,
    "sliced": copy_to_persistent,
}


@dataclass(frozen=True)
class KernelScenario:
    copy: str = "as_strided"
    device: str = "cpu"
    batch: int = 48
    seed: int = 0
    capture_len: int = 200  # longest sequence at capture: K_capture
    replay_lens: tuple[int, ...] = (600, 120, 900, 60)  # longest sequence of each replay
    launch: str = "auto"  # "graph" (CUDA), "frozen"; auto: graph on CUDA
    placement: str = "default"  # where the KV cache sits: flexfix.mechanism.cache_placement.PLACEMENTS
    v_placement: str | None = None  # where the V cache sits, if not where the K cache does
    shape: paged.PagedShape = field(
        default_factory=lambda: paged.PagedShape(max_num_seqs=128, max_model_len=1024, num_pages=8192)
    )

    def __post_init__(self) -> None:
        if self.copy not in COPIES:
            raise ValueError(f"copy must be one of {sorted(COPIES)}, got {self.copy!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.launch not in ("auto", "graph", "frozen"):
            raise ValueError(f"launch must be 'auto', 'graph' or 'frozen', got {self.launch!r}")
        if self.launch == "graph" and self.device != "cuda":
            raise ValueError("a CUDA-graph launch needs device='cuda'")
        for placement in (self.placement, self.v_placement or self.placement):
            if placement not in PLACEMENTS:
                raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
            if placement == "fenced" and self.device != "cuda":
                raise ValueError("the fenced placement needs device='cuda' (unmapped GPU address space)")
        positive_int("batch", self.batch, maximum=self.shape.max_num_seqs)
        for n in (self.capture_len, *self.replay_lens):
            if not 1 <= n <= self.shape.max_model_len:
                raise ValueError(f"sequence length {n} outside 1..{self.shape.max_model_len}")

    @property
    def launch_kind(self) -> str:
        if self.launch != "auto":
            return self.launch
        return "graph" if self.device == "cuda" else "frozen"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32


def tolerance(dtype: torch.dtype) -> float:
    """Largest |out - reference| still called a match (bf16 kernels carry ~3e-3)."""
    return 5e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4


def step_lengths(batch: int, longest: int, rng: random.Random) -> list[int]:
    """Sequence lengths of one step: random, the first request the longest."""
    return [longest] + [rng.randint(1, longest) for _ in range(batch - 1)]


def scenario_steps(sc: KernelScenario, device: str | None = None):
    """The scenario's steps, capture first: ``(index, step)`` pairs, the same lengths, pages and queries whatever the
    device (``device`` defaults to the scenario's)."""
    rng = random.Random(sc.seed)
    for i, longest in enumerate((sc.capture_len, *sc.replay_lens)):
        lengths = step_lengths(sc.batch, longest, rng)
        yield i, paged.make_step(sc.shape, lengths, seed=sc.seed * 1000 + i, device=device or sc.device, dtype=sc.dtype)


def run_kernel_scenario(
    sc: KernelScenario,
    report: Callable[[dict], None] = lambda r: None,
    on_cache: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
) -> list[dict]:
    """Capture then replay; one record per step (capture included), also passed to
    ``report`` as soon as it exists, so that a crash loses none of the earlier ones.
    ``on_cache(moment, k_cache, v_cache)`` is called once the cache is placed (``"placed"``) and after the capture
    step (``"captured"``), before any replay."""
    copy = COPIES[sc.copy]
    k_cache, v_cache = paged.make_cache(sc.shape, seed=sc.seed, device=sc.device, dtype=sc.dtype)
    k_cache, v_cache = place(k_cache, sc.placement), place(v_cache, sc.v_placement or sc.placement)
    if on_cache is not None:
        on_cache("placed", k_cache, v_cache)
    buffers = paged.PersistentBuffers(sc.shape, device=sc.device)
    cache_tokens = k_cache.shape[2]

    if sc.launch_kind == "frozen" and sc.device == "cpu":

        def attend(query, kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids):
            views = paged.Views(kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids)
            return paged.blocksparse_decode(query, k_cache, v_cache, views)
    else:
        options = paged.kernel_options("vllm")

        def attend(query, kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids):
            views = paged.Views(kv_indices, kv_num_blocks, physical_to_logical, seq_lens, doc_ids)
            mask = paged.make_block_mask(views, query.shape[2], cache_tokens)
            return paged.flex_decode(query, k_cache, v_cache, mask, compiled=True, options=options)

    launch = make_launch(sc.launch_kind, attend)
    records = []
    for i, step in scenario_steps(sc):
        views = buffers.write(step, copy)
        record = {
            "step": "capture" if i == 0 else f"replay {i}",
            "K": step.width,
            "G": step.num_query_blocks,
            "written_stride": list(views.kv_indices.stride()),
        }
        try:
            if i == 0:
                query = step.query.clone()  # the captured query buffer; later steps write into it
                out = launch.capture(query=query, **views.as_dict())
            else:
                query.copy_(step.query)
                out = launch.replay()
        except IndexError as e:  # the CPU analog of reading outside the buffer
            record.update(max_error=None, outcome="index_error", detail=str(e))
        else:
            err = (out.float().cpu() - paged.reference(step, k_cache, v_cache)).abs().max().item()
            record.update(max_error=err, outcome="ok" if err <= tolerance(sc.dtype) else "wrong_result")
        record["launch_stride"] = list(launch.launch_strides()["kv_indices"])
        records.append(record)
        report(record)
        if i == 0 and on_cache is not None:
            on_cache("captured", k_cache, v_cache)
    return records
