"""Notebooks 06 and 07 as a newcomer read their published GPU edition at cd643ab (review r0607, round 6): one test
per finding fixed."""

import pandas as pd
from test_teaching_round4_06_07 import DATA, ROOT, _code, _markdown, _nb

from flexfix.edition import tables
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.plots import serving as serving_plots
from flexfix.edition.tables import guard as guard_tables
from flexfix.edition.tables import serving as serving_tables
from flexfix.integration import serving
from flexfix.integration.serving import run as serving_run

FAKE = ROOT / "tests" / "fake_vllm_server.py"


def _recorded():
    return serving.recorded_run(DATA)


def _fake(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))


def _fake_bi0(moved: int, n: int) -> pd.DataFrame:
    """A FAKE patched_bi0 scenario whose batch of ``n`` had ``moved`` requests with other logprobs, same tokens."""
    differ = [
        {"index": i, "tokens_equal": True, "logprobs_bitwise_equal": False, "max_abs_logprob_diff": 1e-5 * (i - 15)}
        for i in range(n - moved, n)
    ]
    stage = {"stage": "together", "requests": n, "ok": n, "errored": 0, "compared": n, "bitwise_equal": n - moved,
             "tokens_differ": [], "logprobs_differ": [d["index"] for d in differ], "differ": differ,
             "max_abs_logprob_diff": max(d["max_abs_logprob_diff"] for d in differ)}  # fmt: skip
    row = {"scenario": "patched_bi0", "model": "tiny", "status": "differs", "ima_in_log": False, "plugin_lines": 0,
           "server_exited_with": None, "requests": [n], "command": ["python", "tests/fake_vllm_server.py"],
           "records": [{"stage": "alone", "requests": n, "ok": n, "errored": 0}, stage]}  # fmt: skip
    return pd.DataFrame([row])


# 06


def test_06_a1_the_logprob_distance_is_not_said_over_a_wrong_count():
    """A1: 'over the 4 with the same tokens' where all 20 had the same tokens (4 had other logprobs)."""
    table = _fake_bi0(4, 20)
    stages = tables.stage_table(table)
    said = serving_story.scenarios(table, stages, "t")
    same = stages.set_index("stage").loc["together", "max_logprob_diff_same_tokens"]
    moved = serving_tables.differences(table)
    assert same == moved["max_abs_logprob_diff"].max()  # the bitwise-equal ones add nothing to the maximum
    assert f"where the tokens were the same, logprobs moved by up to {same:.3g}" in said  # round 8 D15
    assert "over the 4 with the same tokens" not in said
    text = _markdown("06_serving")
    assert "so it is also the largest difference among those whose logprobs moved" in text


def test_06_a2_the_fake_server_says_it_perturbs_only_the_requests_after_the_first_16(capsys):
    """A2: 'perturbs the logprobs ... of any batch of more than 16 requests' read as every request of such a batch."""
    serving.notebook_plan("cpu", False, ["patched_bi0"], None, [20], None, 8, FAKE)
    out = " ".join(capsys.readouterr().out.split())
    assert "perturbs the logprobs (FLEXFIX_PATCH=1 with VLLM_BATCH_INVARIANT=0) of any batch" not in out
    assert "changes only the logprobs of the requests after a batch's first query block" in _markdown("06_serving")


def test_06_b4_the_servers_start_times_are_the_recordings_not_a_typed_estimate():
    """B4: 'minutes per scenario to start' and 'two to three minutes each' where the recording has about one."""
    table, _ = _recorded()
    said = serving_story.what_runs("cuda", {"fake_server": "x.py"}, DATA)
    start, total = table["startup_seconds"], table["seconds"]
    assert f"took {start.min():.0f}–{start.max():.0f} s to become healthy" in said
    assert "s per scenario" not in said and total.notna().all()  # round 8 B6: no table shows it
    assert "minutes per scenario" not in said
    assert "two to three minutes" not in _code("06_serving")


def test_06_c5_c6_emulation_is_in_the_title_only_and_not_run_is_one_dotted_box():
    """C5: a dashed outline meant both emulated and not run, and the emulated swatch matched no bar; C6: the caption
    said dotted outline, the drawing a dashed one with a dotted fill, the swatch a dashed one without."""
    table, _ = _recorded()
    for fig in (serving_plots.serving_figure(_fake(table), "fake"), serving_plots.serving_figure(table, "rec")):
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert not any("emulated" in label.lower() for label in labels)
        outlined = [p for p in ax.patches if p.get_width() > 0 and p.get_linewidth() > 0]
        assert outlined and all(p.get_linestyle() == ":" and not p.get_hatch() for p in outlined)
        assert all(p.get_facecolor()[:3] == (1, 1, 1) for p in outlined)  # only the not-run placeholder
        handles = dict(zip(labels, ax.get_legend().legend_handles))
        swatch = handles[serving_plots.NOT_RUN]
        drawn = outlined[0]  # what is drawn: the legend copy says "solid" for any dash pattern, so compare those
        assert swatch._dash_pattern == drawn._dash_pattern and swatch._dash_pattern[1]  # dotted, as drawn
        assert not swatch.get_hatch() and swatch.get_linewidth() == drawn.get_linewidth() > 0
    fake = serving_plots.serving_figure(_fake(table), "fake").axes[0]
    assert fake.get_title().startswith(serving_plots.EMULATED) and "faded" in fake.get_title()
    legend = dict(zip([t.get_text() for t in fake.get_legend().get_texts()], fake.get_legend().legend_handles))
    assert (
        legend["error"].get_alpha() == serving_plots.EMULATED_ALPHA
    )  # the swatch faded as its bar is (round 9: as far as the rest)
    text = _markdown("06_serving")
    assert "a white box with a dotted outline and its words inside" in text and "dashed outline" not in text


def test_06_d7_goal_terms_are_defined_right_after_the_goals():
    """D7: FULL CUDA graph, query block, capture size, padded up, max_num_seqs and the variance model used in the
    goals, defined only later."""
    first = " ".join("".join(_nb("06_serving")["cells"][0]["source"]).split())
    for term in ("a **query block** is", "a **FULL CUDA graph** captures", "a **capture size** is", "**padded up**",
                 "`max_num_seqs` is the most requests", "the **variance** model is"):  # fmt: skip
        assert term in first, term


def test_06_d10_first_differences_define_their_columns_and_show_one_index(capsys):
    """D10: first_token_mismatch undefined; the row index 79 beside the column `index` 31."""
    table, _ = _recorded()
    first = serving_tables.first_differences(table)
    out = " ".join(capsys.readouterr().out.split())
    assert "`first_token_mismatch` is the position (from 0) of its first generated token that differs" in out
    assert "index" not in first.columns and "request" in first.columns
    assert list(first.index) == list(range(len(first)))
    found = serving_tables.differences(table)
    assert set(first["request"]) <= set(found["index"])


def test_06_d12_the_run_lines_and_counts_read_as_sentences(capsys):
    """D12: 'illegal_memory_access (20 requests errored, 0 of 0 comparisons differ', '20 answer(s) ... 2 stage(s)',
    'together 20: 0 of 20 answered'."""
    assert serving_run._what(20, 0, 0) == "20 requests failed; no answer could be compared"
    assert "1 request failed" in serving_run._what(1, 3, 0)
    table, _ = _recorded()
    details = list(serving_tables.scenario_table(table)["detail"])
    assert not any("comparisons differ" in d or "0 of 0" in d for d in details)
    stock = table.set_index("scenario").loc["stock"]
    assert details[0].startswith(f"{int(stock['records'][1]['errored'])} requests failed; no answer could be compared")
    serving_tables.first_differences(table)
    out = capsys.readouterr().out
    assert "answer(s)" not in out and "stage(s)" not in out
    assert f"{len(serving_tables.differences(table))} answers differ from their reference" in out
    said = serving_story.scenarios(table, tables.stage_table(table), "t")
    assert "0 of 48 answered" not in said and "Evidence:" not in said
    assert "In short:" in said and "Stage by stage" not in said  # round 8 D15: the counts are the stage table's


def test_06_d13_the_manager_demo_times_the_stop_apart(manager_demo_table):
    """D13: ignore_sigterm stopped faster than healthy though it waited out the grace period, unexplained."""
    demo = manager_demo_table.set_index("case")  # serving.manager_demo against the FAKE server (tests/conftest.py)
    stop = demo["seconds, SIGTERM to stopped"]
    assert stop["ignore_sigterm"] >= demo.loc["ignore_sigterm", "grace, s"] > stop["healthy"]
    stopped = stop.drop("exit_at_start")  # round 7: n/a there, the server had exited before the SIGTERM
    assert (demo["seconds, start to stopped"].drop("exit_at_start") >= stopped).all()
    assert demo.loc["exit_at_start", "seconds to healthy"] == "never"
    text = _markdown("06_serving")
    assert "`seconds, SIGTERM to stopped` is the stop alone, where the grace period shows" in text


def test_06_d14_the_scenario_table_is_explained_under_it():
    """D14: the scenario table's columns were explained only inside the next paragraph, about the stage table."""
    cells = _nb("06_serving")["cells"]
    # round 15: the recorded GPU run comes first, so the columns are explained just before its tables
    at = next(i for i, c in enumerate(cells) if "serving.show_recorded(DATA_DIR)" in "".join(c["source"]))
    after = " ".join("".join(cells[at - 2]["source"]).split())
    for column in ("`requests`", "`outcome`", "`detail`", "`ima_in_log`", "`plugin_lines`", "`server`",
                   "`startup_seconds`"):  # fmt: skip
        assert column in after, column
    assert "`bitwise_equal`" in "".join(cells[at - 1]["source"])  # the stage table's paragraph follows, then its cell


# 07


def test_07_a3_mutant_captures_are_counted_by_mutant_not_by_engine():
    """A3: 'in 4 engines' where each mutant ran several engines; the count is of the mutants' guarded runs."""
    view = guard_tables.mutant_table(guard_tables.recorded(DATA)["guard026_mutants"][0])
    said = guard_story.mutants(view)
    assert "in 4 engines" not in said
    path = view["graphs captured through"].iloc[0]
    assert (view["graphs captured through"] == path).all()
    assert f"Graphs captured through {path} in the guarded run of each mutant." in said


def test_07_d8_terms_come_before_the_first_table_and_the_runner_column_is_tied_to_its_tables():
    """D8: BlockMask, kv_num_blocks, model runner, query block defined after the tables that use them; the engine
    columns explained after the live table; the model-runner remark beside tables without that column."""
    cells = _nb("07_replay_guard")["cells"]
    first_table = next(i for i, c in enumerate(cells) if "display(steps)" in "".join(c["source"]))
    before = " ".join(
        " ".join("".join(c["source"]) for c in cells[:first_table] if c["cell_type"] == "markdown").split()
    )
    for term in ("a **query block** is the 16 query tokens", "`BlockMask` is FlexAttention's map", "`kv_num_blocks`,",
                 "the **model runner** is", "**V1 runner**", "`CUDAGraphWrapper`", "`CudaGraphManager`"):  # fmt: skip
        assert term in before, term
    live = next(i for i, c in enumerate(cells) if "guard_sets.live(" in "".join(c["source"]))
    columns = " ".join("".join(cells[live - 1]["source"]).split())
    for column in ("`replays checked`", "`first alarm at replay`", "`first alarm's graph, tokens`",
                   "`graphs captured through`"):  # fmt: skip
        assert column in columns, column
    text = _markdown("07_replay_guard")
    assert "Terms the tables use" not in text and "(the tables' `model runner` says" not in text
    false_alarms = next(c for c in cells if "## No false alarms" in "".join(c["source"]))
    assert "These tables' `model runner` column says" in " ".join("".join(false_alarms["source"]).split())
    assert "model runner" in guard_tables.false_alarms(guard_tables.recorded(DATA)["guard026_false_alarms"][0])


def test_07_d9_bi0_serving_without_batch_variance_is_explained_from_the_data():
    """D9: 06 teaches BI=0 moves logprobs; 07's BI=0 tiny servers came out bitwise equal, with no word why."""
    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(served, [("guard_eager", "patched_tiny")])
    said = guard_serving.serving(served, agree)
    assert (served["VLLM_BATCH_INVARIANT"].astype(str) == "0").all()
    assert "Every one of these servers ran with `VLLM_BATCH_INVARIANT=0`" in said
    assert "on the `tiny` model no request answered otherwise in these batches than alone" in said  # round 20: A4
    bi1 = served.assign(VLLM_BATCH_INVARIANT=["1"] * len(served))
    assert "no request answered otherwise in these batches" not in guard_serving.serving(bi1, agree)


def test_07_d11_d12_eager_text_and_sentence_read_plainly():
    """D11: 'so that a misread there shows as a wrong answer' under eager, where none can; D12: 'requests bitwise
    equal (token ids and logprobs) the BI=0 engine: 17 of 17 at 17'."""
    text = _markdown("07_replay_guard")
    assert "so that a misread there shows as a wrong answer" not in text
    assert "only to give the guard many replays" in text  # round 9: reworded
    rec = guard_tables.recorded(DATA)
    eager = rec["guard_stock_eager"][0]
    equal = guard_tables.eager_vs_reference(eager, rec["guard_patched_reference"][0])
    said = guard_story.eager_equal(equal, guard_tables.engine_guard(eager))
    r = equal.iloc[0]
    assert "bitwise equal to the patched engine's: the BI=0 engine, " in said
    assert f"{int(r['bitwise equal'])} of {int(r['of'])} in a batch of {int(r['requests'])}" in said
    assert "bitwise equal (token ids and logprobs) the" not in said


def test_07_d15_the_install_parenthesis_has_a_verb():
    """D15: '(it is on no package index; the Installing section of the repository's README, which is not part of
    this edition)'."""
    text = _markdown("07_replay_guard")
    assert "(it is on no package index). Without an" in text  # round 9: the install steps are in the notebook
