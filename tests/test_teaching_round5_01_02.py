"""Teaching round 5, notebooks 01 and 02 and the edition README: a newcomer's reading of the published GPU edition at
595743f (findings A-D of r0102, and C4 of r0305). Each test ties a sentence, table or figure to the data it states."""

import pandas as pd
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas
from flexfix.edition.narrative import reproduce


def _md(stem):
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "markdown")


def _kernel():
    return schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)


# A1: whether the measured errors of two runs differ is compared, never assumed.


def test_a1_the_errors_of_two_runs_are_compared_not_assumed_to_differ():
    kernel, _ = _kernel()
    said = reproduce.faces(kernel, "here", kernel, "there", "cuda")
    assert "draw the same crosses" in said and "only the measured errors differ" not in said
    assert "so are the measured errors, equal at all" in said
    other = kernel.copy()
    other["records"] = [
        [{**r, "max_error": (r.get("max_error") or 0) * 2 or None} for r in recs] for recs in other["records"]
    ]
    said = reproduce.faces(other, "here", kernel, "there", "cuda")
    assert "the measured errors differ at" in said and "so are the measured errors" not in said
