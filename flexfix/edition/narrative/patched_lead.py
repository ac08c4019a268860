"""The opening of notebook 02's section "The engine, patched" (r0102 round 16, D9): where the evidence for the fix is
and, in a word, what it says, before the section's own runs (which show only that the patched engine starts and
completes its batches): the recorded every-request check of the patched engines, and, where this edition wrote one,
notebook 01's live rerun. The counts are said once, under that check's tables (r0102 round 22, D12)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import markdown


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


def lead(every: pd.DataFrame, live: tuple[pd.DataFrame, dict] | None = None) -> str:
    """One paragraph: where the evidence for the fix is, with the recorded every-request verdict on the patched
    engines (``every``: notebook 01's recorded check) in a word, and whether this edition's live rerun (``live``, from
    ``workarounds.live_control``; None where there is none) adds to it. The counts, the recordings and the positive
    control are said once, under the subsection's tables (r0102 round 22, D12: they were said here too, before the
    section's own runs)."""
    differ, total, _ = _recorded_counts(every)
    if not total:
        verdict = "the recorded check holds no patched engine: nothing shows the fix there"
    elif differ:
        verdict = "the patched engines did **not** answer every request as alone"
    else:
        verdict = "the patched engines answered every request exactly as alone"
    rerun = ""
    if live is not None and not live[0].empty:
        rerun = f", beside this edition's live rerun of notebook 01 ({live[1].get('device_name')})"
    return markdown(
        "**Where the evidence for the fix is:** not in this section's first runs, which show only that the patched "
        'engine starts and completes its batches, but in the every-request check of the subsection "Every request, on '
        f'the patched engine" below{rerun}. In its recording {verdict}; the counts, the recordings and the positive '
        "control follow its tables."
    )


def from_files(data_dir, results_dir, device: str) -> str:
    """:func:`lead` from notebook 01's recorded every-request check under ``data_dir`` and, on a GPU, its live rerun
    under ``results_dir`` (where this edition wrote one)."""
    from flexfix.edition import schemas
    from flexfix.edition.narrative.workarounds import live_control
    from flexfix.measure import record

    every, _ = schemas.recorded(data_dir, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    return lead(every, live_control(results_dir, device))
