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
    # an engine that ran the needle check with its samplings lost is refused, not left out of the sentence
    import pytest

    from flexfix.edition.checks import DataError

    lost = engines.copy()
    lost.at[checked.index[0], "samplings"] = []
    with pytest.raises(DataError, match="refusing"):
        engine_workload(speed, lost)
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
    where = "*The answer first*, under *Engine level*"
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
    assert f"(the numbers: {where})" in direction and "10 of 18" not in direction
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


# D5 (04): the result lead used *wrong* "past the fp32 reference's tolerance" three paragraphs before the reference
# was defined. The two distances (to the needle alone, to the fp32 reference) are now defined in *The needle*, before
# the sweep whose lead uses them.


def _cells_04() -> list[tuple[str, str]]:
    import json

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "04_batch_invariance.ipynb").read_text())
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def test_d5_the_fp32_reference_is_defined_before_the_lead_that_uses_it():
    cells = _cells_04()
    lead = next(i for i, (t, s) in enumerate(cells) if t == "code" and "story.kernel_lead(kernel" in s)
    defined = next(i for i, (t, s) in enumerate(cells) if t == "markdown" and "**the fp32 reference**" in s)
    assert defined < lead and cells[defined][1].startswith("## The needle")
    assert "**The two distances**" not in _markdown("04_batch_invariance")  # no second definition further down


# D6 (04): four caveats recurred: query block 0 read right (every *Past 16 requests* paragraph and the analogs' How to
# read it), flex's reduction order assumed (four times), the narrower replay (twice), notebook 01's *Crash or wrong
# answer: what decides* (five times). Each is said once where it matters and pointed back to.


def test_d6_block_0_is_explained_once_and_pointed_to():
    from test_teaching_03_05 import _h200_like

    from flexfix.edition.narrative import invariance as story

    md = _flat(_markdown("04_batch_invariance"))
    assert md.count("Query block 0 is read right") == 1
    assert "reads its own entries right, so its needle can come out bitwise equal" not in md  # the analogs' bullet
    said = _flat(story.kernel_sweep(_h200_like(), "t", defined_under="section *The needle*"))
    assert "A bitwise-equal cell at `first` is query block 0's needle" not in said
    assert "How query block 0 comes into it: *The `graph` launch* above." in said
    alone = _flat(story.kernel_sweep(_h200_like(), "t"))  # a paragraph said on its own still explains it
    assert "A bitwise-equal cell at `first` is query block 0's needle" in alone


def test_d6_the_assumption_the_narrower_replay_and_notebook_01_are_said_once():
    md = _flat(_markdown("04_batch_invariance"))
    why = md.split("## Why: the reduction order")[1].split("```")[0]
    assert md.count("we assume flex") == 1 and "we assume flex" in why
    assert "not that flex follows it" not in md and "we expect flex" not in md
    assert md.count("never **wider** as vLLM does") == 1 and "it does not test vLLM's own, wider one" not in md
    assert "Crash or wrong answer: what decides" not in md  # the generated section's lines name it, once
    assert md.count("notebook 01 measures what decides") == 1


def test_d6_the_crash_or_wrong_section_names_notebook_01_once_whatever_crashed():
    from flexfix.edition.narrative.misread import _crashed_and_wrong

    analog = pd.DataFrame({"config": ["analog, page-by-page softmax, frozen, as_strided"], "batch": [17]})
    analog = analog.assign(position="first", outcome="index_error", bitwise_equal=None)
    wrong = analog.assign(config="flex, vllm options, graph, as_strided", outcome="wrong_result", bitwise_equal=False)
    said = _crashed_and_wrong({"a": analog, "w": wrong}, {}, ["a"], ["w"])
    assert said.count("*Crash or wrong answer: what decides*") == 1


# D10 (04): "page 0 of the cache is the **null page**" was defined in the words list and never used again: it is now
# said only in the parameter it belongs to.


def test_d10_the_null_page_is_not_an_unused_word():
    assert "null page" not in _markdown("04_batch_invariance")
    assert "NUM_PAGES = 2048  # KV pages in the cache (page 0, vLLM's null page, belongs to no request)" in _code(
        "04_batch_invariance"
    )


# D11 (05): "*Note on a CPU run only* (... a GPU run skips this note ...)" was static markdown, printed in the GPU
# edition right before the method. It is now printed by the CPU branch of the validating cell, on a CPU run only.


def test_d11_the_cpu_note_is_printed_on_a_cpu_run_only():
    md, code = _flat(_markdown("05_cost")), _code("05_cost")
    assert "Note on a CPU run only" not in md and "a GPU run skips this note" not in md
    branch = code.split('if device == "cpu":')[1].split("this_run = ")[0]
    assert "CPU run: no CUDA graphs and no L2 flush" in branch and "there is no L2 table" in branch
    assert "leave out `graph_speedup` and" in branch and "`bi_overhead`, which need a graph replay" in branch
    assert md.split("## How the kernel is timed")[1].strip().startswith("On a GPU (a CPU run says under its first")


# D12 (05): this run's KV bullet said "One program per query block and query head" several screens before *program*
# was defined, in the Bandwidth bullet of How to read it. It is now defined under *How the kernel is timed*, before the
# first timing table, and the Bandwidth bullet uses it without defining it again.


def test_d12_program_is_defined_before_the_first_sentence_that_counts_programs():
    import json

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "05_cost.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"]]
    defined = next(i for i, s in enumerate(cells) if "the sentences under the timing tables count **programs**" in s)
    first = next(i for i, s in enumerate(cells) if "story.kernel_timing(kernel" in s)
    assert cells[defined].startswith("## How the kernel is timed") and defined < first
    md = _flat(_markdown("05_cost"))
    assert md.count("one instance of the compiled Triton kernel") == 1
    assert "one program (defined under *How the kernel is timed*)" in md


# D1, D4 (03): *misread* was used (the label inside a misread run) before The numbers defined it; the query block's
# gloss spoke of "these runs" not recording the launch tile, in a notebook that launches no kernel.


def test_d1_d4_misread_is_a_word_before_its_first_use_and_no_run_aside():
    md = _markdown("03_stride_layouts")
    words = md[md.index("**Words used below.**") : md.index("**What you will learn**")]
    assert "is **misread** at a replay when the storage cell" in _flat(words)
    first_use = _flat(md).index("a label inside a misread run")
    assert _flat(md).index("**misread**") < first_use
    assert "which these runs do not record" not in md and "this notebook launches no kernel" in _flat(md)


# D2 (03): the narrower replay's sentence named "entries of their own row at another position", which figure 13_0
# shows no block reads there. With the layouts, the sentence names only the kinds of misread cell that occur.


def test_d2_the_misread_sentence_names_only_the_kinds_that_occur():
    from flexfix.edition.narrative.layouts import misreads
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    def lay(k_capture, k_replay):
        return layouts.stride_layout(
            copy_to_persistent_as_strided, "a", g=3, g_max=4, w_max=64, k_capture=k_capture, k_replay=k_replay
        )

    wider, narrower = lay(16, 48), lay(32, 16)
    said = _flat(misreads(layouts.layout_table([wider, narrower]), [wider, narrower]))
    grow, shrink = said.split("replayed at `K = 16`")
    assert "(another row's entries or entries of their own row at another position)" in grow
    assert "(another row's entries, or cells not written this step: 16 of them, in query block 2 only)" in shrink
    assert "own row" not in shrink
    # from the layouts themselves: no misread cell of the narrower replay holds its own row's entry
    flat = narrower.owner_replay.reshape(-1)
    for g, j in zip(*narrower.misread.nonzero()):
        assert int(flat[narrower.read_at[g, j]]) != g
    assert "story.misreads(layout_numbers, grow + shrink)" in _code("03_stride_layouts")


# D3 (03): the first takeaway ran to 13 lines, re-explaining the windows and never_written with nested parentheses
# and three cross-references; the second bullet of What you will learn was as dense. Both are cut to their point.


def test_d3_the_first_takeaway_and_the_learn_bullet_are_short():
    md = _markdown("03_stride_layouts")
    takeaway = md.split("## Takeaways")[1].split("\n* ")[1]
    assert len(takeaway.splitlines()) <= 8
    assert "(the lines whose `K_replay`" not in takeaway and "the sentence under it names them" not in takeaway
    learn = md.split("**What you will learn**")[1].split("\n* ")[2]
    assert len(learn.splitlines()) <= 3 and "`never_written`" not in learn


# D7 (04): the H100 crash handling said part2's crashes twice (its own bullet, and the first recording's stop), and
# "Two recordings in one line" said the first recording's stop a third time. Each is said once; the others point.


def test_d7_the_h100_crash_facts_are_said_once():
    from flexfix.edition.narrative import invariance as story
    from flexfix.edition.narrative.crash_records import crash_handling

    table, provs = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    said = crash_handling(table, "the H100", provs).data
    assert said.count("21 of 21 crashed") == 0 and said.count("crashed in 21 cells of 21") == 1
    assert said.count("its first crash was at 17 first") == 2  # one line per configuration and recording
    assert "recorded those cells apart (its line below)" in said
    lines = _flat(story.kernel_sweep(table, "the H100", defined_under="x", provenance=provs))
    assert "the records do not say, and the missing cells are no evidence either way" not in lines
    assert "the *Crash handling* lines below say what its records show of why" in lines
    # said on its own (no crash-handling lines after it), the sentence keeps its own reading
    alone = _flat(story.kernel_sweep(table, "the H100", provenance=provs))
    assert "the missing cells are no evidence either way" in alone


# D8 (04): "Crash handling, from the records of this run (cuda): no cell crashed" stood in a run whose CPU analogs
# crashed in 21 cells. The line now names the sweep it reads, and says "no cell of this sweep crashed".


def test_d8_the_no_crash_line_is_scoped_to_its_sweep():
    from flexfix.edition.narrative.crash_records import crash_handling

    code = _code("04_batch_invariance")
    assert "sweep_name = f\"this run's {'GPU ' if device == 'cuda' else ''}sweep ({device})\"" in code
    assert "crash_records.crash_handling(kernel, sweep_name)" in code
    calm = pd.DataFrame([_cell("flex, vllm options, graph, sliced", 1, "first", "ok", 0.0, 0.001)])
    said = crash_handling(calm, "this run's GPU sweep (cuda)").data
    assert "from the records of this run's GPU sweep (cuda):* no cell of this sweep crashed" in said


# D9 (04): the engine section's How to read it was one paragraph of about 15 sentences mixing the patch's history,
# the run-to-run control, a prefix-cache conjecture, the model-size confound and greedy degeneracy. Each is now a
# point of its own.


def test_d9_the_engine_reading_is_one_point_a_time():
    md = _markdown("04_batch_invariance")
    part = md.split("*How to read it*, one point at a time:")[1].split("## Takeaways")[0]
    points = [p for p in part.split("\n* ") if p.strip()]
    assert len(points) >= 6
    for title in ("**A row.**", "**Why `VLLM_BATCH_INVARIANT=1` runs at all.**", "**The `N = 1` column**"):
        assert sum(p.strip().removeprefix("* ").startswith(title) for p in points) == 1, title
    conjecture = next(p for p in points if "prefix cache" in p)
    assert "conjecture" in conjecture and "PR #40842" not in conjecture and "degenerate" not in conjecture
    assert "*How to read it:* a row is invariant" not in md


# D15 (05): the warm-up count, VLLM_ENABLE_V1_MULTIPROCESSING and one child process per engine were said to be this
# code's settings in three paragraphs (the workload line, the setup line, The evidence: the runs), and the reverse
# runs' commits were listed again after the Commits line. Each is said once.


def test_d15_the_setup_caveats_are_said_once():
    from flexfix.edition.narrative.cost_runs import engine_commits, engine_workload
    from flexfix.edition.narrative.cost_setup import engine_setup

    engines, speed = _engines_and_speed()
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    provs = schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)[1]
    workload, setup = _flat(engine_workload(speed, engines)), _flat(engine_setup(engines).data)
    md = _flat(_markdown("05_cost"))
    for said in ("child process", "warm-up", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        assert said in setup and said not in workload, said
    evidence = md.split("**The evidence: the runs.**")[1].split("### First")[0]
    assert "child process" not in evidence and "VLLM_ENABLE_V1_MULTIPROCESSING" not in evidence
    assert "the environment variable" not in evidence and "not the same setup again" not in evidence
    commits = _flat(engine_commits(names, provs))
    reverse = commits.split("**The reverse-order runs are not the same setup again**")[1]
    assert not any(str(p["git_commit"])[:10] in reverse for p in provs)
    assert "on another commit" in reverse
