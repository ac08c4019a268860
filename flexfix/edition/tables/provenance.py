"""Where a recorded result comes from, in one line: the machine and versions its provenance names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["provenance_line", "recorded_where", "recorded_from", "recorded_on", "notebook_times_line"]


def provenance_line(prov: Mapping[str, Any]) -> str:
    driver = f" (driver {prov['driver']})" if prov.get("driver") else ""
    return (
        f"recorded on {prov['device_name']}{driver}, torch {prov['torch']}, "
        f"vLLM {prov.get('vllm') or 'not recorded'}, commit {str(prov['git_commit'])[:10]}, {prov['date']}"
    )


def recorded_where(provs) -> str:
    """ "the recorded run on <GPU>" for one provenance or a list of them (the devices they name), so a
    sentence about recorded results names the machine the file says, not the one we remember."""
    provs = [provs] if isinstance(provs, dict) else list(provs)
    names = sorted({str(p.get("device_name")) for p in provs})
    runs = "run" if len(provs) == 1 else "runs"
    return f"the recorded {runs} on {' and '.join(names)}"


def recorded_on(prov: Mapping[str, Any]) -> str:
    """ "recorded on <machine>, commit <c>, <date>": one file, in the short form the edition index counts as a
    recording (``flexfix.edition.evidence``, r0102 round 22, A1)."""
    return f"recorded on {prov.get('device_name')}, commit {str(prov.get('git_commit'))[:10]}, {prov.get('date')}"


def recorded_from(provs) -> str:
    """ "recorded on <machine>, commit <c>, <date>" for one provenance or a list of them (r0102 round 16, B1):
    each distinct file's machine (GPU or CPU), commit and date, so a line that quotes a recording names where it
    comes from even where no table of it is shown; each in the form the edition index counts (round 22, A1)."""
    provs = [provs] if isinstance(provs, dict) else list(provs)
    return "; ".join(dict.fromkeys(recorded_on(p) for p in provs))


def notebook_times_line(times: pd.DataFrame) -> str:
    """``"403 s in all: 01 147 s, 02 68 s, ..."`` from a ``notebook_times`` results file (each rounded to seconds)."""
    parts = ", ".join(f"{str(r.notebook)[:2]} {r.seconds:.0f} s" for r in times.itertuples())
    return f"{times.seconds.sum():.0f} s in all: {parts}"
