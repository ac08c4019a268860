"""The measured statements of notebooks 04-06 (kernel and engine invariance, cost, serving), written by
flexfix.edition.narrative from the recorded GPU data: the text carries the numbers of those tables."""

from flexfix.edition import results, tables
from flexfix.edition.narrative import cost, invariance, serving
from flexfix.integration.serving import recorded_run
from flexfix.measure import engine_sweep, record

DATA = "data"


def test_kernel_sweep_sentences_carry_the_cells():
    table, _ = results.recorded_all(DATA, record.RECORDED_KERNEL_INVARIANCE)
    said = invariance.kernel_sweep(table, "the H100")
    crashed = table[table.outcome == "illegal_memory_access"].groupby("config").size()
    for count in set(crashed):
        assert f"{count} cells ended in an illegal memory access" in said


def test_engine_sweep_says_which_engines_were_invariant():
    table, _ = results.recorded_all(DATA, record.RECORDED_SWEEP_TABLES)
    needle = engine_sweep.invariance_rows(table)
    said = invariance.engine_sweep(needle, "the H100")
    assert "bitwise equal (tokens and logprobs) at all" in said and "variance, BI=0" in said


def test_timing_sentences_carry_the_ratios():
    timing, _ = results.recorded(DATA, "decode_timing")
    ratios = tables.timing_ratios(timing)
    said = cost.kernel_timing(timing, ratios, "the H100")
    assert f"{ratios.graph_speedup.max():.2f}x" in said and f"{ratios.bi_overhead.min():.2f}" in said


def test_serving_sentences_from_the_recorded_run():
    table, _ = recorded_run(DATA)
    said = serving.scenarios(table, tables.stage_table(table), "the H100")
    assert "HTTP 500" in said and "an illegal memory access in its log" in said
