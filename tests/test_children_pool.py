"""flexfix.measure.children.run_pool: results in job order, one at a time in the caller's thread or several on threads,
and what the record functions build on it (engines side by side with a fixed KV cache)."""

import threading
import time

import pytest

from flexfix.integration import engine
from flexfix.measure import children, engine_sweep, record


def test_results_come_back_in_job_order_whatever_finishes_first():
    seen = []
    jobs = [lambda stop, d=d: (time.sleep(d), d)[1] for d in (0.3, 0.0, 0.15)]
    assert children.run_pool(jobs, 3, lambda i, r: seen.append(i)) == [0.3, 0.0, 0.15]
    assert seen == [1, 2, 0]


def test_one_worker_runs_in_the_calling_thread_one_after_another():
    threads, order = [], []

    def job(stop, k):
        threads.append(threading.current_thread())
        order.append(("start", k))
        return k

    jobs = [lambda stop, k=k: job(stop, k) for k in range(3)]
    assert children.run_pool(jobs, 1, lambda i, r: order.append(("done", i))) == [0, 1, 2]
    assert set(threads) == {threading.main_thread()}
    assert order == [("start", 0), ("done", 0), ("start", 1), ("done", 1), ("start", 2), ("done", 2)]


def test_a_failing_job_stops_the_pool_and_sets_the_stop_event():
    events = []

    def slow(stop):
        events.append(stop)
        stop.wait(10)
        return "late"

    def bad(stop):
        time.sleep(0.1)
        raise RuntimeError("planted")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="planted"):
        children.run_pool([slow, bad, slow], 2)
    assert time.monotonic() - t0 < 5 and events and all(e.is_set() for e in events)


def test_engines_side_by_side_get_a_fixed_kv_cache_and_no_vllm_compile_cache(monkeypatch):
    calls = []

    def fake_run_scenario(name, model_dir, *, shared_gpu=False, stop=None, **kw):
        calls.append((name, shared_gpu, stop is not None))
        from flexfix.measure.outcomes import Outcome

        return Outcome("ok", records=[{"requests": 48}])

    monkeypatch.setattr(engine, "run_scenario", fake_run_scenario)
    table = record.engine_outcomes(["a", "d", "c"], "/m", progress=lambda line: None, workers=3)
    assert table.scenario.tolist() == ["a", "d", "c"] and sorted(calls) == [(n, True, True) for n in "acd"]
    calls.clear()
    record.engine_outcomes(["a"], "/m", progress=lambda line: None)
    assert calls == [("a", False, True)]
    assert engine.memory_kwargs("tiny", True, 0.15) == {
        "kv_cache_memory_bytes": 1 << 30,
        "gpu_memory_utilization": 0.05,
    }
    assert engine.memory_kwargs("tiny", False, 0.15) == {"gpu_memory_utilization": 0.15}
    shared = engine_sweep.llm_kwargs(engine_sweep.EngineRun(model="variance"), "/m", shared_gpu=True)
    assert shared["kv_cache_memory_bytes"] == 4 << 30 and engine.SHARED_GPU["env"] == {
        "VLLM_DISABLE_COMPILE_CACHE": "1"
    }


def test_throughput_is_never_timed_with_engines_side_by_side():
    runs = engine_sweep.parse_runs("tiny:bi1:full", throughput=(48,))
    with pytest.raises(ValueError, match="one at a time"):
        record.engine_sweep(runs, workers=2)


def test_children_side_by_side_get_their_share_of_the_cores(monkeypatch):
    import os

    for name in children.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's own setting stays
    seen = children.run_pool([lambda stop: dict(os.environ)] * 2, 4)
    assert {s["OMP_NUM_THREADS"] for s in seen} == {"8"} and {s["MKL_NUM_THREADS"] for s in seen} == {"3"}
    assert seen[0]["TORCHINDUCTOR_COMPILE_THREADS"] == "8"
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in children.run_pool([lambda stop: dict(os.environ)], 1)[0]
