"""Timing helpers and the bandwidth arithmetic, on CPU."""

import pytest
import torch

from flexfix.edition.tables import cost as cost_tables
from flexfix.measure import timing


def test_time_fn_warms_up_then_times_each_repetition():
    calls = []
    t = timing.time_fn(lambda: calls.append(1), warmup=3, reps=7)
    assert len(calls) == 10 and len(t.samples_ms) == 7 and all(s >= 0 for s in t.samples_ms)
    assert timing.Timing([3.0, 1.0, 2.0, 10.0, 4.0]).median == 3.0
    assert timing.Timing([1.0, 2.0, 3.0, 4.0, 5.0]).quantile(0.25) == 2.0


@pytest.mark.parametrize("bad", [dict(warmup=-1), dict(reps=0)])
def test_time_fn_rejects_impossible_counts(bad):
    with pytest.raises(ValueError):
        timing.time_fn(lambda: None, **bad)


def test_kv_bytes_on_known_sizes():
    # 2 (K and V) x 32 requests x 2048 tokens x 8 heads x 128 dims x 2 bytes = 256 MiB
    assert timing.kv_bytes(32, 2048, 8, 128, torch.bfloat16) == 256 * 2**20
    assert timing.kv_bytes(1, 16, 2, 64, torch.float32) == 2 * 16 * 2 * 64 * 4


def test_copy_bandwidth_counts_read_and_write(monkeypatch):
    monkeypatch.setattr(timing, "time_fn", lambda fn, **kw: (fn(), timing.Timing([2.0]))[1])  # 2 ms
    assert timing.copy_bandwidth("cpu", 1000) == pytest.approx(2 * 1000 / 2e-3)


def test_cpu_decode_sweep_schema_and_arithmetic():
    table = timing.decode_sweep([1, 4], [64], "cpu", case=timing.DecodeCase(4, 2, 32), warmup=1, reps=3, progress=False)
    assert list(table.columns) == timing.TIMING_COLUMNS
    assert set(table.impl) == {"sdpa dense", "flex pytorch eager"} and len(table) == 4
    r = table.iloc[0]
    assert r.kv_GBps == pytest.approx(r.kv_bytes / (r.median_ms / 1e3) / 1e9)
    assert r.fraction_of_copy_bw == pytest.approx(r.kv_GBps / r.copy_GBps)
    assert (table.q25_ms <= table.median_ms).all() and (table.median_ms <= table.q75_ms).all()


def test_cpu_rows_are_warm_timings_and_the_l2_view_is_empty_there():
    from flexfix.edition import tables

    table = timing.decode_sweep([1], [64], "cpu", case=timing.DecodeCase(4, 2, 32), warmup=0, reps=2, progress=False)
    assert set(table.l2) == {"warm"}
    assert tables.l2_effect(table).empty
    assert not tables.timing_ratios(table).empty
    with pytest.raises(ValueError, match="no timings with l2='flushed'"):
        tables.timing_ratios(table, l2="flushed")


def test_l2_effect_divides_flushed_by_warm_per_case():
    import pandas as pd

    from flexfix.edition import tables

    rows = [
        {"impl": "x", "batch": 1, "context": 256, "kv_bytes": 10**6, "l2": "warm", "median_ms": 0.02},
        {"impl": "x", "batch": 1, "context": 256, "kv_bytes": 10**6, "l2": "flushed", "median_ms": 0.05},
    ]
    effect = tables.l2_effect(pd.DataFrame(rows))
    assert effect.flushed_over_warm.tolist() == [pytest.approx(2.5)] and effect.kv_MB.tolist() == [1.0]
    recorded = pd.DataFrame(rows[:1]).drop(columns="l2")  # files from before the l2 column: warm timings
    assert tables.timing_ratios.__name__ and cost_tables._with_l2(recorded).l2.tolist() == ["warm"]


def test_flush_l2_is_a_real_bool():
    with pytest.raises(ValueError, match="flush_l2 must be True or False, got 'yes'"):
        timing.time_fn(lambda: None, flush_l2="yes")


def test_05_ratios_near_1_keep_three_decimals_and_the_spread_and_l2_numbers_have_their_table():
    """A6/B3/B4: bi_overhead 1.0149 showed as 1.010; the Spread line's 37%/1.0% and the L2 line's "120 cases,
    0.19-1.13x" had no table behind them (the L2 table shown held 20 medians)."""
    import numpy as np
    import pandas as pd

    from flexfix.edition import tables
    from flexfix.edition.narrative import cost as story

    shown = tables.significant(pd.DataFrame({"bi_overhead": [1.0149, 0.98], "ms": [0.000214, 12.34]}))
    assert list(shown["bi_overhead"]) == [1.015, 0.98] and shown["ms"][0] == 0.000214
    rows = [
        dict(impl=i, batch=b, context=c, kv_bytes=b * c, median_ms=1.0, q25_ms=0.99, q75_ms=1 + b / 80, l2=l2)
        for i in ("flex vllm graph", "sdpa dense")
        for b in (1, 8)
        for c in (256, 1024)
        for l2 in ("warm", "flushed")
    ]
    timing = pd.DataFrame(rows)
    timing.loc[timing["l2"] == "flushed", "median_ms"] = np.linspace(0.5, 1.1, 8)
    spread = tables.timing_spread(timing, largest=2)
    assert len(spread) == 3 and spread["impl"].iloc[-1] == "median over all 8 cases"
    summary = tables.l2_effect_summary(timing)
    said = str(story.l2_effect(tables.l2_effect(timing)))
    assert f"Over all {int(summary['cases'].sum())} cases" in said
    assert f"{summary['min'].min():.2f}" in said and f"{int(summary['faster >5%'].sum())} more than 5% *faster*" in said
