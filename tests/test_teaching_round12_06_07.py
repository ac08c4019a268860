"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 12): one test per finding fixed, each tying the
sentence to the data or code it states."""

import re

import pandas as pd
import pytest
from test_teaching_round4_06_07 import DATA, _code, _markdown

from flexfix.edition import glossary, tables
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_information, guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration.serving import demo as serving_demo
from flexfix.measure.engine_sweep import CAPTURE_SIZES


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", str(text))


@pytest.fixture(scope="module")
def recorded():
    return guard_tables.recorded(DATA)


@pytest.fixture(scope="module")
def stopped(recorded):
    return guard_tables.stopped_runs(recorded)


@pytest.fixture(scope="module")
def dispatch(stopped):
    return glossary.decode_dispatch(guard_tables.dispatch_cases(stopped))


# A1


def test_07_a1_the_recorded_engines_capture_list_is_said_and_matches_every_graphs_captured(recorded, stopped, dispatch):
    """A1: 'graphs captured' 11 beside a default list with 19 FULL decode sizes up to 128: the engines ran flexfix's
    own cudagraph_capture_sizes; every recorded count is the number of its sizes up to the engine's max_num_seqs."""
    engines = [stopped, recorded["guard_false_alarms"][0], recorded["guard026_false_alarms"][0]]
    text = _flat(guard_serving.recorded_sizes(dispatch, engines))
    assert f"`cudagraph_capture_sizes` = {sorted(CAPTURE_SIZES)}" in text
    seen = set()
    for table in engines:
        for _, r in table.iterrows():
            captured = guard_tables.guard_summary(r["records"]).get("graphs_captured")
            if captured:
                m = guard_tables.max_num_seqs(r)
                assert captured == len([s for s in CAPTURE_SIZES if s <= m])  # the data agree with the list
                seen.add(m)
                assert f"{captured} for `max_num_seqs` {m}" in text
    assert 128 in seen and "11 for `max_num_seqs` 128" in text and "19" in text  # the default list's count too
    assert "the guard counted exactly that many FULL graphs captured" in text
    # the table's padded to, redone with the recorded list, holds for every row
    for _, r in dispatch.iterrows():
        padded = min(s for s in CAPTURE_SIZES if s >= r["decode batch"])
        assert padded == r["padded to"]
        assert ("FULL" if padded <= r["max_num_seqs"] else "PIECEWISE") == r["runs with"]
    assert "every row's batch pads to the same size, and runs with the same graph, as the table says" in text


def test_07_a1_a_count_or_a_row_the_list_does_not_give_is_said(recorded, stopped, dispatch):
    wrong = stopped.copy()
    wrong.at[0, "records"] = [
        ({**x, "graphs_captured": 19} if x.get("kind") == "guard" else x) for x in wrong.at[0, "records"]
    ]
    text = _flat(guard_serving.recorded_sizes(dispatch, [wrong]))
    assert "differ from that list in" in text and "counted 19" in text
    moved = dispatch.copy()
    moved["padded to"] = moved["padded to"].where(moved["decode batch"] != 32, 40)  # as the default list of 48 pads
    text = _flat(guard_serving.recorded_sizes(moved, [stopped]))
    assert "With that list the table's rows change: 32 in max_num_seqs 32 pads to 32 and runs with FULL" in text
    code = _code("07_replay_guard")
    assert "guard_serving.recorded_sizes(dispatch, engine_tables)" in code
    assert 'recorded["guard_false_alarms"][0], recorded["guard026_false_alarms"][0]' in code
    assert "not of vLLM's default list" in _markdown("07_replay_guard")


# A2


def test_07_a2_full_graphs_were_dispatched_and_refused_not_run(stopped, dispatch):
    text = _flat(guard_story.dispatch(dispatch, guard_tables.engine_guard(stopped)))
    assert "ran FULL graphs" not in text
    refused = guard_tables.engine_guard(stopped)
    n = int(
        ((refused["outcome"] == "guard_refused") & (refused["requests"] == refused["max_num_seqs"].astype(str))).sum()
    )
    assert f"were dispatched to FULL graphs (`runs with`: FULL), and the guard refused {n} such engines' FULL " \
        "replay before it ran" in text  # fmt: skip
    assert set(refused.loc[refused["outcome"] == "guard_refused", "first alarm at replay"]) == {1}


# D1


def test_06_d1_the_plain_answer_first_with_both_recordings_and_their_gpus():
    text = _flat(guard_serving.in_short(DATA))
    served, prov = guard_tables.served(DATA)
    from flexfix.integration.serving import recorded_run

    serve, serve_prov = recorded_run(DATA)
    assert text.startswith(
        "**Does the fix remove the crash, on one model?** Yes, by combining two recordings, on the `tiny` model: "
        "the stock"
    )
    stock = tables.stage_table(serve).query("scenario == 'stock' and stage == 'together'").iloc[0]
    assert f"failed {stock['errored']} of {stock['requests']} concurrent requests" in text
    assert f"on {serve_prov['device_name']}, commit {serve_prov['git_commit'][:10]}" in text
    assert f"on {prov['device_name']}, commit {prov['git_commit'][:10]}" in text
    assert serve_prov["device_name"] != prov["device_name"]  # two GPUs, both named
    stages = tables.stage_table(served).query("scenario.str.startswith('patched') and stage == 'together'")
    assert (stages["ok"] == stages["requests"]).all() and (stages["bitwise_equal"] == stages["compared"]).all()
    assert (
        "answered every request of the batches of 48 and 128, each bitwise the same as the same request alone" in text
    )
    assert "`patched_`:" not in text and "`patched_tiny` and `patched_tiny_again`: the fix" in text


# D2, D3


def test_06_d2_d3_the_fake_servers_differences_are_three_bullets_and_a_capture_size_counts_tokens():
    text = _markdown("06_serving")
    assert "* **unlike it**: * it fails at every batch of more than one query block, always;" in text
    assert "* it knows nothing of `max_num_seqs`, capture sizes or padding:" in text
    assert "* with `VLLM_BATCH_INVARIANT=0` it changes only the logprobs" in text
    assert "notebook 07's dispatch table shows a batch of more than one query block" not in text  # moved out
    assert "a **capture size** is a number of tokens in a step (a decode step holds one per request) that vLLM" in text
    assert "a batch size vLLM captured a graph for" not in text
    assert "a batch size a graph was captured for" not in _markdown("07_replay_guard")


# D4


def test_06_d4_one_line_says_what_the_sections_before_the_recording_ran_against():
    said = serving_story.skip_line({"fake_server": "tests/fake_vllm_server.py"})
    assert "this run's servers are the FAKE server** (what it shows and what it does not: the paragraph above)" in said
    assert "the real `vllm serve`, live" in serving_story.skip_line({"fake_server": None})
    assert "story.skip_line(run)" in _code("06_serving")


# D5


def test_06_d5_every_timing_column_shows_three_decimals():
    demo = pd.DataFrame(
        [
            {"case": "healthy", "seconds to healthy": 0.5, "seconds importing openai": 0.0,
             "seconds of the completion": 1.1, "seconds, SIGTERM to stopped": 0.1, "seconds, start to stopped": 1.7},
            {"case": "exit_at_start", "seconds to healthy": "never", "seconds importing openai": "n/a",
             "seconds of the completion": "n/a", "seconds, SIGTERM to stopped": "n/a",
             "seconds, start to stopped": 0.2},
        ]
    )  # fmt: skip
    shown = serving_demo.manager_view(demo)
    assert shown.loc[0, "seconds of the completion"] == "1.100" and shown.loc[0, "seconds, start to stopped"] == "1.700"
    assert shown.loc[1, "seconds to healthy"] == "never" and shown.loc[1, "seconds of the completion"] == "n/a"
    assert demo.loc[0, "seconds of the completion"] == 1.1  # the table itself stays numbers
    assert "display(serving.demo.manager_view(demo))" in _code("06_serving")
    source = open(serving_demo.__file__).read()
    assert "round(time.monotonic() - start, 3)" in source and not re.search(r"round\([^()]*\), 1\)", source)


# D6


def test_07_d6_the_eager_result_comes_before_its_tables_and_the_sweeps_are_said_uncompared():
    code = _code("07_replay_guard")
    assert code.index("display(story.eager_equal(") < code.index("display(guard_tables.engine_guard(eager_runs))")
    text = _markdown("07_replay_guard")
    assert "only to give the guard many replays to check; their answers are not compared" in text


# D7


def test_07_d7_the_planted_bug_engines_settings_are_said(recorded):
    runs, prov = recorded["guard026_mutants"]
    text = _flat(guard_information.mutant_settings(runs, tables.recorded_where([prov])))
    assert "the `tiny` model, 32 requests at once (`max_num_seqs` 32), prompts of 20 to 200 tokens" in text
    assert "`max_model_len` 1024" in text and "TRITON_ATTN" in text
    alarm = guard_tables.mutant_table(runs).set_index("mutant").loc["row_stride", "the first alarm found"]
    assert "shape [32, 64] -> [32, 1]" in alarm
    assert "64 blocks wide, `max_model_len` in KV blocks of 16 tokens" in text  # 1024 / 64
    assert "guard_information.mutant_settings(mutant_runs" in _code("07_replay_guard")


# D8


def test_07_d8_how_often_each_field_changed_is_counted_against_the_replays(recorded):
    table = recorded["guard026_false_alarms"][0]
    info, engines = guard_tables.information(table), guard_tables.false_alarms(table)
    text = _flat(guard_information.changed(info, engines))
    assert "at every replay the guard checked, `FlexAttentionMetadata.max_seq_len: number` (in 5 engines)" in text
    assert "`FlexAttentionMetadata.block_mask.kv_indices: shape` at 3752 of 3753, 3752 of 3753, 682 of 683 and 682 " \
        "of 683 replays (at every replay in the other engine)" in text  # fmt: skip
    assert "the recording does not say which replay that was" in text
    v1 = recorded["guard_false_alarms"][0]
    text = _flat(guard_information.changed(guard_tables.information(v1), guard_tables.false_alarms(v1)))
    assert "kv_indices: shape` (in 4 engines)" in text and "does not say which replay" not in text
    assert "almost every replay" not in _markdown("07_replay_guard")


# D9


def test_07_d9_the_cost_conclusion_comes_before_the_table_and_the_columns_are_bullets(recorded):
    cost = guard_tables.guard_cost(recorded["guard_cost"][0])
    lead, rest = guard_information.cost_parts(cost)
    assert str(lead).startswith("**The guard's checks took") and str(lead).endswith(".**")
    assert str(guard_story.cost(cost)) == f"{lead} {rest}"
    code = _code("07_replay_guard")
    assert code.index("display(cost_lead)") < code.index("display(guard_tables.guard_cost(cost))")
    assert code.index("display(guard_tables.guard_cost(cost))") < code.index("display(cost_rest)")
    text = _markdown("07_replay_guard")
    assert "* a **pair** is one repetition" in text and "* `checking, % of wall time`" in text
