"""What flexfix's ``copy_to_persistent`` (the function ``apply()`` installs in vLLM, notebook 02) refuses, tried on
small CPU tensors (r0102 round 22, D13: its checks were described, never shown): one row per kind of input, with the
error it raised and whether the buffer was left as it was."""

from __future__ import annotations

import pandas as pd

__all__ = ["copy_refusals"]


def _cases():
    import torch

    buf = torch.zeros(4, 8, dtype=torch.int32)
    small = torch.ones(2, 3, dtype=torch.int32)
    return [
        ("a source of another dtype", buf, small.to(torch.int64)),
        ("a source of another rank", buf, torch.ones(2, dtype=torch.int32)),
        ("a source larger than the buffer", buf, torch.ones(5, 3, dtype=torch.int32)),
        ("a sparse source", buf, small.to_sparse()),
        ("a destination that requires grad", torch.zeros(4, 8, requires_grad=True), small.float()),
        ("a destination whose rows share cells (an expanded view)", buf[:1].expand(4, 8), small),
    ]


def copy_refusals(copy=None) -> pd.DataFrame:
    """Each refused input of ``copy`` (default: flexfix's ``copy_to_persistent``): the exception it raised, its
    message, and whether the destination still holds what it held before."""
    import torch

    if copy is None:
        from flexfix.mechanism.persistent import copy_to_persistent as copy
    rows = []
    for case, dst, src in _cases():
        before = dst.detach().clone()
        try:
            copy(dst, src)
            raised, message = "nothing", ""
        except Exception as e:  # noqa: BLE001 - what it raised is the row
            raised, message = type(e).__name__, str(e).removeprefix("copy_to_persistent: ")
        rows.append(
            {"input": case, "raised": raised, "message": message, "buffer unchanged": torch.equal(before, dst.detach())}
        )
    return pd.DataFrame(rows).set_index("input")
