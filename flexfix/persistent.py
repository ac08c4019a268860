"""The two ways of copying per-step metadata into a persistent CUDA-graph buffer.

vLLM's FlexAttention backend keeps persistent buffers so that a CUDA graph can
capture the attention kernel once and replay it.  Before every step it copies the
step's metadata into them:

* vLLM 0.20.0 (``copy_to_persistent_as_strided``) re-strides the buffer with the
  *source's* strides: a ``[G, K]`` source lands densely, row stride ``K``.  ``K``
  changes from step to step, but a replayed graph keeps the stride it captured.
* The fix (vLLM PR #40842, ``copy_to_persistent``) copies into the slice
  ``dst[:G, :K]``, whose strides are always the buffer's own ``(W_max, 1)``.

``storage_map`` says, for every logical element of a view, which cell of the
underlying storage it lives in: the figures and tests are built on it.
"""

from __future__ import annotations

import torch

__all__ = ["copy_to_persistent", "copy_to_persistent_as_strided", "copy_to_slice", "storage_map"]


def copy_to_persistent_as_strided(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """vLLM 0.20.0's copy: a view of ``dst``'s storage with ``src``'s shape and strides.

    Same behaviour and error text as
    ``vllm.v1.attention.backends.flex_attention.copy_to_persistent`` in 0.20.0.
    """
    try:
        view = dst.as_strided(src.shape, src.stride())
    except RuntimeError as e:
        raise RuntimeError(
            f"Fail to re-stride a persistent tensor of shape {dst.shape} for a tensor of shape {src.shape}"
        ) from e
    view.copy_(src)
    return view


def copy_to_persistent(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """The fix: copy ``src`` into the leading slice of ``dst`` and return that slice.

    The returned view always has ``dst``'s strides, so a kernel captured on it reads
    the same cells at every replay.  Unlike upstream, it refuses (``ValueError``)
    a source of another rank, dtype or device, or one larger than ``dst`` in any
    dimension; nothing is written when it refuses.
    """
    if not isinstance(dst, torch.Tensor) or not isinstance(src, torch.Tensor):
        raise TypeError(f"copy_to_persistent needs two tensors, got dst={type(dst).__name__}, src={type(src).__name__}")
    if dst.ndim != src.ndim:
        raise ValueError(
            f"copy_to_persistent: rank mismatch, dst has shape {tuple(dst.shape)} "
            f"({dst.ndim}-D), src has shape {tuple(src.shape)} ({src.ndim}-D)"
        )
    if any(s > d for s, d in zip(src.shape, dst.shape)):
        raise ValueError(
            f"copy_to_persistent: src of shape {tuple(src.shape)} does not fit in "
            f"the persistent buffer of shape {tuple(dst.shape)}"
        )
    if dst.dtype != src.dtype:
        raise ValueError(f"copy_to_persistent: dtype mismatch, dst is {dst.dtype}, src is {src.dtype}")
    if dst.device != src.device:
        raise ValueError(f"copy_to_persistent: device mismatch, dst is on {dst.device}, src is on {src.device}")
    return copy_to_slice(dst, src)


def copy_to_slice(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """The rule of vLLM 0.21.0 (PR #40842), without flexfix's checks: copy into ``dst[:G, :K]``."""
    view = dst[tuple(slice(0, n) for n in src.shape)]
    view.copy_(src)
    return view


def storage_map(view: torch.Tensor) -> torch.Tensor:
    """For every logical element of ``view``, its element offset in the base storage.

    Returns an int64 CPU tensor of ``view``'s shape.  Two views of one buffer put an
    element in the same cell exactly when their maps agree there.
    """
    offsets = torch.full(tuple(view.shape), view.storage_offset(), dtype=torch.int64)
    for dim, (size, stride) in enumerate(zip(view.shape, view.stride())):
        shape = [1] * view.ndim
        shape[dim] = size
        offsets = offsets + (torch.arange(size, dtype=torch.int64) * stride).view(shape)
    return offsets
