"""What a CPU run's own torch-only runs add to the GPU recordings of notebook 01 (nothing), said from those runs: the
CPU analog cannot fault, but its index errors and silently wrong replays are outcomes of its own, so the sentence
names them instead of denying them (r0102 A1)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, plural

__all__ = ["analog_outcomes"]


def analog_outcomes(this_run: pd.DataFrame | None, device: str) -> str:
    """On a CPU run, a sentence on its own `as_strided` runs past one query block (``this_run``, the torch-only runs of
    :func:`flexfix.measure.record.kernel_outcomes`): how many ended in an index error and how many replays answered
    silently wrong, and that these are the analog's outcomes, not a GPU's. Empty on a GPU, whose own runs are a
    recording of their own."""
    if device == "cuda":
        return ""
    head = " This run is the CPU analog, which cannot fault"
    runs = None if this_run is None else this_run[(this_run["copy"] == "as_strided") & (this_run["batch"] > 16)]
    if runs is None or runs.empty:
        return head + ": it adds nothing to which way a GPU run ends."
    errors = int((runs["status"] == "index_error").sum())
    silent = sum(1 for recs in runs["records"] for r in recs if r.get("outcome") == "wrong_result")
    parts = []
    if errors:
        parts.append(
            f"{plural(errors, 'run')} of its own ended in an index error (the analog's read outside the KV cache)"
        )
    if silent:
        parts.append(
            f"{plural(silent, 'replay')} of its own answered silently wrong (a replay that read only pages inside "
            "the cache, no `-1` pad)"
        )
    if not parts:
        return (
            f"{head}: its own `as_strided` runs past one query block went wrong at no step, and it adds nothing to "
            "which way a GPU run ends."
        )
    return (
        f"{head}: {listing(parts, '; ')}. These are the analog's outcomes, not a GPU's, so it adds nothing to which "
        "way a GPU run ends."
    )
