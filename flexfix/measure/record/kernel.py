"""The torch-only reproduction, each run in its own child, and both copies under compute-sanitizer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import pandas as pd

from flexfix.edition import params
from flexfix.measure.record.limits import MAX_BATCH, MAX_WORKERS
from flexfix.measure.record.pool import no_save, outcome_row, pooled
from flexfix.measure.repro import run_kernel_in_child

__all__ = ["kernel_outcomes", "sanitizer_outcomes"]


def kernel_outcomes(
    device: str,
    seeds: Sequence[int],
    batches: Sequence[int],
    copies=("as_strided", "sliced"),
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = no_save,
    *,
    workers: int = 1,
) -> pd.DataFrame:
    """The torch-only repro for every copy x batch x seed, each in its own child, ``workers`` at a time;
    ``save`` gets the table after each run (an interrupt -- ``KeyboardInterrupt`` -- kills the running
    children and leaves the saved runs where ``save`` put them)."""
    seeds = params.positive_ints("seeds", seeds, minimum=0)
    batches = params.positive_ints("batches", batches, maximum=MAX_BATCH)
    params.positive_int("workers", workers, maximum=MAX_WORKERS)

    def job(copy: str, batch: int, seed: int, stop) -> tuple[dict, str]:
        out = run_kernel_in_child(copy, device, batch, seed, timeout=240, stop=stop)
        launch = "graph" if device == "cuda" else "frozen"
        row = outcome_row(out, copy=copy, batch=batch, seed=seed, device=device, launch=launch)
        return row, f"{copy:>10} batch {batch:3d} seed {seed}: {out}"

    jobs = [functools.partial(job, copy, batch, seed) for copy in copies for batch in batches for seed in seeds]
    return pooled(jobs, workers, progress, save)


def sanitizer_outcomes(
    batch: int = 48,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    save: Callable[[pd.DataFrame], None] = no_save,
) -> pd.DataFrame:
    """Both copies under compute-sanitizer memcheck (frozen launch, no caching allocator)."""
    params.positive_int("batch", batch, maximum=MAX_BATCH)
    rows = []
    for copy in ("as_strided", "sliced"):
        out = run_kernel_in_child(copy, "cuda", batch, seed, sanitizer=True, timeout=240)
        progress(f"sanitizer {copy}: {out} ({out.extra.get('sanitizer_errors')} errors)")
        rows.append(outcome_row(out, copy=copy, batch=batch, seed=seed, device="cuda", launch="frozen"))
        save(pd.DataFrame(rows))
    return pd.DataFrame(rows)
