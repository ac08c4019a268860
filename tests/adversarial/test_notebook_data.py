"""Every notebook's reading of recorded data, against damaged copies of ``data/``: a file that lost a column, whose
values were nulled, or whose lists (a run's steps, an engine's batches) were emptied is refused by name -- never
shown as its opposite, and never a raw ``KeyError`` twenty lines into a cell.

Each notebook's recorded-data cells run in-process (``notebook_cells``); a damage either changes nothing the cells
show (a column no reader uses), or the cells stop with a ``ResultsError`` / ``DataError`` naming the file or the
table.  ``make test`` damages each column by nulling it, each list by emptying it and each nested key by nulling
it; ``FLEXFIX_DAMAGE=all`` also drops every column and every nested key (twice the cases, about 3 minutes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from notebook_cells import DATA, NOTEBOOKS, Replay, damage, mutations, outcome, run_data_cells, schema_groups

from flexfix.edition import checks, glossary, results, schemas
from flexfix.edition.narrative import cost, invariance, layouts, reproduce, serving

STEMS = ["01_reproduce_ima", "02_apply_flexfix", "04_batch_invariance", "05_cost", "06_serving", "07_replay_guard"]
# A null that is a value: the server had not exited when it was stopped (the sentences then say nothing of an exit).
NULL_IS_A_VALUE = {("06_serving", ("null", "server_exited_with"))}


@pytest.fixture
def in_notebooks(monkeypatch, tmp_path):
    monkeypatch.chdir(NOTEBOOKS)
    monkeypatch.setattr("flexfix.edition.params.cuda_available", lambda: False)
    return tmp_path


def copy_of_data(tmp_path: Path) -> Path:
    work = tmp_path / "data"
    work.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(DATA):
        if name.endswith(".json"):
            shutil.copy(DATA / name, work / name)
    return work


def same_dispatch_once(decode_dispatch):
    """``decode_dispatch`` asking vLLM once per list of engines: the same list again gets a copy of the first
    answer.  It is a function of its argument and the installed vLLM alone (a ``CudagraphDispatcher`` under a
    stand-in config, about 40 ms a call), and the replays ask it the same few questions hundreds of times; a damaged
    file that changes what it is asked still reaches vLLM, and so does a list that cannot be a key."""
    answers: dict = {}

    def remembered(engines, capture_sizes=None):
        engines = list(engines)
        try:
            key = (
                tuple(tuple(e) if isinstance(e, (tuple, list)) else e for e in engines),
                None if capture_sizes is None else tuple(capture_sizes),
            )
            hash(key)
        except TypeError:
            return decode_dispatch(engines, capture_sizes=capture_sizes)
        if key not in answers:
            answers[key] = decode_dispatch(engines, capture_sizes=capture_sizes)
        return answers[key].copy(deep=True)

    return remembered


def stat(folder: Path) -> dict[str, tuple[int, int]]:
    return {name: (os.stat(folder / name).st_size, os.stat(folder / name).st_mtime_ns) for name in os.listdir(folder)}


@pytest.mark.parametrize("stem", STEMS)
def test_a_damaged_data_file_is_refused_or_changes_nothing(stem, in_notebooks, monkeypatch):
    every = os.environ.get("FLEXFIX_DAMAGE") == "all"
    monkeypatch.setattr(glossary, "decode_dispatch", same_dispatch_once(glossary.decode_dispatch))
    replay = Replay(stem, DATA, in_notebooks)
    for first in range(len(replay.cells)):  # the shortcut is sound: starting anywhere, the baseline is the same
        assert replay.run(DATA, first) == replay.shown, first
    groups = schema_groups(sorted(set().union(*replay.reads)), DATA)
    for files in groups.values():  # and so is the one past a loading cell (07): undamaged, the baseline again
        assert replay.run_damaged(DATA, files) == replay.shown, files
    tried, bad = 0, []
    work = copy_of_data(in_notebooks / "damaged")  # one copy: each damage is undone before the next
    undamaged, before = {name: (work / name).read_bytes() for name in os.listdir(work)}, stat(work)
    for files in groups.values():
        for mutation in mutations(files, DATA):
            if mutation[0] == "drop" and not every:
                continue
            if (stem, mutation) in NULL_IS_A_VALUE:
                continue
            damage(files, work, mutation)
            kind, text = outcome(replay, work, files)
            tried += 1
            for name in files:
                (work / name).write_bytes(undamaged[name])
            after = stat(work)  # the replay wrote nothing into its data: no file added, removed or changed
            assert {n: v for n, v in after.items() if n not in files} == {
                n: v for n, v in before.items() if n not in files
            }
            assert [n for n in after if n in files] == [n for n in before if n in files], files
            before = after
            if kind == "refused" and not any(name.removesuffix(".json") in text for name in files):
                if "refusing" not in text:
                    bad.append(f"{files[0]} {mutation}: refused without naming the file or what it lacks: {text}")
            elif kind in ("silent", "raw"):
                bad.append(f"{files[0]} {mutation}: {kind}: {text[:200]}")
    assert tried > 20 and not bad, "\n".join(bad)


# The cases of the issue, by name.


def test_kernel_invariance_without_bitwise_equal_is_refused_not_read_as_never_equal(in_notebooks):
    """Notebook 04 said every configuration was "not bitwise equal even alone ... moved by up to 0"."""
    for how in ("drop", "null"):
        work = copy_of_data(in_notebooks / how)
        damage(["kernel_invariance-cuda.json"], work, (how, "bitwise_equal"))
        refused = r"kernel_invariance-cuda.json: record \d+(:| lacks) .*bitwise_equal"
        with pytest.raises(results.ResultsError, match=refused):
            run_data_cells("04_batch_invariance", work, in_notebooks)


def test_ima_kernel_with_its_steps_emptied_is_refused_not_all_correct(in_notebooks):
    """Notebook 01 said "first at replay 0" and "all 5 runs correct at every step" about zero steps."""
    work = copy_of_data(in_notebooks)
    damage(["ima_kernel-cuda.json"], work, ("empty", "records"))
    with pytest.raises(results.ResultsError, match="ima_kernel-cuda.json: record 0: a run without a single step"):
        run_data_cells("01_reproduce_ima", work, in_notebooks)


def test_every_notebook_reads_its_recorded_data_through_a_schema():
    """No notebook reads DATA_DIR without saying what it needs: schemas.recorded (or a reader built on it, as 07's
    guard_tables.recorded and guard_tables.served), not results.recorded nor results.read_results."""
    for path in sorted(NOTEBOOKS.glob("0[1-7]_*.ipynb")):
        sources = [c["source"] for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        text = "\n".join("".join(s) if isinstance(s, list) else s for s in sources)
        for call in ("results.recorded(", "results.recorded_all(", "results.read_results("):
            assert call not in text, f"{path.name}: {call}"


# The narrative functions, given what a live run could hand them: nothing, NaN, zero steps.


def test_sentences_refuse_an_empty_table():
    empty = pd.DataFrame()
    calls = [
        lambda: reproduce.kernel_outcomes(empty, "this run"),
        lambda: reproduce.sanitizer_read(empty),
        lambda: reproduce.engine_scenarios(empty, ["a"]),
        lambda: invariance.kernel_sweep(empty, "this run"),
        lambda: invariance.engine_sweep(empty, "this run"),
        lambda: layouts.equivalence(empty, ("a", "b")),
        lambda: layouts.misreads(empty),
        lambda: cost.l2_effect(empty),
        lambda: serving.scenarios(empty, empty, "this run"),
    ]
    for call in calls:
        with pytest.raises(checks.DataError, match="has no rows|expected a table"):
            call()


def test_zero_steps_are_not_correct_at_every_step():
    runs = pd.DataFrame([{"copy": "sliced", "batch": 48, "seed": s, "status": "ok", "records": []} for s in range(5)])
    with pytest.raises(checks.DataError, match="holds no step: nothing was measured there"):
        reproduce.kernel_outcomes(runs, "this run")


def test_a_measured_cell_without_its_comparison_is_refused():
    cell = {"config": "c", "batch": 1, "position": "first", "outcome": "ok", "max_abs_diff": 0.0}
    cell.update(max_error_vs_reference=0.0, detail="")
    with pytest.raises(checks.DataError, match=r"'bitwise_equal' has no value in 1 of 1 rows of the rows measured"):
        invariance.kernel_sweep(pd.DataFrame([{**cell, "bitwise_equal": None}]), "this run")
    with pytest.raises(checks.DataError, match="not bitwise equal yet moved by 0"):
        invariance.kernel_sweep(pd.DataFrame([{**cell, "bitwise_equal": False}]), "this run")


def test_a_nan_ratio_is_not_stated():
    ratios = pd.DataFrame({"batch": [1], "context": [256], "flex_over_sdpa": [np.nan]})
    ratios = ratios.assign(flex_bw_fraction=0.1, sdpa_bw_fraction=0.2)
    timing = pd.DataFrame({"device": ["cpu"], "impl": ["sdpa dense"], "batch": [1], "context": [256]})
    timing = timing.assign(median_ms=1.0)
    with pytest.raises(checks.DataError, match="'flex_over_sdpa' has no value in 1 of 1 rows"):
        cost.kernel_timing(timing, ratios, "this run")
    with pytest.raises(checks.DataError, match="GPU timings without the graph-replay rows"):
        cost.kernel_timing(timing.assign(device="cuda"), ratios.fillna(1.0), "the recorded run")


def test_a_sanitizer_run_without_its_count_is_not_zero_errors():
    row = {"copy": "as_strided", "status": "illegal_memory_access", "sanitizer_errors": None, "sanitizer_lines": []}
    with pytest.raises(checks.DataError, match="'sanitizer_errors' has no value"):
        reproduce.sanitizer_read(pd.DataFrame([row]))


def test_a_serving_scenario_without_its_requests_is_refused_by_name():
    table = pd.DataFrame([{"scenario": "s", "status": "ok", "ima_in_log": False, "plugin_lines": 1, "requests": []}])
    table["server_exited_with"] = None
    with pytest.raises(checks.DataError, match="s lists no requests"):
        serving.scenarios(table, pd.DataFrame(), "this run")


def test_a_serving_stage_without_its_counts_is_not_zero_answered():
    table = pd.DataFrame([{"scenario": "s", "status": "ok", "ima_in_log": False, "plugin_lines": 1, "requests": [48]}])
    table["server_exited_with"] = None
    stage = {"scenario": "s", "stage": "together", "requests": 48, "ok": None, "errored": 0, "errors": ""}
    stage.update(compared=0, skipped="")
    with pytest.raises(checks.DataError, match="'ok' has no value in 1 of 1 rows of the rows of stages that ran"):
        serving.scenarios(table, pd.DataFrame([stage]), "this run")


def test_the_schemas_accept_every_recorded_file_they_are_used_for():
    for names, schema in [
        ("ima_kernel", schemas.KERNEL_RUNS),
        ("ima_sanitizer", schemas.SANITIZER_RUNS),
        ("decode_timing", schemas.DECODE_TIMING),
        ("serve", schemas.SERVING),
    ]:
        table, _ = schemas.recorded(DATA, names, schema)
        assert len(table)
