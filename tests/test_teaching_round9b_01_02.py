"""Round 9b (r0102 D4, D5): notebook 01 leads with its conclusions. The section "Crash or wrong answer: what decides"
opens with a line generated from the placement runs, and the one-table section says what the table shows before it."""

import json
from pathlib import Path

import pandas as pd
import pytest

from flexfix.edition.narrative import cause_lead
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.edition.tables.outcomes import ChildLog

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _cells():
    nb = json.loads((ROOT / "notebooks" / "01_reproduce_ima.ipynb").read_text())
    return ["".join(c["source"]) for c in nb["cells"]]


def test_d5_section_opens_with_the_answer():
    cells = _cells()
    i = next(k for k, s in enumerate(cells) if s.startswith("## Crash or wrong answer: what decides"))
    assert "The answer first" in cells[i]
    assert "cause_lead.answer(cause_runs, cause_where)" in cells[i + 1]
    assert cells[i + 2].startswith("**The question.**")


def test_d5_answer_states_the_recorded_counts():
    runs, _ = cause_tables.recorded(DATA)
    table = cause_tables.placement_table(runs)
    said = cause_lead.answer(runs, "recorded").data
    for place in ("guarded", "fenced"):
        row = table.loc[f"as_strided, batch 48, cache {place}"]
        n = int(row["runs"])
        if int(row["wrong_result"]):
            assert f"`{place}` (" in said and f"{int(row['wrong_result'])} of {n} silently wrong" in said
        if int(row["illegal_memory_access"]):
            assert f"{int(row['illegal_memory_access'])} of {n} crashed" in said
    g = table.loc["as_strided, batch 48, cache guarded"]
    f = table.loc["as_strided, batch 48, cache fenced"]
    split = g["wrong_result"] == g["runs"] and f["illegal_memory_access"] == f["runs"]
    assert ("the memory in front decides" in said) == bool(split)


def test_d5_answer_when_placement_does_not_split():
    runs, _ = cause_tables.recorded(DATA)
    fenced = (runs["copy"] == "as_strided") & runs.get("placement", pd.Series("", index=runs.index)).eq("fenced")
    if not fenced.any():
        pytest.skip("no fenced column named placement in the recorded runs")
    flipped = runs.copy()
    flipped.loc[fenced, "status"] = "wrong_result"
    said = cause_lead.answer(flipped, "x").data
    assert "did not decide" in said and "the memory in front decides" not in said


def test_d4_one_table_leads_with_what_it_shows():
    cells = _cells()
    i = next(k for k, s in enumerate(cells) if s.startswith("## The crash scenarios in one table"))
    assert "**What it shows.**" in cells[i] and "recorded_in" not in cells[i]
    assert "tables.outcome_table(" in cells[i + 1]
    assert cells[i + 2].startswith("*Where each line comes from:*") and "recorded_in" in cells[i + 2]


def test_d4_child_log_says_why_a_process_each():
    log = ChildLog()
    log("seed 0: ok (exit 0, 2.0 s)")
    said = log.summary("the runs")
    assert "a crash ends only its own run" in said and "child process of its own" not in said
