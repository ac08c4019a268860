"""flexfix.edition.narrative writes the notebooks' measured statements from the results: on the recorded GPU data
the text carries the numbers of those tables, and on other
outcomes it says other things (it is computed, not canned)."""

import pandas as pd
import pytest

from flexfix.edition import results, tables
from flexfix.edition.narrative import layouts, listing, reproduce, span
from flexfix.measure import engine_sweep, record

DATA = "data"


def run(copy, status, steps):
    return {"copy": copy, "batch": 48, "status": status, "records": steps}


def step(outcome, err):
    return {"outcome": outcome, "max_error": err}


def test_helpers():
    assert span([1.0, 2.5]) == "1.00–2.50" and span([3.0, 3.001]) == "3.00" and span([]) == "none"
    assert listing([]) == "" and listing(["a"]) == "a" and listing("abc") == "a, b and c"


def test_kernel_outcomes_follow_the_table_and_name_both_faces_of_the_bug():
    crash = pd.DataFrame([run("as_strided", "illegal_memory_access", [step("ok", 3e-3)])] * 2)
    wrong = pd.DataFrame([run("as_strided", "wrong_result", [step("ok", 3e-3), step("wrong_result", 1.5)])])
    said_crash, said_wrong = reproduce.kernel_outcomes(crash, "x"), reproduce.kernel_outcomes(wrong, "x")
    assert "2 of 2 runs went wrong (2 with an illegal memory access), first at replay 1" in said_crash
    assert "1 with a silently wrong result" in said_wrong and "off by 1.5" in said_wrong
    assert reproduce.BOTH_OUTCOMES in said_crash and reproduce.BOTH_OUTCOMES in said_wrong


def test_recorded_kernel_runs_are_told_as_recorded():
    table, _ = results.recorded(DATA, "ima_kernel")
    said = reproduce.kernel_outcomes(table, "the H100")
    n = int((table["copy"] == "as_strided").sum())
    crashed = int(((table["copy"] == "as_strided") & (table.status == "illegal_memory_access")).sum())
    assert f"{crashed} with an illegal memory access" in said and f"of {n} runs went wrong" in said


def test_threshold_and_every_request_from_the_recorded_engines():
    engines, _ = results.recorded_all(DATA, record.RECORDED_ENGINE_TABLES)
    threshold = tables.threshold_table(engines)
    first = int(threshold[threshold.outcome != "completed"].requests.min())
    assert f"first fault at {first} requests" in reproduce.crash_threshold(threshold)
    every, _ = results.recorded_all(DATA, record.RECORDED_EVERY_REQUEST)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    said = reproduce.every_request(every, rows)
    differing = rows[rows.requests_with_other_tokens > 0]
    for _, r in differing.iterrows():
        assert f"at {r.requests} requests {r.requests_with_other_tokens} request" in said


def test_sanitizer_names_the_allocation_it_measured():
    sanitizer, _ = results.recorded(DATA, "ima_sanitizer")
    said = reproduce.sanitizer_read(sanitizer)
    assert "bytes *before* an allocation of" in said and "0 errors" in said
    # the cache size it compares with is worked out where the reader sees it, not only asserted
    worked = said.split("cache: ")[1].split(" bytes.")[0]
    assert "pages of" in worked and "(bf16) = " in worked


def test_misreads_name_the_blocks():
    from flexfix.mechanism import layouts as lay
    from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

    grow = [
        lay.stride_layout(c, n, g=3, g_max=4, w_max=64, k_capture=32, k_replay=48)
        for c, n in [(copy_to_persistent_as_strided, "as_strided"), (copy_to_persistent, "sliced")]
    ]
    said = layouts.misreads(lay.layout_table(grow))
    assert "query block 0 reads its own entries; query blocks 1 and 2 read 96 of 96" in said
    assert "`sliced`, captured at `K = 32`, replayed at `K = 48`: every query block reads its own" in said


@pytest.mark.parametrize("name", ["kernel_outcomes"])
def test_narrative_renders_as_markdown_in_a_notebook(name):
    said = reproduce.kernel_outcomes(pd.DataFrame([run("sliced", "ok", [step("ok", 1e-3)])]), "x")
    assert said._repr_markdown_() == str(said) and repr(said) == str(said)
