"""What compute-sanitizer reported about the torch-only scenario (notebook 01): the first out-of-bounds address it
explains, and whether the allocation it names has the size of one of the scenario's KV caches."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import require, require_numbers
from flexfix.edition.narrative import markdown, plural

__all__ = ["sanitizer_read"]


_BEFORE = re.compile(r"is ([\d,]+) bytes before the nearest allocation at \S+ of size ([\d,]+) bytes")


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
        line = f"* `{row['copy']}`: {plural(int(errors or 0), 'error')} reported"
        found = _BEFORE.search(text)
        if found:
            before, size = (int(x.replace(",", "")) for x in found.groups())
            what = (
                f"an allocation of {size:,} bytes, the size of the scenario's key (and of its value) cache: {worked}"
                if size == cache_bytes
                else f"an allocation of {size:,} bytes"
            )
            line += f"; the first read lands {before:,} bytes *before* {what}"
        lines.append(line + ".")
    return markdown("\n".join(lines))
