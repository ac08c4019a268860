"""What the misread ``kv_indices`` cells hold, and which addresses they make the kernel load: on CPU, no kernel run.

A replayed launch reads row ``g`` of ``kv_indices`` at ``offset + g * capture_stride``, ``kv_num_blocks[g]`` cells
long.  This module writes a scenario's steps into the persistent buffer exactly as
:func:`flexfix.mechanism.kernel_repro.run_kernel_scenario` does (same steps, same copy; cells never written hold a
sentinel), reads every row ``g >= 1`` through the capture's strides and sorts what it finds:

* ``own``: a page of the row's own requests (read right, perhaps at another place in the row);
* ``other_page``: a valid page of the cache that is not the row's (another row's, or a stale one of an earlier step):
  the kernel loads it, the mask hides it, nothing faults;
* ``pad``: a ``-1`` pad.  Page ``-1`` of KV head 0 is the ``PAGE_SIZE * head_dim * itemsize`` bytes in front of the
  cache's first byte (see :mod:`flexfix.mechanism.cache_placement`);
* ``never_written``: a cell no step wrote (its value would be whatever ``torch.empty`` left);
* ``out_of_range``: any other value (a page past the cache, or below ``-1``).

``missed`` counts the row's own pages that the read skipped: the silently wrong part.
"""

from __future__ import annotations

import dataclasses

import torch

from flexfix.mechanism import paged
from flexfix.mechanism.kernel_repro import COPIES, KernelScenario, scenario_steps

__all__ = ["SENTINEL", "KINDS", "front_bytes", "misread_steps"]

SENTINEL = -(2**31)  # what a never-written cell holds here (not a page, not a pad)
KINDS = ("own", "other_page", "pad", "never_written", "out_of_range")


def front_bytes(shape: paged.PagedShape, dtype: torch.dtype) -> int:
    """How far in front of the cache a ``-1`` page starts: one page of one KV head."""
    return paged.PAGE_SIZE * shape.head_dim * torch.empty(0, dtype=dtype).element_size()


def _kinds(read: torch.Tensor, own: set[int], num_pages: int) -> dict[str, int]:
    values = read.tolist()
    return {
        "own": sum(v in own for v in values),
        "other_page": sum(1 <= v < num_pages and v not in own for v in values),
        "pad": sum(v == -1 for v in values),
        "never_written": sum(v == SENTINEL for v in values),
        "out_of_range": sum(v != SENTINEL and v != -1 and not 1 <= v < num_pages for v in values),
    }


def misread_steps(sc: KernelScenario, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    """One record per step of ``sc`` (on CPU whatever ``sc.device``): the cells rows ``g >= 1`` read through the
    capture's strides, sorted by :data:`KINDS`, the own pages they missed, and ``front_bytes_read``: how many bytes in
    front of the cache the read makes the kernel load (in ``dtype``, the cache's type on the GPU), 0 if none."""
    sc = dataclasses.replace(sc, device="cpu", placement="default")
    buffers = paged.PersistentBuffers(sc.shape, device="cpu")
    buffers.kv_indices.fill_(SENTINEL)
    flat = buffers.kv_indices.view(-1)
    records = []
    for i, step in scenario_steps(sc):
        views = buffers.write(step, COPIES[sc.copy])
        if i == 0:
            offset, (row_stride, col_stride) = views.kv_indices.storage_offset(), views.kv_indices.stride()
        true_rows, counts = paged.build_kv_indices(step)
        record = {"step": "capture" if i == 0 else f"replay {i}", "K": step.width, "G": step.num_query_blocks}
        record |= dict.fromkeys((*KINDS, "cells_read", "missed"), 0)
        for g in range(1, step.num_query_blocks):
            n = int(counts[g])
            cells = offset + g * row_stride + torch.arange(n) * col_stride
            if n and int(cells.max()) >= flat.numel():  # past the buffer: would be a read outside it
                record["out_of_range"] += int((cells >= flat.numel()).sum())
                cells = cells[cells < flat.numel()]
            read = flat[cells]
            own = set(true_rows[g, :n].tolist())
            for kind, count in _kinds(read, own, sc.shape.num_pages).items():
                record[kind] += count
            record["cells_read"] += n
            record["missed"] += len(own - set(read.tolist()))
        record["front_bytes_read"] = front_bytes(sc.shape, dtype) if record["pad"] else 0
        records.append(record)
    return records
