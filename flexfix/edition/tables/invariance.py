"""Batch invariance (notebook 04): the kernel-level needle grid and the engines' verdicts."""

from __future__ import annotations

import pandas as pd

from flexfix.measure.outcomes import CRASHES

__all__ = [
    "POSITION_MARKS",
    "POSITION_KEY",
    "position_counts",
    "configs_of",
    "kernel_grid",
    "engine_label",
    "engine_grid",
    "engine_verdicts",
    "every_request_table",
]


def _kernel_category(cells: pd.DataFrame) -> str:
    if cells["outcome"].isin(CRASHES).any():
        return "crash"
    if (~cells["outcome"].isin(["ok", "wrong_result"])).any():
        return "error"
    if (cells["outcome"] == "wrong_result").any():
        return "wrong result"
    return "bitwise equal" if cells["bitwise_equal"].astype(bool).all() else "differs"


# The text of a kernel-grid cell: how many of its needle positions came to each outcome, with these marks.
POSITION_MARKS = {"bitwise equal": "=", "moved": "~", "wrong result": "w", "error": "E", "crash": "X"}
POSITION_KEY = "cell text: positions per outcome\n= bitwise equal, ~ moved,\nw wrong result, E error, X crash"


def _position_outcome(row) -> str:
    if row["outcome"] in CRASHES:
        return "crash"
    if row["outcome"] == "wrong_result":
        return "wrong result"
    if row["outcome"] != "ok":
        return "error"
    return "bitwise equal" if bool(row["bitwise_equal"]) else "moved"


def position_counts(cells: pd.DataFrame) -> str:
    """``"1=\n2~"``: how many of a grid cell's needle positions had each outcome (:data:`POSITION_MARKS`), one
    outcome a line."""
    kinds = [_position_outcome(r) for _, r in cells.iterrows()]
    return "\n".join(f"{kinds.count(k)}{mark}" for k, mark in POSITION_MARKS.items() if k in kinds)


def kernel_grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Configuration x batch size: the worst category over the needle positions (a crash, an
    error building or running the kernel, a wrong result, a bitwise difference), and how many
    positions came to each outcome (``"1=\n2E"``: :func:`position_counts`), so that a mixed cell hides nothing its
    colour does not show.  A cell with no record is "not run".  ``notes.attrs["key"]`` says how to read the notes
    (:func:`flexfix.edition.plots.category_heatmap` writes it under its legend)."""
    groups = table.groupby(["config", "batch"], sort=False)
    cat = groups.apply(_kernel_category, include_groups=False).unstack("batch").fillna("not run")
    note = groups.apply(position_counts, include_groups=False).unstack("batch").fillna("")
    order = list(dict.fromkeys(table["config"]))
    cat, note = cat.loc[order], note.loc[order]
    cat.columns.name = note.columns.name = "batch size"
    note.attrs["key"] = POSITION_KEY
    return cat, note


def configs_of(table: pd.DataFrame, configs) -> pd.DataFrame:
    """The cells of ``configs`` (configurations or their names) in a sweep's table."""
    names = [getattr(c, "name", c) for c in configs]
    return table[table["config"].isin(names)].reset_index(drop=True)


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
