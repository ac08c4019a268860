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
    assert "48 requests got an error" in said and "an illegal memory access in its log" in said


# Teaching round 3 (issue #26): each generated claim of notebooks 04-06 against the recorded data it comes from.


def _speed():
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    table, _ = results.recorded_all(DATA, names)
    speed = engine_sweep.throughput_rows(table)
    return speed.assign(setting=[tables.engine_label(r) for _, r in speed.iterrows()])


def test_the_slowest_first_count_is_cases_not_engines_and_chance_is_summed_per_case():
    """A7/A8: 68 is timed cases (34 engines x 2 request counts), and chance is the sum of 1/repetitions per case
    (3 repetitions in 44 cases, 5 in 24: about 19.5), both read from the runs table the notebook displays."""
    speed = _speed()
    runs = tables.throughput_runs(speed)
    assert runs["engines"].sum() == 34 and runs["cases"].sum() == 68 == len(speed)
    reps = [len(s) for s in speed["seconds"]]
    assert reps.count(3) == 44 and reps.count(5) == 24
    assert abs(runs["by_chance"].sum() - (44 / 3 + 24 / 5)) < 1e-9
    firsts = sum(int(max(range(len(s)), key=lambda i: s[i]) == 0) for s in speed["seconds"])
    assert runs["slowest_first"].sum() == firsts
    said = cost.engine_noise(speed, tables.throughput_spread(speed), runs)
    assert f"first in {firsts} of 68 timed cases (34 engines, each timed at 2 request counts" in said
    assert "by chance alone about 19.5" in said and "about 18" not in said
    import pytest

    from flexfix.edition.checks import DataError

    with pytest.raises(DataError, match="the runs table counts"):
        cost.engine_noise(speed.iloc[1:], tables.throughput_spread(speed.iloc[1:]), runs)


def test_what_a_replay_saves_is_a_column_the_reader_sees():
    """B12: the per-call saving in ms is stated from the ratio table's replay_saves_ms, which the notebook displays."""
    timing, _ = results.recorded(DATA, "decode_timing")
    ratios = tables.timing_ratios(timing)
    assert ((ratios["eager_ms"] - ratios["replay_ms"] - ratios["replay_saves_ms"]).abs() < 1e-12).all()
    assert ((ratios["eager_ms"] / ratios["replay_ms"] - ratios["graph_speedup"]).abs() < 1e-9).all()
    said = cost.kernel_timing(timing, ratios, "the H100")
    lo, hi = ratios["replay_saves_ms"].min(), ratios["replay_saves_ms"].max()
    assert f"`replay_saves_ms`, eager minus replay median): {lo:.2f}–{hi:.2f} ms" in said
    best = ratios.loc[ratios["graph_speedup"].idxmax()]
    assert said.split("\n\n")[1].startswith("In short:")  # the meaning first, then the evidence
    assert f"the largest speed-up, {best['graph_speedup']:.1f}x, at {int(best['batch'])} request" in said


def test_the_ratio_lead_names_only_directions_that_held_in_every_ratio():
    summary = tables.ratio_summary(_speed())
    said = cost.engine_ratios(summary)  # without the spread: every direction that held in every ratio is named
    lead = said.split("\n\n")[1]
    for (model, ratio), row in summary.iterrows():
        first, second = ratio.split("/")
        if row["below_1"] == 0:
            assert f"{first} faster than {second} ({model}" in lead
        elif row["below_1"] < row["ratios"]:
            assert f"{ratio} ({model})" in lead.split("went both ways")[1]


def test_the_kernel_sweep_leads_with_how_many_configurations_were_invariant():
    table, _ = results.recorded_all(DATA, record.RECORDED_KERNEL_INVARIANCE)
    said = invariance.kernel_sweep(table, "the H100")
    verdicts = table.groupby("config")["bitwise_equal"].apply(lambda v: bool(v.fillna(False).all()))
    assert f"In short: {int(verdicts.sum())} of {len(verdicts)} configurations kept the needle bitwise" in said
    assert "* **crashed from 17 requests on** (verdict `crashes`): `flex, vllm options, graph, as_strided`" in said
    assert "whichever" not in said and "decide" not in said  # A1: no rule the data do not show


def test_the_engine_lead_names_the_engines_that_varied():
    table, _ = results.recorded_all(DATA, record.RECORDED_SWEEP_TABLES)
    needle = engine_sweep.invariance_rows(table)
    said = invariance.engine_sweep(needle, "the H100")
    rows = needle.groupby(["engine", "sampling"])["logprobs_bitwise_equal"].apply(lambda v: bool(v.all()))
    assert f"In short: {int(rows.sum())} of {len(rows)} engine and sampling pairs" in said
    assert "variance, BI=0, eager and variance, BI=0, full graphs, all with `VLLM_BATCH_INVARIANT=0`" in said


def test_the_serving_sentences_say_what_each_scenario_means_before_the_evidence():
    table, _ = recorded_run(DATA)
    stages = tables.stage_table(table)
    said = serving.scenarios(table, stages, "the H100")
    stock = stages[(stages.scenario == "stock") & (stages.stage == "together")].iloc[0]
    model = table.set_index("scenario")["model"]
    assert (
        f"**stock** ({model['stock']} model): the engine died of an illegal memory access when {stock.requests} "
        f"requests were sent together: {stock.errored} requests got an error" in said
    )
    # round 13, A1: batched answers (against alone) and the streamed one (against its non-streamed answer) apart
    bi1 = stages[(stages.scenario == "patched_bi1") & (stages.stage == "together")]
    said_bi1 = f"**patched_bi1** ({model['patched_bi1']} model): all {int(bi1.compared.sum())} batched answers"
    assert said_bi1 + " were bitwise the same as the same request alone; the streamed answer equalled" in said
    bi0 = stages[(stages.scenario == "patched_bi0") & (stages.stage == "together")]
    assert int(bi0.bitwise_equal.sum()) == 0  # every batched answer differed: the sentence says 'all'
    assert f"but all {int(bi0.compared.sum())} batched answers differed from the same request alone" in said
    assert f"({int(bi0.tokens_differ.sum())} with other tokens" in said
    # B13: the recording kept the count of the plugin's lines, not their processes, and the text says so
    assert "announced itself in 2 log lines (this recording kept how many, not which processes" in said
    assert "the server exited with status 0" in said
    # A16: the stock and patched servers of the recording ran different models, and the text says so first
    assert model["stock"] != model["patched_bi1"]
    assert f"The scenarios ran different models (stock: {model['stock']}, patched_bi1: {model['patched_bi1']}" in said


def test_the_plugin_processes_are_named_from_vllms_log_prefixes():
    lines = [
        "(APIServer pid=1) INFO flexfix: patched vLLM's FlexAttention backend",
        "(EngineCore pid=2) INFO flexfix: patched vLLM's FlexAttention backend",
    ]
    assert serving.plugin_processes(lines) == ["APIServer", "EngineCore"]
    assert serving.plugin_processes(None) == []
