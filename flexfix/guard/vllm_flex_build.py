"""vLLM's own FlexAttention metadata, built on the CPU: what the replay guard sees at capture and replay.

No GPU and no CUDA graph here: :class:`FlexMetadataSteps` runs the installed vLLM's
``FlexAttentionMetadataBuilder.build_for_cudagraph_capture`` (the capture: sequences one token long) and
``build`` (a decode step with real lengths) on a stand-in builder that holds what ``__init__`` would have
allocated -- the persistent buffers -- and on persistent runner buffers that each step's
``CommonAttentionMetadata`` slices, as vLLM's model runner does.  The metadata objects are vLLM's, made
by vLLM's code with vLLM's ``copy_to_persistent`` (0.20.0's ``as_strided``, or flexfix's sliced copy once
:func:`flexfix.integration.vllm_patch.apply` ran), so the guard's findings on them are the findings it
makes in the engine, field paths included; only what a replay would then *do* needs the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FlexMetadataSteps", "guard_steps"]


@dataclass
class FlexMetadataSteps:
    max_num_seqs: int = 128
    max_model_len: int = 1024
    block_size: int = 16
    num_gpu_blocks: int = 1024

    def __post_init__(self) -> None:
        from vllm.utils.math_utils import cdiv
        from vllm.v1.attention.backends.flex_attention import FlexAttentionMetadataBuilder

        max_tokens = self.max_num_seqs  # decode: one token per request
        builder = object.__new__(FlexAttentionMetadataBuilder)  # its methods, without a VllmConfig
        pages = cdiv(self.max_model_len, self.block_size)
        state = dict(
            block_size=self.block_size,
            kv_cache_spec=_Spec(self.block_size),
            model_config=_Ns(max_model_len=self.max_model_len),
            cache_config=_Ns(num_gpu_blocks=self.num_gpu_blocks),
            vllm_config=_Ns(scheduler_config=_Ns(max_num_seqs=self.max_num_seqs)),
            device=torch.device("cpu"),
            direct_build=True,
            q_block_size=16,
            kv_block_size=self.block_size,
            max_model_len=self.max_model_len,
            max_num_query_groups=cdiv(max_tokens, 16),
            max_num_kv_indices=16 * pages,
            persistent_kv_num_blocks=torch.empty(cdiv(max_tokens, 16), dtype=torch.int32),
            persistent_offset_tensor=torch.empty(self.max_num_seqs, dtype=torch.int32),
            persistent_doc_ids=torch.empty(max_tokens, dtype=torch.int32),
            persistent_physical_to_logical=None,
            persistent_kv_indices=None,
        )
        builder.__dict__.update(state)
        self.builder = builder
        # The model runner's persistent input buffers; each step's metadata holds slices of them.
        self.query_start_loc = torch.zeros(self.max_num_seqs + 1, dtype=torch.int32)
        self.seq_lens = torch.zeros(self.max_num_seqs, dtype=torch.int32)
        self.block_table = torch.zeros(self.max_num_seqs, pages, dtype=torch.int32)
        self.slot_mapping = torch.zeros(max_tokens, dtype=torch.int64)

    def capture(self, num_reqs: int):
        """The metadata vLLM captures a decode graph of ``num_reqs`` requests with (lengths 1)."""
        return self.builder.build_for_cudagraph_capture(self._common([1] * num_reqs))

    def step(self, seq_lens: list[int]):
        """The metadata of one decode step whose requests hold ``seq_lens`` tokens."""
        return self.builder.build(common_prefix_len=0, common_attn_metadata=self._common(seq_lens))

    def _common(self, seq_lens: list[int]):
        from vllm.v1.attention.backend import CommonAttentionMetadata

        n = len(seq_lens)
        if not 1 <= n <= self.max_num_seqs or not all(1 <= s <= self.max_model_len for s in seq_lens):
            raise ValueError(f"{n} requests of lengths {min(seq_lens)}..{max(seq_lens)} do not fit this builder")
        lens = torch.tensor(seq_lens, dtype=torch.int32)
        self.query_start_loc[: n + 1] = torch.arange(n + 1, dtype=torch.int32)
        self.seq_lens[:n] = lens
        pages = (lens + self.block_size - 1) // self.block_size
        self.block_table.zero_()
        first = 0
        for i, p in enumerate(pages.tolist()):  # each request's pages, one after another in the pool
            self.block_table[i, :p] = torch.arange(first, first + p, dtype=torch.int32) % self.num_gpu_blocks
            first += p
        self.slot_mapping[:n] = self.block_table[torch.arange(n), (lens - 1) // self.block_size].long() * (
            self.block_size
        ) + ((lens - 1) % self.block_size)
        return CommonAttentionMetadata(
            query_start_loc=self.query_start_loc[: n + 1],
            query_start_loc_cpu=self.query_start_loc[: n + 1].clone(),
            seq_lens=self.seq_lens[:n],
            num_reqs=n,
            num_actual_tokens=n,
            max_query_len=1,
            max_seq_len=int(lens.max()),
            block_table_tensor=self.block_table[:n],
            slot_mapping=self.slot_mapping[:n],
            seq_lens_cpu_upper_bound=lens.clone(),
        )


class _Ns:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Spec:
    """Stands for an ``AttentionSpec`` (the builder reads ``block_size`` and checks it is not encoder-only)."""

    def __init__(self, block_size: int):
        self.block_size = block_size


def guard_steps(requests: int, longest: list[int], mode: str = "error", seed: int = 0) -> tuple[object, str | None]:
    """The guard in ``mode`` over vLLM's own metadata, as the installed copy builds it: a capture of ``requests``
    decode requests, then one replay per entry of ``longest`` (that step's longest sequence; the others random
    below it).  Returns (a table: step, the row width ``K`` and strides of ``kv_indices``, what the guard did and
    what it found) and the message of the first refusal (None without one).  CPU tensors: the guard counts them
    here (on a GPU it skips them, as a graph reads none)."""
    import random

    import pandas as pd

    from flexfix.guard import vllm_metadata
    from flexfix.guard.replay_guard import ReplayGuard, ReplayGuardError

    rng = random.Random(seed)
    steps = FlexMetadataSteps(max_num_seqs=max(requests, 16))
    guard = ReplayGuard(mode, {"vLLM": _vllm(), "attention backend": "FLEX_ATTENTION"}, devices=None)
    guard.log = _quiet_log()  # what it would log is in the returned table and message: no stray warning line
    key = f"FULL decode graph of {requests} requests"
    md = steps.capture(requests)
    roots = vllm_metadata.roots({"model.layers.0.self_attn.attn": md})
    guard.captured(key, roots, vllm_metadata.not_read_paths(roots))
    rows = [_row("capture", md, "captured", [])]
    message = None
    for i, top in enumerate(longest, 1):
        md = steps.step([top] + [rng.randint(1, top) for _ in range(requests - 1)])
        before = dict(guard.alarms)
        try:
            did = (
                "replayed" if guard.before_replay(key, vllm_metadata.roots({"layer": md})) else "ran without the graph"
            )
        except ReplayGuardError as e:
            did, message = "refused", message or str(e)
        found = [k for k, n in guard.alarms.items() if n > before.get(k, 0)]
        rows.append(_row(f"replay {i}", md, did, found))
    return pd.DataFrame(rows), message


def _quiet_log():
    """A logger that writes nothing (no handler, no propagation): the CPU steps return what the guard found."""
    import logging

    log = logging.getLogger("flexfix.guard.cpu_steps")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def _row(step: str, md, did: str, found: list[str]) -> dict:
    kv = md.block_mask.kv_indices
    return {
        "step": step,
        "longest sequence": int(md.max_seq_len),
        "kv_indices shape": list(kv.shape),
        "kv_indices strides": list(kv.stride()),
        "data_ptr": hex(kv.data_ptr()),
        "guard": did,
        "alarms": ", ".join(found) or "none",
    }


def _vllm() -> str:
    from importlib import metadata

    return metadata.version("vllm")
