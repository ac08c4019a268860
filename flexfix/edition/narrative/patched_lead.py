"""The opening of notebook 02's section "The engine, patched" (r0102 round 16, D9): where the evidence for the fix is
and what it says, counted from the files, before the section's own runs (which show only that the patched engine
starts and completes its batches): the recorded every-request check of the patched engines, and, where this edition
wrote one, notebook 01's live rerun, counted in the batches vLLM's dispatcher runs with a FULL graph."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown


def _recorded_counts(every: pd.DataFrame) -> tuple[int, int, list[int]]:
    """(requests that differed, requests checked, batches) over the patched engines of ``every``."""
    from flexfix.edition.narrative.workaround_control import _batches, _differ
    from flexfix.edition.tables.outcomes import every_request_engine

    differ = total = 0
    batches: set[int] = set()
    for run in every.itertuples():
        if "patched" not in every_request_engine(pd.Series(run._asdict())):
            continue
        for rec in _batches(run):
            differ, total = differ + _differ(rec), total + int(rec["requests"])
            batches.add(int(rec["requests"]))
    return differ, total, sorted(batches)


def _live_counts(live: tuple[pd.DataFrame, dict]) -> tuple[int, int]:
    """(requests that differed, requests checked) on the live rerun's patched engines, in FULL-graph batches only."""
    from flexfix.edition.narrative.workaround_control import _differ, _full_split

    every = live[0]
    patched = every[~every["engine"].astype(str).str.contains("stock")]
    full = [rec for r in patched.itertuples() for rec in _full_split(r)[0]]
    return sum(_differ(x) for x in full), sum(int(x["requests"]) for x in full)


def _split_provs(every: pd.DataFrame, provs, names) -> tuple[list, list]:
    """(provenances of the files holding a patched engine, of those holding a stock one) (r0102 round 17, A3):
    ``names`` the files in the order of ``provs`` (``every``'s ``source`` column names each row's file); without
    them, or without a ``source`` column, every file is cited for both."""
    from flexfix.edition.tables.outcomes import every_request_engine

    provs = [provs] if isinstance(provs, dict) else list(provs)
    if names is None or "source" not in every.columns:
        return provs, []
    by_name = dict(zip(names, provs))
    engines = [(str(r.source), every_request_engine(pd.Series(r._asdict()))) for r in every.itertuples()]
    patched = [by_name[n] for n in dict.fromkeys(n for n, e in engines if "patched" in e) if n in by_name]
    stock = [by_name[n] for n in dict.fromkeys(n for n, e in engines if "patched" not in e) if n in by_name]
    return patched, [p for p in stock if p not in patched]


def lead(every: pd.DataFrame, provs, live: tuple[pd.DataFrame, dict] | None, names=None) -> str:
    """One paragraph: the recorded every-request verdict on the patched engines (``every``, ``provs``: notebook 01's
    recorded check, from the files ``names``), citing only the files that hold the patched engines and the stock
    control's file apart, then the live rerun's (``live``, from ``workarounds.live_control``; None where there is
    none)."""
    from flexfix.edition.tables.provenance import recorded_from

    differ, total, batches = _recorded_counts(every)
    patched_provs, stock_provs = _split_provs(every, provs, names)
    cited = recorded_from(patched_provs) if patched_provs else recorded_from(provs)
    if not total:
        verdict = f"the recorded check holds no patched engine ({recorded_from(provs)}): nothing shows the fix there"
        stock_provs = []
    elif differ:
        verdict = (
            f"the patched engines answered {differ} of {total} requests of the batches of {listing(batches)} "
            f"otherwise than alone ({cited}): the fix did **not** hold on every request"
        )
    else:
        verdict = (
            f"the patched engines answered all {total} requests of the batches of {listing(batches)} exactly as "
            f"alone ({cited})"
        )
    if stock_provs:
        verdict += (
            "; the stock engine of the same check, its positive control, is a recording of its own "
            f"({recorded_from(stock_provs)})"
        )
    said = [verdict]
    if live is not None and not live[0].empty:
        d, t = _live_counts(live)
        gpu = live[1].get("device_name")
        said.append(
            f"in this edition's live rerun of notebook 01 ({gpu}), {d} of {t} requests differed on the patched "
            "engine in the batches that replay a FULL graph"
            if t
            else f"this edition's live rerun of notebook 01 ({gpu}) ran no patched batch that replays a FULL graph"
        )
    return markdown(
        "**Where the evidence for the fix is, and its verdict:** not in this section's first runs, which show only "
        "that the patched engine starts and completes its batches, but in the every-request check of the subsection "
        '"Every request, on the patched engine" below: ' + "; ".join(said) + "."
    )


def from_files(data_dir, results_dir, device: str) -> str:
    """:func:`lead` from notebook 01's recorded every-request check under ``data_dir`` and, on a GPU, its live rerun
    under ``results_dir`` (where this edition wrote one)."""
    from flexfix.edition import schemas
    from flexfix.edition.narrative.workarounds import live_control
    from flexfix.measure import record

    every, provs = schemas.recorded(data_dir, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    return lead(every, provs, live_control(results_dir, device), record.RECORDED_EVERY_REQUEST)
