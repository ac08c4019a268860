"""Where the persistent ``kv_indices`` rows live, and where a captured kernel reads them.

At a capture step the ``[G, K_capture]`` metadata is copied into the ``[G_max, W_max]``
buffer and the kernel is captured with the view's strides.  At a replay step the
``[G, K_replay]`` metadata is copied in again, and the kernel reads row ``g``, entry
``j`` at ``offset + g * stride_capture[0] + j * stride_capture[1]``.  For each copy this
module says which storage cell holds which (row, entry) at replay, which cell the
kernel reads for it, and counts per row the cells read that hold another entry
(*misread*) or that nothing wrote this step (*never written*).  :func:`metadata_strides` says why only
``kv_indices`` breaks: it is the one metadata tensor that is 2-D and narrower than its buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from flexfix.mechanism import paged
from flexfix.mechanism.persistent import storage_map

__all__ = ["Layout", "stride_layout", "layout_table", "compare_copies", "metadata_strides"]

UNWRITTEN = -1


@dataclass
class Layout:
    """One copy strategy at one capture/replay pair, as storage-cell maps."""

    copy_name: str
    g: int
    g_max: int
    w_max: int
    k_capture: int
    k_replay: int
    capture_stride: tuple[int, ...]
    replay_stride: tuple[int, ...]
    owner_capture: np.ndarray  # [G_max, W_max] storage grid: row that wrote the cell at capture, -1 none
    owner_replay: np.ndarray  # same, at replay
    cell_of: np.ndarray  # [G, K_replay]: where entry (g, j) was written at replay
    read_at: np.ndarray  # [G, K_replay]: where the captured kernel reads entry (g, j)

    @property
    def misread(self) -> np.ndarray:
        return self.read_at != self.cell_of

    @property
    def never_written(self) -> np.ndarray:
        flat = self.owner_replay.reshape(-1)
        inside = self.read_at < flat.size
        out = np.ones_like(self.read_at, dtype=bool)
        out[inside] = flat[self.read_at[inside]] == UNWRITTEN
        return out


def _owner_grid(view: torch.Tensor, g_max: int, w_max: int) -> np.ndarray:
    grid = np.full(g_max * w_max, UNWRITTEN, dtype=np.int64)
    cells = storage_map(view).numpy()
    grid[cells.reshape(-1)] = np.repeat(np.arange(view.shape[0]), view.shape[1])
    return grid.reshape(g_max, w_max)


def stride_layout(
    copy: Callable, copy_name: str, *, g: int, g_max: int, w_max: int, k_capture: int, k_replay: int
) -> Layout:
    """Capture with width ``k_capture``, replay with ``k_replay``, through ``copy``."""
    if not 1 <= g <= g_max:
        raise ValueError(f"G={g} must be in 1..G_max={g_max}")
    for name, k in (("K_capture", k_capture), ("K_replay", k_replay)):
        if not 1 <= k <= w_max:
            raise ValueError(f"{name}={k} must be in 1..W_max={w_max}")
    dst = torch.full((g_max, w_max), UNWRITTEN, dtype=torch.int32)
    captured = copy(dst, torch.arange(g * k_capture, dtype=torch.int32).reshape(g, k_capture))
    capture_stride, capture_offset = tuple(captured.stride()), captured.storage_offset()
    owner_capture = _owner_grid(captured, g_max, w_max)
    replayed = copy(dst, torch.arange(g * k_replay, dtype=torch.int32).reshape(g, k_replay))
    rows = np.arange(g)[:, None]
    cols = np.arange(k_replay)[None, :]
    return Layout(
        copy_name=copy_name,
        g=g,
        g_max=g_max,
        w_max=w_max,
        k_capture=k_capture,
        k_replay=k_replay,
        capture_stride=capture_stride,
        replay_stride=tuple(replayed.stride()),
        owner_capture=owner_capture,
        owner_replay=_owner_grid(replayed, g_max, w_max),
        cell_of=storage_map(replayed).numpy(),
        read_at=capture_offset + rows * capture_stride[0] + cols * capture_stride[1],
    )


def layout_table(layouts: list[Layout]) -> pd.DataFrame:
    """One row per copy x query-block row: cells read, misread, never written this step."""
    rows = []
    for lay in layouts:
        for g in range(lay.g):
            rows.append(
                {
                    "copy": lay.copy_name,
                    "row": g,
                    "K_capture": lay.k_capture,
                    "K_replay": lay.k_replay,
                    "capture_stride": list(lay.capture_stride),
                    "replay_write_stride": list(lay.replay_stride),  # the copy's row stride at the replay step
                    "cells_read": lay.k_replay,
                    "misread": int(lay.misread[g].sum()),
                    "never_written": int(lay.never_written[g].sum()),
                    "misread_fraction": float(lay.misread[g].mean()),
                }
            )
    return pd.DataFrame(rows)


def compare_copies(
    reference: Callable, candidate: Callable, shapes: list[tuple[tuple[int, int], tuple[int, int]]]
) -> pd.DataFrame:
    """Do two copies put every element in the same storage cell (and return equal views)?"""
    rows = []
    for dst_shape, src_shape in shapes:
        src = torch.arange(src_shape[0] * src_shape[1], dtype=torch.int32).reshape(src_shape)
        a = reference(torch.zeros(dst_shape, dtype=torch.int32), src)
        b = candidate(torch.zeros(dst_shape, dtype=torch.int32), src)
        rows.append(
            {
                "dst_shape": list(dst_shape),
                "src_shape": list(src_shape),
                "strides_equal": tuple(a.stride()) == tuple(b.stride()),
                "storage_maps_equal": bool(torch.equal(storage_map(a), storage_map(b))),
                "values_equal": bool(torch.equal(a, b)),
            }
        )
    return pd.DataFrame(rows)


def metadata_strides(shape: paged.PagedShape, step: paged.DecodeStep, copies: dict[str, Callable]):
    """For every per-step metadata tensor: its shape, its buffer's shape, and the strides of the view each
    copy in ``copies`` (name -> function) returns.  Only a tensor that is 2-D *and* narrower than its buffer
    can get different strides from the two copies; a 1-D view has stride ``(1,)`` either way."""
    kv_indices, kv_num_blocks = paged.build_kv_indices(step)
    sources = {
        "kv_indices": kv_indices,
        "kv_num_blocks": kv_num_blocks,
        "physical_to_logical": paged.physical_to_logical(step, shape.num_pages),
        "seq_lens": step.seq_lens,
        "doc_ids": torch.arange(step.batch, dtype=torch.int32),
    }
    rows = []
    for name, src in sources.items():
        row = {"tensor": name, "shape": tuple(src.shape)}
        for copy_name, copy in copies.items():
            buffers = paged.PersistentBuffers(shape)
            buffer = getattr(buffers, name)
            row["buffer"] = tuple(buffer.shape)
            row[f"strides, {copy_name}"] = tuple(copy(buffer, src.to(buffer.dtype)).stride())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("tensor")
    stride_cols = [c for c in table.columns if c.startswith("strides")]
    table["same strides"] = table[stride_cols].nunique(axis=1) == 1
    return table
