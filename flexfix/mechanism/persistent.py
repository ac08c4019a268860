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

from collections.abc import Sequence

import torch

__all__ = ["copy_to_persistent", "copy_to_persistent_as_strided", "copy_to_slice", "storage_map", "strides_separate"]

_STRIDED = torch.strided
_Tensor = torch.Tensor


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
    the same cells at every replay.  Unlike upstream, it refuses (``ValueError``, nothing
    written) a source of another rank, dtype, device or layout, one larger than ``dst`` in
    any dimension, and a destination that cannot be a persistent buffer (sparse, requiring
    grad, or with cells shared between elements, as an ``expand``-ed view has).  A source that
    shares memory with the destination (a view of the same buffer, transposed, say) is read
    whole before anything is written, so the copy is the source's values as they were.

    It runs several times before every step of the engine, so its checks are decided from
    attributes, shapes and strides, never element by element (issue #25).  What that costs
    per call against vLLM 0.21.0's bare slice copy is not shown here: ``flexfix copy-speed``
    measures it, and ``data/README.md`` says what its recorded runs
    (``data/copy_speed-*.json``) hold.  Only a non-contiguous destination whose strides
    alone cannot tell takes the per-element path (see :func:`_shares_cells`).
    """
    # The engine's calls: a contiguous buffer, a dense source of the same dtype and device.
    if (
        isinstance(dst, _Tensor)
        and isinstance(src, _Tensor)
        and dst.layout is _STRIDED
        and src.layout is _STRIDED
        and dst.dtype is src.dtype
        and dst.device == src.device
        and not dst.requires_grad
        and dst.is_contiguous()  # a cell per element, in every slice of it too
    ):
        # The leading slice src fits in, built for one and two dimensions without the tuple upstream builds per
        # call, and the whole buffer as dst[...] (an alias: the cheapest view); None where src does not fit.
        shape, limits = src.shape, dst.shape
        rank, view = len(shape), None
        if rank != len(limits):
            pass
        elif rank == 1:
            if shape[0] < limits[0]:
                view = dst[: shape[0]]
            elif shape[0] == limits[0]:
                view = dst[...]
        elif rank == 2:
            (rows, width), (max_rows, max_width) = shape, limits
            if rows <= max_rows and width < max_width:
                # dst[:rows, :width], built as the view with dst's OWN strides and offset: the same view, for half
                # of getitem's host time (as_strided with the source's strides is 0.20.0's bug; with the
                # destination's it is the slice)
                view = dst.as_strided(shape, dst.stride())
            elif rows <= max_rows and width == max_width:
                view = dst[:rows] if rows < max_rows else dst[...]
        else:
            view = dst[tuple(slice(0, n) for n in shape)]
            view = view if view.shape == shape else None
        if view is not None:
            # (storages without data, meta or empty, all sit at 0: cloning such a source changes nothing)
            if dst.untyped_storage().data_ptr() == src.untyped_storage().data_ptr():
                src = src.clone()  # read the whole source before writing over it
            view.copy_(src)
            return view
    # Everything else: each check in the documented order, its error if one fails.
    _refuse(dst, src)
    if src.device.type != "meta" and _same_storage(dst, src):
        src = src.clone()  # read the whole source before writing over it
    return copy_to_slice(dst, src)


def _refuse(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Raise the documented error of the first check ``dst`` and ``src`` fail (in this order); nothing if none."""
    if not isinstance(dst, torch.Tensor) or not isinstance(src, torch.Tensor):
        raise TypeError(f"copy_to_persistent needs two tensors, got dst={type(dst).__name__}, src={type(src).__name__}")
    for side, t in (("dst", dst), ("src", src)):
        if t.layout != torch.strided:
            raise ValueError(f"copy_to_persistent: {side} is a {t.layout} tensor; only dense (strided) tensors copy")
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
    if dst.requires_grad:
        raise ValueError(
            f"copy_to_persistent: dst of shape {tuple(dst.shape)} requires grad; a persistent buffer is a plain "
            "tensor (allocate it without requires_grad, or pass dst.detach())"
        )
    if _shares_cells(dst, src.shape):
        raise ValueError(
            f"copy_to_persistent: dst of shape {tuple(dst.shape)} and strides {tuple(dst.stride())} maps several "
            "elements to one memory cell (an expanded view?); a persistent buffer needs a cell per element"
        )


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.untyped_storage().nbytes() > 0


def _shares_cells(dst: torch.Tensor, shape: torch.Size) -> bool:
    """Whether the leading ``shape`` slice of ``dst`` puts two elements in one storage cell.

    Decided from sizes and strides (:func:`strides_separate`); only where they cannot tell (strides
    interleaved, as ``as_strided`` can make them) by the exact, per-element :func:`storage_map`.
    """
    view = dst[tuple(slice(0, n) for n in shape)]
    if view.numel() <= 1 or view.is_contiguous():
        return False
    if any(stride == 0 and size > 1 for size, stride in zip(view.shape, view.stride())):
        return True
    if strides_separate(view.shape, view.stride()):
        return False
    cells = storage_map(view).flatten()
    return bool(cells.unique().numel() != cells.numel())


def strides_separate(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether sizes and strides alone prove that every element has its own cell.

    Sufficient, not necessary: with the dimensions of more than one element sorted by stride,
    each stride must exceed the span of the smaller ones (the farthest offset they reach,
    ``sum((size - 1) * stride)``), as in any slice, permutation or step of a dense buffer.
    ``False`` means "cannot tell", not "shared".
    """
    span = 0
    for stride, size in sorted((abs(st), sz) for sz, st in zip(sizes, strides) if sz > 1):
        if stride <= span:
            return False
        span += (size - 1) * stride
    return True


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
