"""What a sentence or a figure needs from a table, checked before it says anything.

A recorded file that lost a column, or whose values were nulled, must not be described as its opposite ("not
bitwise equal even alone ... moved by up to 0", "all 5 runs correct at every step" about zero steps).  Every
function of :mod:`flexfix.edition.narrative` calls these first, on the exact columns and values it states;
:class:`DataError` names the table, the column and how many rows lack it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

__all__ = ["DataError", "require", "require_steps", "require_numbers", "is_missing"]


class DataError(ValueError):
    """A table that lacks what a sentence or a figure about it needs: nothing is said."""


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA (a list, even empty, is a value)."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def require(
    table: Any,
    what: str,
    columns: Sequence[str] = (),
    *,
    values: Sequence[str] = (),
    where: Callable[[pd.DataFrame], Any] | None = None,
    condition: str = "",
) -> pd.DataFrame:
    """``table`` if it is a table with rows, holding ``columns``, and with a value (not null) in each of ``values``
    in every row (in the rows ``where(table)`` selects, described by ``condition``); otherwise :class:`DataError`."""
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{what}: expected a table, got {type(table).__name__}")
    if table.empty:
        raise DataError(f"{what}: the table has no rows: there is nothing to say about it")
    missing = [c for c in (*columns, *values) if c not in table.columns]
    if missing:
        raise DataError(
            f"{what}: the table has no column {', '.join(repr(c) for c in dict.fromkeys(missing))} "
            "(not the table expected, or it lost that column): refusing to describe it"
        )
    rows = table if where is None else table[pd.Series(where(table), index=table.index).fillna(False).astype(bool)]
    for column in values:
        lacking = [i for i, v in zip(range(len(rows)), rows[column]) if is_missing(v)]
        if lacking:
            scope = f" of the rows {condition}" if condition else ""
            raise DataError(
                f"{what}: {column!r} has no value in {len(lacking)} of {len(rows)} rows{scope} (first: row "
                f"{rows.index[lacking[0]]!r}): refusing to state what the table does not hold"
            )
    return table


def require_steps(
    table: pd.DataFrame, what: str, column: str, keys: Sequence[str], *, nonempty: bool = True
) -> list[list[dict]]:
    """Each row's ``column`` as a list of dicts holding ``keys`` (non-empty with ``nonempty``); otherwise
    :class:`DataError` naming the row: a run of zero steps is not "correct at every step"."""
    out = []
    for label, steps in zip(table.index, table[column]):
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise DataError(f"{what}: {column!r} of row {label!r} is not a list of records: refusing to describe it")
        if nonempty and not steps:
            raise DataError(f"{what}: {column!r} of row {label!r} holds no step: nothing was measured there")
        for i, step in enumerate(steps):
            lacking = [k for k in keys if k not in step or is_missing(step[k])]
            if lacking:
                raise DataError(
                    f"{what}: step {i} of row {label!r} has no {', '.join(map(repr, lacking))}: refusing to describe it"
                )
        out.append(steps)
    return out


def require_numbers(values: Any, what: str, name: str) -> list[float]:
    """``values`` as finite floats; :class:`DataError` for a missing, infinite or non-numeric one, or none at all."""
    found = list(values)
    if not found:
        raise DataError(f"{what}: no {name} to state")
    out = []
    for v in found:
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(v, bool) or not math.isfinite(number):
            raise DataError(f"{what}: {name} {v!r} is not a finite number: refusing to state it")
        out.append(number)
    return out
