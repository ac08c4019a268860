"""The notebook views of the throughput tables, on small hand-made rows with known answers."""

import pandas as pd
import pytest

from flexfix.edition import tables
from flexfix.edition.tables import cost as cost_tables


def _row(model, bi, graphs, tps, source, n=48, seconds=(1.0, 1.0, 1.0)):
    return {
        "model": model,
        "batch_invariant": bi,
        "graphs": graphs,
        "patched": True,
        "requests": n,
        "tokens_per_second": tps,
        "output_tokens": int(tps),
        "seconds": list(seconds),
        "source": source,
    }


ROWS = pd.DataFrame(
    [
        _row("m", True, "full", 300.0, "a"),
        _row("m", True, "eager", 100.0, "a"),
        _row("m", True, "piecewise", 150.0, "a"),
        _row("m", False, "full", 600.0, "a"),
        _row("m", False, "eager", 200.0, "a"),
        _row("m", True, "full", 330.0, "b", seconds=(1.0, 2.0)),
        _row("m", False, "full", 300.0, "b"),
    ]
)


def test_ratios_are_taken_inside_one_run():
    modes, bi = tables.throughput_table(ROWS)
    assert modes.loc[("m", 48, "BI=1"), ("full/eager", "run 1")] == pytest.approx(3.0)
    assert modes.loc[("m", 48, "BI=1"), ("piecewise/eager", "run 1")] == pytest.approx(1.5)
    assert modes.loc[("m", 48, "BI=1"), ("full/piecewise", "run 1")] == pytest.approx(2.0)
    assert modes.loc[("m", 48, "BI=0"), ("full/eager", "run 1")] == pytest.approx(3.0)
    assert ("full/eager", "run 2") not in modes.columns  # run b timed no eager engine: no mode ratio from it
    assert bi.loc[("m", 48, "full"), ("BI1/BI0", "run 1")] == pytest.approx(0.5)
    assert bi.loc[("m", 48, "full"), ("BI1/BI0", "run 2")] == pytest.approx(1.1)  # not mixed with run a's engines
    assert ("m", 48, "piecewise") not in bi.index  # no BI=0 piecewise engine


def test_runs_are_numbered_per_model_in_the_order_given():
    rows = pd.concat([ROWS, pd.DataFrame([_row("other", True, "full", 1.0, "b")])], ignore_index=True)
    named = cost_tables._runs(rows)
    assert dict(zip(named["source"] + named["model"], named["run"])) == {
        "am": "run 1",
        "bm": "run 2",
        "bother": "run 1",
    }
    assert set(cost_tables._runs(ROWS.drop(columns="source"))["run"]) == {"run 1"}


def test_spread_between_and_within_engines():
    spread = tables.throughput_spread(ROWS)
    full_bi1 = spread.loc[("m", "full", 1, 48)]
    assert full_bi1["engines"] == 2 and full_bi1["between_engines"] == pytest.approx(1.1)
    assert full_bi1["within_engine"] == pytest.approx(2.0)  # run b's repetitions: 1 s and 2 s
    assert spread.loc[("m", "eager", 0, 48), "within_engine"] == pytest.approx(1.0)


def test_ratio_summary_counts_every_ratio_once():
    summary = tables.ratio_summary(ROWS)
    assert summary.loc[("m", "BI1/BI0"), "ratios"] == 3  # eager (run a), full (runs a and b)
    assert summary.loc[("m", "BI1/BI0"), "below_1"] == 2  # 0.5 and 0.5; run b's 1.1 is not
    assert summary.loc[("m", "BI1/BI0"), "median"] == pytest.approx(0.5)
    assert summary.loc[("m", "full/eager"), "ratios"] == 2 and summary.loc[("m", "full/eager"), "below_1"] == 0
    runs = tables.throughput_runs(ROWS.assign(engine=ROWS["graphs"] + ROWS["batch_invariant"].astype(str)))
    assert runs[["run", "source", "engines"]].values.tolist() == [["run 1", "a", 5], ["run 2", "b", 2]]
