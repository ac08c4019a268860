"""Each notebook's wall time, as ``flexfix notebooks`` records it: ``notebook_times-<device>.json`` with provenance.

:func:`check_times` says, before any notebook runs, why the file could not be written at the end (the folder is
probed with a real write); :func:`record_times` writes it, never replacing a file that holds notebooks the run
did not execute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexfix.edition import params

__all__ = ["TIMES_NAME", "check_times", "record_times"]

TIMES_NAME = "notebook_times"


def check_times(folder: str | os.PathLike) -> list[str]:
    """Why the wall times could not be written into ``folder`` at the end of a run (empty: they can): the folder
    is probed with a real write, and neither device's times file may be a folder."""
    from flexfix.edition import results

    try:
        params.writable_folder("--times", folder)
    except ValueError as e:
        return [str(e)]
    found = []
    for device in ("cpu", "cuda"):
        for partial in (False, True):
            path = results.results_path(folder, TIMES_NAME, device, partial=partial)
            if path.exists() and not path.is_file():
                found.append(f"--times: {path} is not a file: the wall times could not be written")
    return found


def record_times(
    folder: str | os.PathLike, rows: Sequence[dict[str, Any]], device: str, parameters: dict[str, Any]
) -> tuple[Path, str]:
    """``rows`` (one per notebook: ``notebook``, ``seconds``, ``ok``) as a results file with provenance:
    ``(path, note)``.

    The file of a run is replaced by the next run's, unless that one left out notebooks the file holds (a run of
    one notebook does not erase the others' times): then the file is kept, this run's times go to the partial
    file next to it, and ``note`` says so."""
    from flexfix.edition import results

    final = results.results_path(folder, TIMES_NAME, device)
    try:
        old, _ = results.read_results(final, columns=["notebook"])
        left_out = [str(n) for n in old["notebook"] if str(n) not in {row["notebook"] for row in rows}]
    except results.ResultsError:
        left_out = []  # no file, or one that is not a times table: replaced
    if left_out:
        path = results.write_results(folder, TIMES_NAME, rows, device, parameters, partial=True, replace=True)
        return path, f"{final} holds {', '.join(left_out)}, which this run did not execute: kept as it was"
    return results.write_results(folder, TIMES_NAME, rows, device, parameters, replace=True), ""
