"""The guard's recorded sets on CPU: what each set runs, one pool for several sets, each set's own file."""

from dataclasses import asdict

import pytest

from flexfix.edition import results
from flexfix.edition.tables import guard as tg
from flexfix.measure import engine_sweep, guard_sets
from flexfix.measure.outcomes import Outcome


def test_each_set_asks_for_what_its_claim_needs():
    sets = guard_sets.SETS
    error = sets["guard_stock_error"]
    assert {r.guard for r in error} == {"error"} and not any(r.patched for r in error)
    assert sorted(n for r in error for n in r.generations) == [17, 32, 48, 48, 128]  # 48 twice: BI forced too
    eager, reference = sets["guard_stock_eager"][0], sets["guard_patched_reference"][0]
    assert eager.generations == reference.generations and eager.requests == reference.requests
    assert (eager.guard, eager.patched, reference.guard, reference.patched) == ("eager", False, "", True)
    alarms = sets["guard_false_alarms"]
    assert {(r.model, r.batch_invariant) for r in alarms} == {(m, b) for m in ("tiny", "variance") for b in (0, 1)}
    assert all(r.patched and r.guard == "log" and r.requests == engine_sweep.REQUESTS for r in alarms)
    (debug,) = sets["guard_debug"]
    assert debug.debug and not debug.patched and 48 in debug.generations
    (cost,) = sets["guard_cost"]
    assert cost.model == "variance" and cost.guard == "error" and cost.guard_cost == (48, 128)
    assert {r.backend for r in sets["guard026_false_alarms"]} == {"FLEX_ATTENTION", "TRITON_ATTN"}
    mutants = sets["guard026_mutants"]
    assert {r.mutant for r in mutants} == {"", "row_stride", "fresh_tensor", "frozen_decision", "stale_tail"}


@pytest.fixture
def fake_engines(monkeypatch, tmp_path):
    from flexfix.measure.record import engines

    ran = []

    def run_engine(run, model_dir, *, timeout, shared_gpu, stop):
        ran.append(run)
        status = "guard_refused" if run.guard == "error" else "ok"
        return Outcome(status, records=[{"kind": "guard", "mode": run.guard}])

    monkeypatch.setattr(engine_sweep, "run_engine", run_engine)
    monkeypatch.setattr(engines, "model_dir", lambda config: tmp_path / config)
    return ran


def test_sets_of_one_call_share_a_pool_and_each_gets_its_file(fake_engines, tmp_path):
    paths = guard_sets.record_sets(["guard_stock_error", "guard_debug"], tmp_path, "cpu", workers=4)
    assert sorted(p.name for p in paths) == ["guard_debug-cpu.json", "guard_stock_error-cpu.json"]
    error, _ = results.read_results(tmp_path / "guard_stock_error-cpu.json")
    debug, prov = results.read_results(tmp_path / "guard_debug-cpu.json")
    assert len(error) == 5 and set(error.status) == {"guard_refused"}
    assert len(debug) == 1 and debug.debug.tolist() == [True] and prov["parameters"]["set"] == "guard_debug"
    assert len(fake_engines) == 6


def test_a_timed_set_runs_alone_after_the_others(fake_engines, tmp_path):
    guard_sets.record_sets(["guard_cost", "guard_debug"], tmp_path, "cpu", workers=8)
    assert [r.guard_cost for r in fake_engines] == [(), (48, 128)]


def test_rows_go_back_to_their_set_by_their_fields():
    import pandas as pd

    runs = guard_sets.SETS["guard_stock_error"][:2]
    table = pd.DataFrame([{"engine": r.name, **asdict(r), "status": "ok"} for r in reversed(runs)])
    assert [row["generations"] for row in guard_sets._rows_of(table, runs[1:])] == [(32,)]


def test_unknown_or_overlapping_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown guard set 'nope'"):
        guard_sets.record_sets(["nope"], tmp_path, "cpu")
    with pytest.raises(ValueError, match="share an engine"):
        guard_sets.record_sets(["guard_stock_error", "guard_v0_20_2"], tmp_path, "cpu")


# every recorded guard file but guard_cost_first (the first guard's cost: recorded by the set guard_cost)
RECORDED = [*tg.RECORDED, "stock_workarounds", "stock_workaround_cost"]


@pytest.mark.parametrize("name", RECORDED)
def test_each_recorded_file_holds_exactly_its_set(name):
    """The code's sets and the data agree: rerunning a set runs the engines its file holds."""
    from pathlib import Path

    table, prov = results.read_results(Path(__file__).resolve().parents[1] / "data" / f"{name}-cuda.json")
    assert prov["device_kind"] == "cuda" and prov["parameters"]["set"] == name
    assert len(guard_sets._rows_of(table, guard_sets.SETS[name])) == len(guard_sets.SETS[name]) == len(table)


def test_the_backend_speed_sets_time_flex_and_triton_alone_at_both_settings():
    """Issue #25 item 3: the same four engines on 0.20.0 (with the plugin) and on the fixed release, timed alone."""
    from flexfix.measure.guard_sets import SETS, TIMED

    for name in ("backend_speed", "backend_speed026"):
        assert name in TIMED
        runs = SETS[name]
        assert sorted((r.backend, r.batch_invariant) for r in runs) == [
            ("FLEX_ATTENTION", False),
            ("FLEX_ATTENTION", True),
            ("TRITON_ATTN", False),
            ("TRITON_ATTN", True),
        ]
        assert all(r.model == "variance" and r.throughput == (48, 128) and r.repeats >= 5 for r in runs)
        assert all(r.patched == (r.backend == "FLEX_ATTENTION") and not r.guard for r in runs)
    assert SETS["backend_speed"] == SETS["backend_speed026"]


def test_the_help_reads_as_plain_text_and_points_to_the_guard_itself(capsys):
    from flexfix.measure.guard_sets import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert ":class:" not in out and ":mod:" not in out and "``" not in out
    assert "FLEXFIX_GUARD=error|eager|log" in " ".join(out.split())
