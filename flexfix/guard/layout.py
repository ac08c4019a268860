"""What a captured kernel froze of one tensor: where it reads and how it steps through memory.

A CUDA graph records each kernel's arguments at capture: the pointer, and the strides (and the sizes the
kernel was specialised on) baked into the launch.  At replay no Python runs: the kernel reads from that
pointer with those strides, whatever the tensor that now *stands for* the same metadata looks like.  So
the replay is right only if every tensor the graph reads still has its capture-time

* ``data_ptr()`` -- the address the kernel starts from;
* strides -- how it steps from one row (or any index) to the next;
* storage offset, dtype and device.

A shape may change: vLLM's fix of the FlexAttention bug copies into ``dst[:G, :K]``, whose shape follows
the step while its strides stay the buffer's; the kernel's loop bound is data (``kv_num_blocks``), not the
shape.  And a stride of a dimension of size 1 addresses nothing: with 16 requests or fewer ``kv_indices``
has one row (``G = 1``), row 0 starts at the pointer, and its row stride is never used.  A pointer check
alone is blind to the bug: ``dst.as_strided(shape, stride)`` and ``dst[:n]`` start at ``dst.data_ptr()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Layout", "layout_of", "addressing_strides", "layout_changes", "ALARM_KINDS"]

# What differs between capture and replay of one tensor, each a reason the replay reads other cells.
ALARM_KINDS = ("pointer", "strides", "storage_offset", "dtype", "device", "rank")


@dataclass(frozen=True, slots=True)
class Layout:
    """A tensor as a captured kernel addresses it (``shape`` kept for the report, never an alarm)."""

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    dtype: torch.dtype
    device: torch.device

    @property
    def addresses_nothing(self) -> bool:
        return 0 in self.shape

    def describe(self) -> str:
        return f"ptr {self.ptr:#x}, shape {list(self.shape)}, strides {self.strides}"


def layout_of(t: torch.Tensor) -> Layout:
    return Layout(t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype, t.device)


def addressing_strides(capture: Layout, replay: Layout) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    """The strides of both layouts with those of dimensions of size 1 in both blanked (``None``): a kernel
    never multiplies an index other than 0 by them."""
    keep = [max(a, b) > 1 for a, b in zip(capture.shape, replay.shape)]
    return (
        tuple(s if k else None for s, k in zip(capture.strides, keep)),
        tuple(s if k else None for s, k in zip(replay.strides, keep)),
    )


def layout_changes(capture: Layout, replay: Layout) -> list[tuple[str, object, object]]:
    """``(kind, at capture, at replay)`` for each way ``replay`` addresses other memory than ``capture``;
    a shape change alone is not one (see the module's docstring).  Empty when nothing is addressed at both."""
    if capture.addresses_nothing and replay.addresses_nothing:
        return []
    changes: list[tuple[str, object, object]] = []
    if capture.device != replay.device:
        changes.append(("device", str(capture.device), str(replay.device)))
    if capture.dtype != replay.dtype:
        changes.append(("dtype", str(capture.dtype), str(replay.dtype)))
    if capture.ptr != replay.ptr:
        changes.append(("pointer", hex(capture.ptr), hex(replay.ptr)))
    if capture.offset != replay.offset:
        changes.append(("storage_offset", capture.offset, replay.offset))
    if len(capture.shape) != len(replay.shape):
        changes.append(("rank", len(capture.shape), len(replay.shape)))
    else:
        before, after = addressing_strides(capture, replay)
        if before != after:
            changes.append(("strides", capture.strides, replay.strides))
    return changes
