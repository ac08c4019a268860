"""Teaching round 13, notebooks 03-05 (newcomer reading of the published H200 edition, findings of r0305): each fix
tied to the data or the source that generates the sentence, table or figure."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from test_teaching_round4_03_05 import DATA, _code, _markdown, _recorded_timing, _speed  # noqa: E402
from test_teaching_round12_03_05 import _flushed_effect  # noqa: E402

from flexfix.edition import plots, schemas, tables  # noqa: E402
from flexfix.measure import engine_sweep, record  # noqa: E402

# A1 (05): one status per kind of finding: "a hint, not a result" only for directions that held in every ratio;
# ratios that went both ways are "unresolved", as in The answer first.


def test_a1_mixed_ratios_are_unresolved_not_a_hint():
    from flexfix.edition.narrative import cost as story
    from flexfix.edition.narrative.cost_answer import engine_answer

    speed = _speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    said = str(story.engine_ratios(summary, spread))
    answer = str(engine_answer(speed))
    mixed = [(m, r) for (m, r), row in summary.iterrows() if 0 < int(row["below_1"]) < int(row["ratios"])]
    held = len(mixed) < len(summary)
    assert mixed, "the recorded runs have ratios that went both ways"
    bullet = next(line for line in said.split("\n") if "went both ways" in line)
    assert bullet.startswith("- **Unresolved**") and "hint" not in bullet
    for model, ratio in mixed:
        assert f"{ratio} ({model}) median {summary.loc[(model, ratio), 'median']:.2f}x" in bullet
        if ratio in ("BI1/BI0", "full/piecewise"):
            assert f"{model} model: both ways across runs" in answer and "unresolved" in answer
    hints = [line for line in said.split("\n") if "A hint, not a result" in line]
    assert all("held in every ratio" in line for line in hints) and (held or not hints)
    md = _markdown("05_cost")
    assert "does not survive it" not in md and "on both sides of 1 is unresolved" in md


# C1 (05): the batch-invariant figure marks the cases whose band misses 1, from the table's rows; bars per point.


def test_c1_the_bi_figure_stars_the_cases_of_the_table_and_draws_bars():
    from matplotlib.collections import LineCollection, PolyCollection

    timing, _, prov = _recorded_timing()
    bands = tables.timing_ratios(timing, spread=True)
    cases = tables.cost.bi_band_cases(timing)
    fig = plots.ratio_lines(
        bands, "batch", "bi_overhead", "context", "t", "y", reference_label="1", min_span=0.1, panels=True, bars=True
    )
    stars = set()
    for ax, (context, _) in zip(fig.axes, bands.groupby("context", sort=True)):
        assert not any(isinstance(c, PolyCollection) for c in ax.collections)  # no band filled between points
        assert any(isinstance(c, LineCollection) for c in ax.collections)  # a bar per point
        for line in ax.get_lines():
            if line.get_marker() == "*":
                stars |= {(int(x), int(context)) for x in line.get_xdata()}
    assert stars == {(int(b), int(c)) for b, c in zip(cases["batch"], cases["context"])}
    assert any(
        t.get_text().startswith("filled star") and "misses 1" in t.get_text() for t in fig.legends[0].get_texts()
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
    code, md = _code("05_cost"), _markdown("05_cost")
    at = code.index('"bi_overhead",')
    assert "bars=True" in code[at : at + 400]
    assert "marks with a filled star each point whose band misses one" in md


# D1 (03): flexfix's fixed copy imported under its own name; the same-name warning said once, in bold.


def test_d1_the_fixed_copy_has_its_own_name():
    code, md = _code("03_stride_layouts"), _markdown("03_stride_layouts")
    assert "import copy_to_persistent as copy_sliced" in code
    assert '(copy_sliced, "flexfix\'s copy_to_persistent (sliced)")' in code
    assert "(copy_to_persistent," not in code
    assert (
        "**Same name, opposite behaviour: vLLM 0.20.0's `copy_to_persistent` is the bug, flexfix's is the fix.**" in md
    )


# D2 (05): the pointer to the answer is a sentence.


def test_d2_the_answer_pointer_names_its_section():
    md = _markdown("05_cost")
    assert "**The answer first**: what full graphs gain" in md  # r14 D7: right under the heading
    assert "in the lines after the\nunder" not in md


# D3 (04): the engine line gives the first difference and the largest, each with its own size and place.


def test_d3_first_and_largest_difference_apart():
    from flexfix.edition.narrative import invariance as story

    table, _ = schemas.recorded(DATA, record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)
    needle = engine_sweep.invariance_rows(table)
    said = str(story.engine_sweep(needle, "x"))
    for _, rows in needle.groupby(["engine", "sampling"], sort=False):
        differ = rows[~rows["logprobs_bitwise_equal"].fillna(False).astype(bool)]
        if differ.empty:
            continue
        first = differ.loc[differ["requests"].idxmin()]
        top = differ["max_abs_logprob_diff"].max()
        assert f"by {first['max_abs_logprob_diff']:.2g}; largest {top:.2g}, at " in said
    assert "by up to" not in said


# D4 (05): the flushed speed-up first, as measured; the untested explanation after, without "So".


def test_d4_flushed_speedup_leads_and_the_explanation_is_untested():
    from flexfix.edition.narrative.cost_l2 import replay_flushed

    said = str(replay_flushed(_flushed_effect()))
    lead = said.split(". ")[0]
    assert f"is {0.023 / 0.0205:.1f}x, against {0.100 / 0.0206:.1f}x warm" in lead
    assert " So " not in said and "which we did not test" in said
    assert said.index("which we did not test") > said.index("ranges")
    assert "the line right under these takeaways" in _markdown("05_cost")  # r17 D3: a generated pointer, each way


# D5 (04): the lead says its own words, and that position first stayed right where the later positions were wrong.


def test_d5_lead_words_and_first_position():
    from flexfix.edition.narrative import invariance as story

    cells = []
    for batch in (8, 17, 24):
        for position in ("first", "middle", "last"):
            wrong = batch > 16 and position != "first"
            cells.append(
                {
                    "config": "flex, vllm options, graph, as_strided",
                    "batch": batch,
                    "position": position,
                    "outcome": "wrong_result" if wrong else "ok",
                    "bitwise_equal": not wrong,
                    "max_abs_diff": 0.5 if wrong else 0.0,
                    "max_error_vs_reference": 0.5 if wrong else 0.001,
                    "detail": "",
                }
            )
    said = str(story.kernel_lead(pd.DataFrame(cells), "x"))
    assert "*wrong* is a silently wrong result" in said
    assert "position `first` (in query block 0, read right) stayed bitwise equal" in said
    cells[3].update(bitwise_equal=False, max_abs_diff=0.01)  # batch 17, first: moved -> not said
    assert "stayed bitwise equal" not in str(story.kernel_lead(pd.DataFrame(cells), "x"))


# D7 (03): the takeaway keeps its point; notebook 01's pointers shrink to a "see also" without parameter names.


def test_d7_takeaway_without_notebook_01_parameters():
    md = _markdown("03_stride_layouts")
    takeaways = md.split("## Takeaways")[1]
    assert "`SMALL_BATCH`" not in takeaways and "scenario (c)" not in takeaways
    assert "nothing is misread. (See also notebook 01" in takeaways


# D8 (04): the crash-or-wrong section says every GPU sweep here replays narrower than its capture.


def test_d8_crash_or_wrong_names_the_narrower_replay():
    md = _markdown("04_batch_invariance")
    section = md.split("## Crash or wrong answer, sweep by sweep")[1]
    flat = " ".join(section[:1800].split())  # r14 A1: after the counts, any device; round 22 D6: vLLM's wider
    assert "replays **narrower** than its capture, never **wider** as vLLM does (*The `graph` launch* above)" in flat
    assert "*Replay step with a larger `K`*" in md.split("**What vLLM does**")[1].split("* **")[0]  # said there
