"""Planted bugs of the class, in vLLM's TRITON_ATTN metadata builder, to show the guard generic.

Each mutant wraps ``TritonAttentionMetadataBuilder.build`` at run time (vLLM's files are never edited),
after vLLM's own build, and knows whether it runs for a capture (``build_for_cudagraph_capture``):

* ``row_stride`` -- (a) the DeepSeek-V4 twin (vLLM #52448): ``block_table`` repacked into a persistent flat
  buffer as ``[num_reqs, blocks this step needs]``, so its row stride follows the step (the capture, built
  with ``max_seq_len = max_model_len``, has the widest rows); rows past the first are then read from other
  rows' cells;
* ``fresh_tensor`` -- (b) a new tensor at every build (vLLM #51994): ``seq_lens`` copied into a fresh
  tensor; the graph keeps reading the capture's copy (filled with 1 by the capture build), kept alive here
  so that the wrong answer is deterministic rather than a use-after-free;
* ``frozen_decision`` -- (c) a decision frozen at capture (vLLM #40961, where a capture-time length chose
  full attention for sliding-window layers): the build applies a reference sliding window
  (``rswa_window``, ``rswa_prefix_lens``: vLLM 0.26's R-SWA) on every step but the capture's, so the
  captured kernel never masks and replays ignore the window the step's metadata asks for;
* ``stale_tail`` -- (d) stale padding (sglang #24361): the rows of ``seq_lens`` past the step's requests,
  which vLLM zeroes, are left holding a long length.  Only the *contents* differ: the guard compares
  layouts and cannot see it (a check of the padded rows' values against a neutral value, SGLang's
  ``PaddingPolicy.ZERO``, would).

``FLEXFIX_MUTANT=<name>`` plants one in a process that runs :func:`plant_from_env`.
"""

from __future__ import annotations

import os
import threading

import torch

__all__ = ["MUTANTS", "ENV", "plant", "plant_from_env", "unplant"]

ENV = "FLEXFIX_MUTANT"
MUTANTS = {
    "row_stride": "(a) block_table packed with this step's row width (DSv4 C128A, vLLM #52448)",
    "fresh_tensor": "(b) seq_lens in a new tensor at every build (vLLM #51994)",
    "frozen_decision": "(c) a sliding window applied on every step but the capture's (vLLM #40961)",
    "stale_tail": "(d) padded rows of seq_lens left stale (sglang #24361): contents only",
}
WINDOW = 16  # frozen_decision: tokens of the window (and 1 of prefix) a step's metadata asks for
MODULE = "vllm.v1.attention.backends.triton_attn"
_ORIGINALS = "_flexfix_mutant_originals"
_state = threading.local()
_kept: list[torch.Tensor] = []
_flat: dict[int, torch.Tensor] = {}


def plant(name: str) -> None:
    """Wrap the TRITON_ATTN builder with mutant ``name``; ValueError for an unknown one."""
    if name not in MUTANTS:
        raise ValueError(f"unknown mutant {name!r}; expected one of {sorted(MUTANTS)}")
    import importlib

    module = importlib.import_module(MODULE)
    builder = module.TritonAttentionMetadataBuilder
    if _ORIGINALS in builder.__dict__:
        raise RuntimeError(f"a mutant is already planted ({builder.__dict__[_ORIGINALS][2]})")
    build, capture = builder.build, builder.build_for_cudagraph_capture

    def build_for_cudagraph_capture(self, common_attn_metadata):
        _state.capturing = True
        try:
            return capture(self, common_attn_metadata)
        finally:
            _state.capturing = False

    def mutated_build(self, common_prefix_len, common_attn_metadata, fast_build=False):
        md = build(self, common_prefix_len, common_attn_metadata, fast_build)
        _MUTATE[name](self, md, common_attn_metadata, getattr(_state, "capturing", False))
        return md

    setattr(builder, _ORIGINALS, (build, capture, name))
    builder.build = mutated_build
    builder.build_for_cudagraph_capture = build_for_cudagraph_capture


def unplant() -> bool:
    import importlib

    builder = importlib.import_module(MODULE).TritonAttentionMetadataBuilder
    saved = builder.__dict__.get(_ORIGINALS)
    if saved is None:
        return False
    builder.build, builder.build_for_cudagraph_capture, _ = saved
    delattr(builder, _ORIGINALS)
    _kept.clear()
    _flat.clear()
    return True


def plant_from_env() -> str | None:
    name = os.environ.get(ENV, "").strip()
    if name:
        plant(name)
    return name or None


def _row_stride(builder, md, common, capturing: bool) -> None:
    table = md.block_table
    rows, widest = table.shape
    block_size = builder.block_size if hasattr(builder, "block_size") else builder.kv_cache_spec.block_size
    need = max(1, min(widest, -(-int(md.max_seq_len) // block_size)))
    flat = _flat.get(id(builder))
    if flat is None or flat.numel() < rows * widest:
        flat = _flat[id(builder)] = torch.zeros(max(rows, 256) * widest, dtype=table.dtype, device=table.device)
    packed = flat[: rows * need].view(rows, need)
    packed.copy_(table[:, :need])
    md.block_table = packed


def _fresh_tensor(builder, md, common, capturing: bool) -> None:
    md.seq_lens = md.seq_lens.clone()
    if capturing:
        _kept.append(md.seq_lens)  # the graph reads this one at every replay: keep it alive


def _frozen_decision(builder, md, common, capturing: bool) -> None:
    if capturing:
        return
    rows = md.seq_lens.shape[0]
    prefix = _flat.get(-id(builder))
    if prefix is None or prefix.numel() < rows:
        prefix = _flat[-id(builder)] = torch.ones(max(rows, 256), dtype=torch.int32, device=md.seq_lens.device)
    md.rswa_window = WINDOW
    md.rswa_prefix_lens = prefix[:rows]


def _stale_tail(builder, md, common, capturing: bool) -> None:
    seq_lens = md.seq_lens
    storage = torch.empty(0, dtype=seq_lens.dtype, device=seq_lens.device).set_(seq_lens.untyped_storage())
    start = seq_lens.storage_offset() + common.num_reqs
    end = min(storage.numel(), seq_lens.storage_offset() + seq_lens.shape[0])
    if end > start:
        storage[start:end] = int(md.max_seq_len)


_MUTATE = {
    "row_stride": _row_stride,
    "fresh_tensor": _fresh_tensor,
    "frozen_decision": _frozen_decision,
    "stale_tail": _stale_tail,
}
