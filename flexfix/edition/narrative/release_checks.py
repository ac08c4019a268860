"""What the recorded plugin lines of notebook 02's check-patch table claim beyond what the release survey read
(r0102 round 13, B1/B2): a line recorded at an older commit may say "vLLM 0.19.1 and earlier" or "0.21.0 and later";
the sentence says which releases the survey actually read, and on which the patch itself was run."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.checks import require
from flexfix.edition.narrative import listing, markdown

_OPEN_RANGE = re.compile(r"vLLM (\d+(?:\.\d+)+) and earlier|(\d+(?:\.\d+)+) and later")


def plugin_lines(checks: pd.DataFrame, releases: pd.DataFrame) -> str:
    """One sentence per open-ended range ("X and earlier", "X and later") in a recorded plugin line: the releases the
    survey (``releases``) read on that side, and that the patch ran only on the releases of ``checks``.  Empty where no
    line claims one."""
    require(checks, "the check-patch table", ["version"])
    require(releases, "the release survey", values=("version", "verdict"))
    from packaging.version import Version

    versions = sorted(releases["version"], key=Version)
    run_on = list(checks["version"])
    said = []
    for row in checks.to_dict("records"):
        line = " ".join(row.get("plugin_log") or row.get("plugin_stderr") or [])
        for m in _OPEN_RANGE.finditer(line):
            if m.group(1):
                v = m.group(1)
                said.append(
                    f'the line recorded for {row["version"]} says "vLLM {v} and earlier", but the survey read no '
                    f"release before {versions[0]}: what was read supports {versions[0]}-{v} only"
                )
            else:
                v = m.group(2)
                read = [x for x in versions if Version(x) >= Version(v)]
                later = f"{read[0]}-{read[-1]}" if read else "none"
                said.append(
                    f'the line recorded for {row["version"]} says "{v} and later": the survey read the copy of '
                    f"{later} from their wheels, and the patch itself was run only on {listing(run_on)}"
                )
    if not said:
        return markdown("")
    return markdown("**What the plugin lines claim beyond what was read:** " + "; ".join(said) + ".")
