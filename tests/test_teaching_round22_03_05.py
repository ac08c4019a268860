"""Round 22 (report b, a newcomer's reading of the published GPU edition), notebooks 03-05: each fix tied to the
source that generates the sentence, table or figure, and each checked where it fails before the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from test_teaching_round4_03_05 import _code, _markdown

from flexfix.edition import schemas, tables
from flexfix.measure import engine_sweep, record

DATA = Path(__file__).resolve().parents[1] / "data"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _paragraph(text: str, start: str) -> str:
    """The paragraph of ``text`` (flattened) that starts with ``start``."""
    flat = _flat(text.replace("\n\n", "\x00"))
    return next(p.strip() for p in flat.split("\x00") if p.strip().startswith(start))


# A1 (04): the headline words defined *refused* (a launch vLLM or the replay guard refused), and the key that the
# paragraph said gives every outcome's name in each place had no row for it. No kernel sweep runs vLLM or the guard:
# the paragraph now defines only the outcomes of the key, says why none is refused, and a refused cell (were one
# ever recorded) gets its word defined under its own table.


def test_a1_every_headline_word_defined_has_a_row_of_the_key():
    key = tables.invariance.outcome_key()
    heads = " / ".join(key["headline word"])
    said = _paragraph(_markdown("04_batch_invariance"), "**The headlines**")
    defined = re.findall(r"\*([a-z][a-z -]+)\* \(", said.split("The word in parentheses")[0])
    assert defined and "refused" not in defined
    for word in defined:
        assert word in heads, word
    assert "no cell here is *refused*" in said
    assert "a launch the replay guard or vLLM refused" not in said


def test_a1_a_refused_cell_gets_its_word_under_its_table():
    from flexfix.edition.narrative import invariance as story

    cell = {
        "config": "flex, vllm options, graph, as_strided",
        "position": "first",
        "bitwise_equal": None,
        "max_abs_diff": None,
        "max_error_vs_reference": None,
        "detail": "",
    }
    ok = {**cell, "batch": 1, "outcome": "ok", "bitwise_equal": True, "max_abs_diff": 0.0}
    ok["max_error_vs_reference"] = 0.001
    refused = pd.DataFrame([ok, {**cell, "batch": 17, "outcome": "refused"}])
    said = str(story.kernel_sweep(refused, "t", defined_under="x"))
    assert "*refused* a launch vLLM refused" in said
    keyed = pd.DataFrame([ok, {**cell, "batch": 17, "outcome": "error"}])
    assert "The word in parentheses" not in str(story.kernel_sweep(keyed, "t", defined_under="x"))


# B1 (04): the distance to the fp32 reference decides moved against wrong, yet no table showed it: the sentences gave
# a maximum for moved configurations only, and this run's wrong cells none at all. A table under each verdict table
# now gives both distances of every cell that moved or is wrong, the tolerance and the needle alone's distance.


def _cell(config: str, batch: int, position: str, outcome: str, diff: float, ref: float) -> dict:
    equal = outcome == "ok" and diff == 0
    cell = dict(config=config, device="cuda", batch=batch, position=position, outcome=outcome, bitwise_equal=equal)
    return cell | dict(max_abs_diff=diff, max_error_vs_reference=ref, detail="")


def test_b1_the_distances_to_the_reference_are_tabled_from_the_cells():
    recorded = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)[0]
    shown = tables.invariance.reference_distances(recorded).reset_index()
    ran = recorded[recorded["outcome"].isin(["ok", "wrong_result"])]
    differ = ran[~ran["bitwise_equal"].fillna(False).astype(bool)]
    assert int(shown["cells"].sum()) == len(differ) > 0
    for _, row in shown.iterrows():
        cells = differ[differ["config"] == row["config"]]
        assert row["to the fp32 reference (largest)"] == f"{cells['max_error_vs_reference'].max():.2g}"
        assert row["to the needle alone (largest)"] == f"{cells['max_abs_diff'].max():.2g}"
        assert row["tolerance"] == "0.05" and row["outcome"] == "moved"
        assert float(row["to the fp32 reference (largest)"]) <= 0.05
    # a wrong cell's distance is shown, past the tolerance, beside the needle alone's
    config = "flex, vllm options, graph, as_strided"
    cells = [_cell(config, 1, "first", "ok", 0.0, 0.003), _cell(config, 17, "first", "ok", 0.0, 0.003)]
    cells += [_cell(config, 17, "last", "wrong_result", 0.99, 0.7), _cell(config, 24, "last", "wrong_result", 0.5, 0.4)]
    wrong = tables.invariance.reference_distances(pd.DataFrame(cells)).reset_index().iloc[0]
    assert (wrong["outcome"], wrong["cells"]) == ("wrong", 2)
    assert (wrong["to the fp32 reference (smallest)"], wrong["to the fp32 reference (largest)"]) == ("0.4", "0.7")
    assert wrong["needle alone to the reference"] == "0.003" and wrong["tolerance"] == "0.05"
    code = _code("04_batch_invariance")
    for sweep in ("kernel", "analog", "gpu_kernel"):
        assert f"display(tables.invariance.reference_distances({sweep}))" in code
    said = _flat(_markdown("04_batch_invariance"))
    assert "a table gives both distances of every cell that moved or is wrong" in said


# A2 (05 against 04): 05 said the records do not keep the sampling and that the timed workload was greedy, while 04
# shows the same four recordings with greedy and seeded rows for every engine. The engines' `samplings` are those of
# 04's needle check; no throughput record holds a sampling. The workload line now tells the two apart from the data.


def _engines_and_speed():
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    engines = schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)[0]
    return engines, engine_sweep.throughput_rows(engines)


def test_a2_the_workload_line_tells_the_needle_checks_samplings_from_the_timed_requests():
    from flexfix.edition.narrative.cost_runs import engine_workload

    engines, speed = _engines_and_speed()
    assert "sampling" not in speed  # no throughput record holds one
    checked = engines[[bool(list(r)) for r in engines["requests"]]]
    said = _flat(engine_workload(speed, engines))
    records, code = said.split("This code's settings")
    assert "no throughput record holds the sampling of the timed requests" in records
    assert "the `samplings` each engine's record lists (greedy and seeded) are those of notebook 04's needle check" in (
        records
    )
    assert f"which {len(checked)} of these {len(engines)} engines ran" in records
    for source in dict.fromkeys(checked["source"]):
        assert f"`{source}`" in records
    assert "not of the timed requests" in records
    assert "which the records do not keep: greedy sampling" not in said
    assert "the timed requests sampled greedily" in code
    # a throughput record that held its sampling would be read, not called this code's
    said = engine_workload(speed.assign(sampling="seeded"), engines)
    assert "the timed requests' sampling: seeded" in said and "sampled greedily" not in said
    assert "story.engine_workload(speed, engine_table)" in _code("05_cost")
    assert "requests of greedy output tokens" not in _markdown("05_cost")


# B2 (05): "With the L2 flushed before each call the speed-up was 1.02-6.40x over all cases" was backed by one case
# only; no output gave the flushed eager and replay times per case. A table under the flushed paragraph now gives
# every case, warm and flushed, and the paragraph's range is the range of its column.


def test_b2_every_case_of_the_flushed_range_is_shown():
    from flexfix.edition.narrative.cost_l2 import replay_cases, replay_flushed

    rows = []
    for batch, context, eager, graph, eager_f, graph_f in (
        (1, 256, 0.194, 0.0233, 0.130, 0.0202),
        (8, 256, 0.385, 0.152, 0.30, 0.15),
        (1, 8192, 0.768, 0.589, 0.70, 0.686),
    ):
        for impl, warm, flushed in (("flex vllm eager", eager, eager_f), ("flex vllm graph", graph, graph_f)):
            rows.append(dict(impl=impl, batch=batch, context=context, kv_MB=1.0, warm_ms=warm, flushed_ms=flushed))
    effect = pd.DataFrame(rows)
    cases = replay_cases(effect)
    assert len(cases) == 3 and list(cases.index.names) == ["batch", "context"]
    assert cases.loc[(1, 8192), "eager_flushed_ms"] == 0.70 and cases.loc[(1, 8192), "replay_flushed_ms"] == 0.686
    assert cases.loc[(1, 8192), "speed_up_flushed"] == round(0.70 / 0.686, 2)
    said = _flat(replay_flushed(effect))
    low, high = cases["speed_up_flushed"].min(), cases["speed_up_flushed"].max()
    assert f"it ranges {low:.2f}–{high:.2f}x (every case: the table below)" in said
    assert replay_cases(effect.iloc[:0]).empty
    code = _code("05_cost")
    assert code.index("cost_l2.replay_flushed(") < code.index("display(cost_l2.replay_cases(tables.l2_effect(kernel)))")
    assert code.index("display(cost_l2.replay_cases(") < code.index('else:\n    print("CPU: timed with warm caches')


# D14 (05): the engine conclusion (full faster in every ratio, a hint; BI1/BI0 unresolved, with the same medians) was
# said five times: In plain words, The answer first, the ratios' In short, its bullets and the Direction line. It is
# now said once, in The answer first (one paragraph and its numbers); the In short reads only the other ratios and
# points there, and the Direction line compares with the published directions without the numbers again.


def test_d14_the_engine_conclusion_is_said_once():
    from flexfix.edition.narrative import cost as story
    from flexfix.edition.narrative.cost_answer import engine_answer

    _, speed = _engines_and_speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    answer = _flat(engine_answer(speed))
    where = "*The answer first*, at the top of this section"
    ratios = _flat(story.engine_ratios(summary, spread, (where, "full/piecewise, BI1/BI0")))
    timing = tables.timing_ratios(schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)[0], spread=True)
    published = _flat(story.published(summary, timing, "the recording", spread=spread, answered=where))
    assert answer.count("**The answer first.**") == 1 and "In plain words" not in answer
    lead = ratios.split("In short:")[1].split("* tiny,")[0]
    for ratio in ("full/piecewise", "BI1/BI0"):
        for model in ("tiny", "variance"):
            median = f"median {summary.loc[(model, ratio), 'median']:.2f}x"
            assert median in answer and median not in lead, (model, ratio)
            assert median not in published.split("**Direction.**")[1]
    assert "full faster than piecewise" not in lead and f"read in {where}" in lead
    direction = published.split("**Direction.**")[1]
    assert "full faster in every ratio" not in direction and "a hint only" in direction
    assert f"({where} gives the numbers)" in direction and "10 of 18" not in direction
    assert "went both ways from run to run (tiny and variance models): unresolved" in direction
    # without the pointer, every ratio is read in the In short (the older callers)
    assert "full faster than piecewise" in _flat(story.engine_ratios(summary, spread))


# D13 (05): "this figure draws the H100 run, not this one" was said six times: a notice above each of the three
# figures and twice in How to read it. It is said once, above the first; How to read it points there.


def test_d13_the_recorded_figures_notice_is_said_once():
    code, md = _code("05_cost"), _flat(_markdown("05_cost"))
    assert code.count("recorded_figure(") == 1 and "again=True" not in code
    first = code.index("recorded_figure(")
    assert first < code.index('"graph_speedup",') < code.index('"bi_overhead",') < code.index('"flex_bw_fraction",')
    assert "not this one" not in md and "not drawn" not in md
    assert "draw the recorded run, as the line above the first says" in md
