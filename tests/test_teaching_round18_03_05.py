"""Round 18 (a CPU execution's reading), notebook 05, A1: "a replay matters exactly when the kernel is short" while the
recorded speed-ups rise between some neighbouring cases. The headline says what holds, decided from the ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flexfix.edition.narrative import cost_replay

ROOT = Path(__file__).resolve().parents[1]


def _ratios(speedups: dict[tuple[int, int], float]) -> pd.DataFrame:
    return pd.DataFrame([{"batch": b, "context": c, "graph_speedup": s} for (b, c), s in speedups.items()])


def test_the_headline_claims_the_shortest_kernel_only_where_the_largest_speed_up_is_there():
    falling = _ratios({(1, 256): 7.0, (1, 1024): 2.0, (8, 256): 3.0, (8, 1024): 1.5})
    said = cost_replay.headline(falling)
    assert said.startswith("**A CUDA-graph replay matters most where the kernel is short**")
    assert "and less with every step" in said and "not steadily" not in said
    elsewhere = _ratios({(1, 256): 2.0, (1, 1024): 2.5, (8, 256): 3.0, (8, 1024): 1.5})
    said = cost_replay.headline(elsewhere)
    assert said.startswith("**A CUDA-graph replay's largest speed-up was not at the shortest kernel**")
    assert "in 2 of 4 pairs of neighbouring cases" in said  # 1x256 -> 1x1024 and 1x256 -> 8x256 rose


def test_the_recorded_run_counts_its_rising_pairs():
    record = json.loads((ROOT / "data" / "decode_timing-cuda.json").read_text())
    from flexfix.edition import schemas, tables

    gpu, _ = schemas.recorded(ROOT / "data", "decode_timing", schemas.DECODE_TIMING)
    ratios = tables.timing_ratios(gpu)
    rising, total = cost_replay.rising_pairs(ratios)
    assert record["records"] and total == len(ratios) * 2 - ratios.batch.nunique() - ratios.context.nunique()
    assert rising > 0  # the reader's pairs: 8x256 -> 8x1024 and 8x256 -> 16x256 both rose
    notebook = (ROOT / "notebooks" / "05_cost.ipynb").read_text()
    assert "It matters exactly when" not in notebook and "It matters most when" in notebook
