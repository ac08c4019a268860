"""What compute-sanitizer reported about the torch-only scenario (notebook 01): the first out-of-bounds address it
explains, and whether the allocation it names has the size of one of the scenario's KV caches."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import require, require_numbers
from flexfix.edition.narrative import markdown, plural

__all__ = ["sanitizer_read"]


_BEFORE = re.compile(r"is ([\d,]+) bytes before the nearest allocation at \S+ of size ([\d,]+) bytes")
_BLOCK = re.compile(r"in block \((\d+),(\d+),(\d+)\)")


def _grid(text: str) -> str:
    """What memcheck's ``in block (x,y,z)`` names (r0102 round 14, D6): torch's FlexAttention Triton template launches
    a grid of (query tile, batch, query head) (``torch._inductor.kernel.flex.flex_attention.flex_attention_grid``,
    whose kernel reads ``tl.program_id`` 0, 1, 2 as ``q_start``, ``off_zq``, ``off_hq``).  A tile holds ``BLOCK_M``
    queries, which must divide the block mask's query block (the template's static assert); the run does not record
    ``BLOCK_M``, so the query block is said only for ``BLOCK_M`` equal to it."""
    from flexfix.mechanism import paged

    found = _BLOCK.search(text)
    if not found:
        return ""
    x, y, z = (int(v) for v in found.groups())
    # r0102 round 22, D4 and D8: the grid's first coordinate is the *launch tile* (not a query block), and the clause
    # on which query block that is comes after the coordinates, in sentences of their own
    where = (
        "Launch tile 0 always lies in query block 0, which the mechanism says reads right."
        if x == 0
        else f"A launch tile holds `BLOCK_M` queries, which this run does not record (glossary): with tiles of a whole "
        f"query block ({paged.Q_BLOCK} queries) it is query block {x}, a block after the first, where the mechanism "
        "puts the misreads; smaller tiles would put it in an earlier block."
    )
    return (
        f" Where in the launch it came from: memcheck names `block ({x},{y},{z})`, which in the launch grid of torch's "
        f"FlexAttention template is (launch tile, batch, query head): launch tile {x}, batch {y}, query head {z}. "
        + where
    )


def _cache_bytes() -> tuple[int, str]:
    """Bytes of one of the sanitizer scenario's caches (keys or values): the default torch-only scenario's
    shape, bf16 as on the GPU; and that size worked out, for the reader."""
    import torch

    from flexfix.measure import timing
    from flexfix.mechanism import paged
    from flexfix.mechanism.kernel_repro import KernelScenario

    shape = KernelScenario().shape
    tokens = shape.num_pages * paged.PAGE_SIZE
    both = timing.kv_bytes(1, tokens, shape.num_kv_heads, shape.head_dim, torch.bfloat16)
    worked = (
        f"{shape.num_pages:,} pages of {paged.PAGE_SIZE} tokens x {shape.num_kv_heads} KV heads x head_dim "
        f"{shape.head_dim} x {torch.bfloat16.itemsize} bytes (bf16) = {both // 2:,} bytes"
    )
    return both // 2, worked


def sanitizer_read(sanitizer: pd.DataFrame) -> str:
    """What compute-sanitizer reported per copy, quoting the first out-of-bounds address it explains; says
    whether the allocation it names has the size of one of the scenario's KV caches."""
    require(sanitizer, "the compute-sanitizer runs", values=("copy", "sanitizer_errors", "sanitizer_lines"))
    require_numbers(sanitizer["sanitizer_errors"], "the compute-sanitizer runs", "sanitizer_errors")
    cache_bytes, worked = _cache_bytes()
    lines = []
    for _, row in sanitizer.iterrows():
        errors = row.get("sanitizer_errors")
        text = " ".join(row.get("sanitizer_lines") or [])
        line = f"* `{row['copy']}`: {plural(int(errors or 0), 'error')} reported."
        found = _BEFORE.search(text)
        if found:
            before, size = (int(x.replace(",", "")) for x in found.groups())
            what = (
                f"an allocation of {size:,} bytes, the size of the scenario's key (and of its value) cache: {worked}"
                if size == cache_bytes
                else f"an allocation of {size:,} bytes"
            )
            line += f" The first lands {before:,} bytes *before* {what}."
        lines.append(line + _grid(text))
    return markdown("\n".join(lines))
