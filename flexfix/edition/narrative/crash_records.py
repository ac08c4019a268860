"""What a kernel sweep's records show of its crash handling (notebook 04, r20 B1).

The sweep is built so that a crash ends only the child process that ran it: the cell records its outcome and a new
child goes on with the next cell (:mod:`flexfix.measure.invariance`).  Whether that happened in a given run is a
question for its records, and this module answers it from them: which configurations crashed, whether cells of
the same configuration hold outcomes after the first crash, and which configurations stop short of their plan
with no outcome at all (a crash there or a stop, the records do not say)."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from flexfix.edition.narrative import listing, plural
from flexfix.measure.outcomes import CRASHES

_ORDER = {"first": 0, "middle": 1, "last": 2}


def _cell(row) -> str:
    return f"{int(row['batch'])} {row['position']}"


def _sorted(cells: pd.DataFrame) -> pd.DataFrame:
    key = [(int(b), _ORDER.get(p, 3)) for b, p in zip(cells["batch"], cells["position"])]
    return cells.assign(_key=key).sort_values("_key", kind="stable").drop(columns="_key")


def _crashed(config: str, cells: pd.DataFrame, source: str) -> str:
    cells = _sorted(cells)
    crashed = cells[cells["outcome"].isin(CRASHES)]
    first = crashed.iloc[0]
    after = cells.iloc[list(cells.index).index(first.name) + 1 :]
    kept = f"{plural(len(after), 'cell')} after it hold{'s' if len(after) == 1 else ''} an outcome of their own"
    return (
        f"`{config}` crashed in {plural(len(crashed), 'cell')} of {len(cells)}{source}, each with its outcome "
        f"recorded (`{first['outcome']}`); its first crash was at {_cell(first)}, and "
        + (kept + " (a crash recorded, and the sweep carried on)" if len(after) else "it is the last cell recorded")
    )


def _stopped(config: str, cells: pd.DataFrame, source: str, planned: list[int], positions: int, rest) -> str:
    have = set(cells["batch"].astype(int))
    missing = [b for b in planned if b not in have]
    text = (
        f"`{config}`{source} stops after {int(max(have))} requests: its plan lists {listing(missing)} too, and "
        f"it holds no outcome for those {plural(len(missing) * positions, 'cell')}, so whether a crash or a stop "
        "ended it there, the records do not say"
    )
    if rest is not None and not rest.empty:
        later = _sorted(rest)
        first = later.iloc[0]
        if first["outcome"] in CRASHES:  # r22 D7: that recording's own line says its crashes; not said again here
            text += (
                f"; `{first['source']}` recorded those cells apart (its line below), and the first of them crashed "
                "there: this recording holds no outcome from the very cell of that crash, so it shows neither a crash "
                "recorded nor the sweep carrying on after one"
            )
        else:
            text += (
                f"; `{first['source']}` recorded those cells apart, the first of them coming to `{first['outcome']}`"
            )
    return text


def crash_handling(table: pd.DataFrame, where: str, provenance: list[dict] | None = None) -> Markdown:
    """One paragraph: what the records of ``table`` (one sweep, or several recordings with a ``source`` column and
    one provenance each, in order) show of the crash handling, from their cells only."""
    table = table if "source" in table else table.assign(source=where)
    sources = list(dict.fromkeys(table["source"]))
    params = {s: (p.get("parameters") or {}) for s, p in zip(sources, provenance or [])}
    said = []
    for source in sources:
        named = f" in `{source}`" if len(sources) > 1 else ""
        part = table[table["source"] == source]
        plan = params.get(source, {})
        positions = len(plan.get("positions") or []) or part.groupby("batch").size().max()
        for config, cells in part.groupby("config", sort=False):
            if cells["outcome"].isin(CRASHES).any():
                said.append(_crashed(config, cells, named))
            planned = [int(b) for b in plan.get("batches") or []]
            have = set(cells["batch"].astype(int))
            if planned and any(b not in have for b in planned) and config in (plan.get("configs") or [config]):
                rest = table[(table["config"] == config) & (table["source"] != source)]
                rest = rest[~rest["batch"].astype(int).isin(have)]
                said.append(_stopped(config, cells, named, planned, int(positions), rest))
    if not said:  # r22 D8: of this sweep's records only (a run can hold other sweeps, the CPU analogs say)
        return Markdown(
            f"*Crash handling, from the records of {where}:* no cell of this sweep crashed and no configuration stops "
            "short of its plan, so these records do not show the crash handling at work."
        )
    lines = "\n".join(f"* {line}." for line in said)
    return Markdown(f"*Crash handling, from the records of {where}:*\n\n{lines}")
