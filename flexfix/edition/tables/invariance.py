"""Batch invariance (notebook 04): the kernel-level needle grid and the engines' verdicts."""

from __future__ import annotations

import pandas as pd

from flexfix.measure.outcomes import CRASHES

__all__ = ["kernel_grid", "engine_label", "engine_grid", "engine_verdicts", "every_request_table"]


def _kernel_category(cells: pd.DataFrame) -> str:
    if cells["outcome"].isin(CRASHES).any():
        return "crash"
    if (~cells["outcome"].isin(["ok", "wrong_result"])).any():
        return "error"
    if (cells["outcome"] == "wrong_result").any():
        return "wrong result"
    return "bitwise equal" if cells["bitwise_equal"].astype(bool).all() else "differs"


def kernel_grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Configuration x batch size: the worst category over the needle positions (a crash, an
    error building or running the kernel, a wrong result, a bitwise difference), and how many
    positions were bitwise equal (``"2/3"``).  A cell with no record is "not run"."""
    groups = table.groupby(["config", "batch"], sort=False)
    cat = groups.apply(_kernel_category, include_groups=False).unstack("batch").fillna("not run")
    note = (
        groups.apply(
            lambda c: f"{int(c['bitwise_equal'].fillna(False).astype(bool).sum())}/{len(c)}", include_groups=False
        )
        .unstack("batch")
        .fillna("")
    )
    order = list(dict.fromkeys(table["config"]))
    cat, note = cat.loc[order], note.loc[order]
    cat.columns.name = note.columns.name = "batch size"
    return cat, note


def _engine_category(r) -> str:
    if not r["tokens_equal"]:
        return "tokens differ"
    return "bitwise equal" if r["logprobs_bitwise_equal"] else "differs"


def engine_label(r) -> str:
    return f"{r['model']}, BI={int(r['batch_invariant'])}, {r['graphs']}" + ("" if r["patched"] else ", stock")


def engine_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """(engine, sampling) x N: bitwise equal / differs (same tokens) / tokens differ; an N the
    engine never reached is "crash" if the engine died, else "not run"."""
    rows = rows.assign(
        label=[f"{engine_label(r)}, {r['sampling']}" for _, r in rows.iterrows()],
        category=[_engine_category(r) for _, r in rows.iterrows()],
    )
    grid = rows.pivot(index="label", columns="requests", values="category")
    status = rows.groupby("label")["engine_status"].first()
    for label in grid.index:
        grid.loc[label] = grid.loc[label].fillna("not run" if status[label] == "ok" else "crash")
    grid.columns.name = "concurrent requests"
    return grid.loc[list(dict.fromkeys(rows["label"]))]


def engine_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per engine and sampling: at how many N the needle was bitwise equal, the largest logprob
    difference, and the fewest distinct tokens it produced (a degenerate stream would be 1)."""
    rows = rows.assign(engine=[engine_label(r) for _, r in rows.iterrows()])
    out = rows.groupby(["engine", "sampling"], sort=False).agg(
        batch_sizes=("requests", "size"),
        bitwise_equal=("logprobs_bitwise_equal", "sum"),
        tokens_equal=("tokens_equal", "sum"),
        max_abs_logprob_diff=("max_abs_logprob_diff", "max"),
        fewest_distinct_tokens=("distinct_tokens", "min"),
    )
    out["invariant"] = out["bitwise_equal"] == out["batch_sizes"]
    return out


def every_request_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Each request of a batch against itself alone: which differ, and in which query block."""
    out = rows.assign(engine=[engine_label(r) for _, r in rows.iterrows()])
    out["requests_with_other_tokens"] = out["tokens_differ"].map(len)
    out["requests_with_other_logprobs"] = out["logprobs_differ"].map(len)
    out["their_query_blocks"] = out["logprobs_differ"].map(lambda ix: sorted({i // 16 for i in ix}))
    return out[
        [
            "engine",
            "requests",
            "requests_with_other_tokens",
            "requests_with_other_logprobs",
            "their_query_blocks",
            "max_abs_logprob_diff",
            "engine_status",
        ]
    ]
