"""What notebook 05's engine recordings keep of each engine's setup, and what they do not (r20 B2, B3).

The engines' untimed warm-up and ``VLLM_ENABLE_V1_MULTIPROCESSING`` (which puts vLLM's engine core in the engine's own
process, where flexfix's in-process patch reaches it) are settings of this code, :mod:`flexfix.measure.engine_sweep`;
the recordings keep neither.  What they do keep, each engine's startup record, is counted here from the data."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from flexfix.edition.narrative import plural

MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"


def startup_record(records) -> dict | None:
    """An engine run's startup record (the first of ``kind`` ``startup`` among its records), or None."""
    return next((r for r in records or [] if isinstance(r, dict) and r.get("kind") == "startup"), None)


def _startups(table: pd.DataFrame) -> list[dict]:
    """Each engine's startup record (``{}`` where it has none), in the table's order."""
    return [startup_record(records) or {} for records in table["records"]]


def _kept(startups: list[dict], key: str) -> int:
    return sum(key in s for s in startups)


def engine_setup(table: pd.DataFrame) -> Markdown:
    """The engines' setup: what their startup records hold (``patched``, ``VLLM_BATCH_INVARIANT``, against each
    engine's name), whether any record holds a warm-up count or ``VLLM_ENABLE_V1_MULTIPROCESSING``, and this code's
    value of each, said as this code's, not the recordings'."""
    from flexfix.measure.engine_sweep import THROUGHPUT_WARMUPS, EngineRun

    startups = _startups(table)
    n, files = len(table), table["source"].nunique() if "source" in table else 1
    patched = sum(bool(s.get("patched")) for s in startups)
    bi_match = sum(
        str(s.get("VLLM_BATCH_INVARIANT")) == str(int(bool(bi))) for s, bi in zip(startups, table["batch_invariant"])
    )
    kept = [
        f"`patched` ({patched} of {n} true)",
        f"`VLLM_BATCH_INVARIANT` ({bi_match} of {n} as the engine's `BI=` says)",
    ]
    missing = []
    warm = _kept(startups, "warmup") + _kept(startups, "warmups")
    mp = _kept(startups, MULTIPROCESSING)
    if warm:
        kept.append(f"the warm-up count ({warm} of {n})")
    else:
        missing.append("how many untimed warm-up batches ran")
    if mp:
        kept.append(f"`{MULTIPROCESSING}` ({mp} of {n})")
    else:
        missing.append(f"`{MULTIPROCESSING}`")
    code = EngineRun().env()[MULTIPROCESSING]
    warmups = plural(THROUGHPUT_WARMUPS, "untimed warm-up batch", "untimed warm-up batches")
    text = (
        f"**What the recordings keep of each engine's setup** ({plural(n, 'engine')} in {plural(files, 'recording')}): "
        f"each engine's startup record holds {' and '.join(kept)}"
    )
    if missing:
        text += (
            f"; no record holds {' or '.join(missing)}. This code's settings (`flexfix.measure.engine_sweep`) are "
            f"{warmups} before each case's timed repetitions, and `{MULTIPROCESSING}={code}` in every engine's "
            "environment (vLLM's engine core in the engine's own process, where the in-process patch reaches it); it "
            "starts each engine in its own child process, which no record keeps either. "
            "The recordings ran on the commits listed above; that they ran with these settings is what this code "
            "does, not something their records show"
        )
    return Markdown(text + ".")
