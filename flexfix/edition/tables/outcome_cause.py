"""Crash or wrong answer (notebook 01): what the misread cells hold, and the runs with the KV cache placed by hand.

:func:`misread_summary` reads the table of :func:`flexfix.measure.outcome_cause.reads_table` (CPU, no kernel);
:func:`placement_table` the runs of :func:`flexfix.measure.outcome_cause.run_scenarios` (``outcome_cause-cuda.json``).
"""

from __future__ import annotations

import pandas as pd

from flexfix.edition import schemas
from flexfix.edition.checks import is_missing, require

__all__ = [
    "READ_COLUMNS",
    "RUN_COLUMNS",
    "SCENARIO_KEYS",
    "PLACEMENT_RUNS",
    "recorded",
    "misread_summary",
    "placement_table",
    "default_addresses",
    "scenario_label",
    "OWN_READ_FAULT",
    "run_outcomes",
    "LISTED",
    "AS_PREDICTED",
    "OWN_READ",
    "NO_PAD_READ",
    "NONE_REPLAYED",
]

READ_COLUMNS = ("copy", "seed", "step", "own", "other_page", "pad", "never_written", "out_of_range", "cells_read")
READ_VALUES = (*READ_COLUMNS, "missed", "front_bytes_read")
RUN_COLUMNS = (
    "copy",
    "placement",
    "v_placement",
    "touch",
    "batch",
    "seed",
    "status",
    "front_k_mapped",
    "front_v_mapped",
    "predicted",
    "touch_result",
)
SCENARIO_KEYS = ["copy", "batch", "placement", "v_placement", "touch"]

# The outcome of a run whose own read in front of a cache faulted (``touch_result`` "faulted"): its process died in
# that read, before the first replay, so its status (an illegal memory access) is not the replay's outcome.
OWN_READ_FAULT = "faulted in its own read, before the replay"

# The placement table's columns and words (r0102 round 14, D2: "as predicted" read as the theory's prediction, and
# "no read in front" was confused with the column of the runs' own reads)
LISTED = "listed in front of K and V"
AS_PREDICTED = "as the driver's list predicts"
OWN_READ = "own read in front"
NO_PAD_READ = "no pad read (control)"
NONE_REPLAYED = "none replayed"


def run_outcomes(runs: pd.DataFrame) -> pd.Series:
    """Each run's outcome as the edition counts it: its status, or :data:`OWN_READ_FAULT` where its own read in
    front of a cache faulted before any replay ran."""
    own = runs["touch_result"].eq("faulted") if "touch_result" in runs else pd.Series(False, index=runs.index)
    return runs["status"].where(~own, OWN_READ_FAULT)


# What notebook 01 needs of a recorded placement file: the scenario and outcome of every run (the driver's answers
# and a run's own read in front may be null: a control reads nothing in front, a run that faulted early has none).
def _pairs_agree(record) -> str | None:
    """A run read in front of a cache (``touch``) exactly when it says how that read went (``touch_result``); the
    driver gave the size of an allocation in front of K (of V) exactly when it listed one there."""
    for a, b in (("touch", "touch_result"), ("front_k_size", "front_k_mapped"), ("front_v_size", "front_v_mapped")):
        has_a = not is_missing(record.get(a))
        has_b = not is_missing(record.get(b)) and (record.get(b) is not False if b.endswith("_mapped") else True)
        if has_a != has_b:
            return f"{a} and {b} disagree ({record.get(a)!r}, {record.get(b)!r})"
    return None


PLACEMENT_RUNS = schemas.Schema(
    "the crash-or-wrong-answer placements",
    values=(
        *("copy", "placement", "v_placement", "batch", "seed", "status", "front_k_mapped", "front_v_mapped"),
        *("k_address", "v_address", "predicted", "probe_moment", "pads_read"),
    ),
    columns=(*RUN_COLUMNS, "touch", "touch_result", "front_k_size", "front_v_size"),
    rules=(_pairs_agree,),
)


def recorded(data_dir, name: str = "outcome_cause") -> tuple[pd.DataFrame, object]:
    """The recorded placement runs under ``data_dir`` and their provenance, read through :data:`PLACEMENT_RUNS`."""
    return schemas.recorded(data_dir, name, PLACEMENT_RUNS)


def misread_summary(reads: pd.DataFrame) -> pd.DataFrame:
    """Per copy and replay step, summed over the seeds: what rows ``g >= 1`` read through the capture's strides
    (own pages, other valid pages, ``-1`` pads, never-written cells, anything else), the own pages they missed, in how
    many seeds the replay read a pad, and how far in front of the cache one pad makes the kernel load (bytes)."""
    require(reads, "the misread cells", values=READ_VALUES)
    replays = reads[reads["step"] != "capture"]
    sums = ["cells_read", "own", "other_page", "pad", "never_written", "out_of_range", "missed"]
    out = replays.groupby(["copy", "step"], sort=False)[sums].sum()
    out["seeds"] = replays.groupby(["copy", "step"], sort=False)["seed"].nunique()
    out["seeds with a pad"] = replays[replays["pad"] > 0].groupby(["copy", "step"], sort=False)["seed"].nunique()
    out["seeds with a pad"] = out["seeds with a pad"].fillna(0).astype(int)
    # per pad, not summed (r0102 round 20, D9): the column's name says so
    out["front_bytes_per_pad"] = replays.groupby(["copy", "step"], sort=False)["front_bytes_read"].max()
    return out


def scenario_label(copy: str, batch: int, placement: str, v_placement: str | None = None, touch=None) -> str:
    """``as_strided, batch 48, cache fenced``; ``..., K guarded, V fenced``; ``..., then read in front of V``."""
    v_placement = v_placement or placement
    where = f"cache {placement}" if v_placement == placement else f"K {placement}, V {v_placement}"
    read = f", then read in front of {touch.upper()}" if isinstance(touch, str) and touch else ""
    return f"{copy}, batch {batch}, {where}{read}"


def placement_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per scenario (copy, batch, placement): runs, how many ended in each outcome, in how many the driver
    listed an allocation in front of both caches just before the first replay, and in how many the outcome was
    the one :func:`~flexfix.measure.outcome_cause.predicted` from that (the controls read nothing in front); where a
    run read the bytes in front of a cache with a kernel of its own, whether that read went through or faulted.  A run
    whose own read faulted is counted under :data:`OWN_READ_FAULT`, not as an illegal memory access of the replay,
    and is left out of :data:`AS_PREDICTED` (it never replayed)."""
    require(runs, "the placement runs", RUN_COLUMNS, values=("copy", "placement", "batch", "seed", "status"))
    rows = []
    for key, group in runs.groupby(SCENARIO_KEYS, sort=False, dropna=False):
        mapped = [k is True and v is True for k, v in zip(group["front_k_mapped"], group["front_v_mapped"])]
        asked = [k is not None and v is not None for k, v in zip(group["front_k_mapped"], group["front_v_mapped"])]
        outcome = run_outcomes(group)
        replayed = outcome != OWN_READ_FAULT  # a run that died in its own read never replayed: nothing to predict
        crash_or_wrong = group["predicted"].isin(["illegal_memory_access", "wrong_result"]) & replayed
        row = {"scenario": scenario_label(*key), "runs": len(group)}
        row |= {s: int((outcome == s).sum()) for s in ("ok", "wrong_result", "illegal_memory_access", OWN_READ_FAULT)}
        row["other"] = len(group) - sum(row[s] for s in ("ok", "wrong_result", "illegal_memory_access", OWN_READ_FAULT))
        row[LISTED] = f"{sum(mapped)} of {sum(asked)}"
        row[AS_PREDICTED] = (
            f"{int((group['status'] == group['predicted'])[crash_or_wrong].sum())} of {int(crash_or_wrong.sum())}"
            if crash_or_wrong.any()
            else (NONE_REPLAYED if not replayed.any() else NO_PAD_READ)
        )
        touched = group["touch_result"].dropna()
        row[OWN_READ] = ", ".join(f"{n} {r}" for r, n in touched.value_counts().items()) if len(touched) else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("scenario")


def default_addresses(runs: pd.DataFrame) -> pd.DataFrame:
    """Where the caches sat in the plain ``default`` placement runs (``as_strided`` past one query block, both caches
    where PyTorch put them, no read of their own): per run, the recorded ``k_address`` and ``v_address``, the gap
    ``k_address - v_address`` in bytes, and the size of the range the driver listed in front of K just before the
    first replay (``front_k_size``; "none listed" where it listed none)."""
    require(runs, "the placement runs", RUN_COLUMNS, values=("copy", "placement", "batch", "seed", "status"))
    plain = runs[
        (runs["copy"] == "as_strided")
        & (runs["batch"] > 16)
        & (runs["placement"] == "default")
        & (runs["v_placement"] == "default")
        & runs["touch"].isna()
    ]
    rows = []
    for _, r in plain.iterrows():
        k, v, size = (r.get(c) for c in ("k_address", "v_address", "front_k_size"))
        known = not (is_missing(k) or is_missing(v))
        rows.append(
            {
                "seed": int(r["seed"]),
                "k_address": hex(int(k)) if known else "not recorded",
                "v_address": hex(int(v)) if known else "not recorded",
                "k_address - v_address (bytes)": f"{int(k) - int(v):,}" if known else "not recorded",
                "range listed in front of K (bytes)": "none listed" if is_missing(size) else f"{int(size):,}",
                "outcome": r["status"],
            }
        )
    cols = ["seed", "k_address", "v_address", "k_address - v_address (bytes)", "range listed in front of K (bytes)"]
    return pd.DataFrame(rows, columns=[*cols, "outcome"]).set_index("seed")
