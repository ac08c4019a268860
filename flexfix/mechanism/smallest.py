"""The smallest reproduction: plain torch, one persistent buffer, one capture, one replay (notebook 01 shows it).

A step's ``kv_indices`` (``[G, K]``, ``K`` changing from step to step) is copied into a persistent ``[G_max, W_max]``
buffer, either as vLLM 0.20.0 does (:func:`as_strided_copy`) or as the fix does (:func:`slice_copy`).  :func:`kernel`
reads the buffer as the attention kernel does: by address arithmetic from the view's pointer (storage offset) and
strides, each row up to its count in ``kv_num_blocks``; it calls no ``as_strided`` of its own.
:func:`replay_cuda_graph` captures it in a real ``torch.cuda.CUDAGraph`` at one step and replays it
after the next step's copy; :func:`replay_frozen` does the same on CPU, where
:class:`~flexfix.mechanism.graphs.FrozenLaunch` plays the graph's part (it keeps each tensor's storage, offset and
strides from the capture and rebuilds the views from them at replay).  :func:`reads` runs both copies and says what
each row read.
"""

from __future__ import annotations

import inspect

import pandas as pd
import torch

from flexfix.mechanism.graphs import FrozenLaunch

__all__ = ["as_strided_copy", "slice_copy", "kernel", "replay_cuda_graph", "replay_frozen", "source", "shown", "reads"]


def as_strided_copy(buffer, src):  # vLLM 0.20.0: the view gets src's strides (K, 1)
    view = buffer.as_strided(src.shape, src.stride())
    view.copy_(src)
    return view


def slice_copy(buffer, src):  # the fix, PR #40842: the view keeps the buffer's strides (W_max, 1)
    view = buffer[: src.shape[0], : src.shape[1]]
    view.copy_(src)
    return view


def kernel(kv_indices, kv_num_blocks, width):
    # A GPU kernel is handed kv_indices as a pointer plus strides (numbers), not as a shaped tensor; it computes
    # each address itself. Row g's entry j lives at pointer + g * row_stride + j * col_stride. How many entries
    # row g holds, kv_num_blocks[g], is read from memory at run time (width only sizes the output).
    memory = torch.empty(0, dtype=kv_indices.dtype, device=kv_indices.device).set_(kv_indices.untyped_storage())
    pointer, (row_stride, col_stride) = kv_indices.storage_offset(), kv_indices.stride()
    g = torch.arange(kv_num_blocks.numel(), device=kv_indices.device)[:, None]
    j = torch.arange(width, device=kv_indices.device)
    address = pointer + g * row_stride + j * col_stride
    return torch.where(j < kv_num_blocks[:, None], memory[address], -1)  # -1: past the row's count


def replay_cuda_graph(copy, buffer, num, capture_step, replay_step):
    view = copy(buffer, capture_step)  # the capture step's kv_indices
    num.fill_(capture_step.shape[1])
    kernel(view, num, buffer.shape[1])  # warm-up, outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernel(view, num, buffer.shape[1])  # frozen: view's pointer and strides
    copy(buffer, replay_step)  # the next step writes new contents (and, for as_strided, new strides)
    num.fill_(replay_step.shape[1])  # and a new count per row: data, the graph reads it again
    graph.replay()
    return out


def replay_frozen(copy, buffer, num, capture_step, replay_step):
    # On CPU: keeps the storage, offset and strides of each argument at capture, rebuilds the views at replay.
    launch = FrozenLaunch(lambda kv_indices, kv_num_blocks: kernel(kv_indices, kv_num_blocks, buffer.shape[1]))
    num.fill_(capture_step.shape[1])
    launch.capture(kv_indices=copy(buffer, capture_step), kv_num_blocks=num)
    copy(buffer, replay_step)
    num.fill_(replay_step.shape[1])
    return launch.replay()  # the kernel again, on views rebuilt with the capture's strides


def source(*functions) -> str:
    """The source of these functions, as the notebook shows it."""
    return "\n\n\n".join(inspect.getsource(f).rstrip() for f in functions)


def _holds(values: list[int], k: int) -> str:
    """``[32, 33, ..., 47, 48, ...]`` as ``row 0: 32-47, row 1: 0-31`` (entry ``r * k + j`` is row ``r``'s ``j``)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1 and v // k == runs[-1][0] // k:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(f"row {a // k}: {a % k}-{b % k}" if a != b else f"row {a // k}: {a % k}" for a, b in runs)


def reads(device: str = "cpu", g: int = 3, g_max: int = 4, w_max: int = 64, k_capture: int = 32, k_replay: int = 48):
    """Both copies, captured at ``k_capture`` and replayed at ``k_replay`` (a CUDA graph on ``"cuda"``, the frozen
    launch on ``"cpu"``): per copy and row, what the replayed kernel read and whether it is the row's own entries.
    Entry ``j`` of row ``r`` holds the value ``r * K + j``, so a value names the cell's row and entry."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if not (1 <= g <= g_max and 1 <= k_capture < k_replay <= w_max):
        raise ValueError(
            f"need 1 <= G={g} <= G_max={g_max} and 1 <= K_capture={k_capture} < K_replay={k_replay} <= W_max={w_max} "
            "(a replay wider than the capture; notebook 03 draws a narrower one)"
        )
    replay = replay_cuda_graph if device == "cuda" else replay_frozen
    rows = []
    for name, copy in (("as_strided (vLLM 0.20.0)", as_strided_copy), ("sliced (fix)", slice_copy)):
        buffer = torch.full((g_max, w_max), -1, dtype=torch.int32, device=device)
        num = torch.empty(g, dtype=torch.int32, device=device)
        steps = [torch.arange(g * k, dtype=torch.int32, device=device).reshape(g, k) for k in (k_capture, k_replay)]
        out = replay(copy, buffer, num, *steps).cpu()
        for r in range(g):
            got = [int(v) for v in out[r, :k_replay]]
            rows.append(
                {
                    "copy": name,
                    "launch": "CUDA graph" if device == "cuda" else "frozen launch (CPU)",
                    "row": r,
                    "entries read": len(got),
                    "what they hold": _holds(got, k_replay),
                    "its own entries": got == steps[1][r].tolist(),
                }
            )
    return pd.DataFrame(rows).set_index(["copy", "row"])


class Code(str):
    """Python source that a notebook renders as a code block (and a terminal prints as itself)."""

    def _repr_markdown_(self) -> str:
        return f"```python\n{self}\n```"


def shown(*functions) -> Code:
    """:func:`source` as a code block in a notebook."""
    return Code(source(*functions))
