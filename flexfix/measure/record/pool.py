"""Children side by side: each job starts its child, the table of finished rows is saved after each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from flexfix.measure import children
from flexfix.measure.outcomes import Outcome

__all__ = ["outcome_row", "no_save", "pooled"]


def outcome_row(outcome: Outcome, **keys) -> dict:
    return {
        **keys,
        "status": outcome.status,
        "detail": outcome.detail,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "seconds": outcome.seconds,
        "records": outcome.records,
        "stderr_tail": outcome.stderr_tail[-6:],
        **outcome.extra,
    }


def no_save(table: pd.DataFrame) -> None:
    pass


def pooled(
    jobs: Sequence[Callable[[Any], tuple[dict, str]]],
    workers: int,
    progress: Callable[[str], None],
    save: Callable[[pd.DataFrame], None],
) -> pd.DataFrame:
    """Run ``jobs`` (each ``job(stop) -> (row, progress line)``, starting its child under the pool's stop
    event) ``workers`` at a time (:func:`flexfix.measure.children.run_pool`); ``save`` gets the rows finished so far,
    in job order, after each.  An interrupt kills the running children and keeps what ``save`` got."""
    done: dict[int, dict] = {}

    def finished(index: int, result: tuple[dict, str]) -> None:
        done[index], line = result
        progress(line)
        save(pd.DataFrame([done[i] for i in sorted(done)]))

    children.run_pool(jobs, workers, finished)
    return pd.DataFrame([done[i] for i in sorted(done)])
