"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 13): one test per finding fixed, each tying the
sentence or table to the data or code it states."""

import pandas as pd
import pytest
from test_teaching_round4_06_07 import DATA, _nb
from test_teaching_round12_06_07 import _flat

from flexfix.edition import tables
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_dispatch, guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration.serving.recording import recorded_run
from flexfix.measure.engine_sweep import CAPTURE_SIZES


def _cells(name: str, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in _nb(name)["cells"] if c["cell_type"] == kind]


@pytest.fixture(scope="module")
def recorded():
    return guard_tables.recorded(DATA)


@pytest.fixture(scope="module")
def stopped(recorded):
    return guard_tables.stopped_runs(recorded)


@pytest.fixture(scope="module")
def dispatch(stopped):
    return guard_dispatch.decode_dispatch(guard_tables.dispatch_cases(stopped))


def _serve():
    table, _ = recorded_run(DATA)
    return table, tables.stage_table(table)


# A1: the batched answers (against alone) and the streamed one (against its non-streamed answer) counted apart


def test_06_a1_batched_and_streamed_answers_are_counted_against_their_own_references():
    table, stages = _serve()
    said = _flat(serving_story.scenarios(table, stages, "t"))
    lead = _flat(serving_story.result_lead(DATA))
    for _, sc in table.iterrows():
        mine = stages[stages.scenario == sc.scenario]
        batch, stream = mine[mine.stage == "together"], mine[mine.stage == "stream"]
        n, equal = int(batch.compared.fillna(0).sum()), int(batch.bitwise_equal.fillna(0).sum())
        if sc.status not in ("ok", "differs") or not n:
            continue
        if equal == n:
            words = f"all {n} batched answers were bitwise the same as the same request alone"
        else:
            words = f"{'all ' + str(n) if equal == 0 else f'{n - equal} of {n}'} batched answers differed from"
        assert words in said and words in lead
        if int(stream.compared.fillna(0).sum()) == 1:
            verb = "equalled" if int(stream.bitwise_equal.fillna(0).sum()) else "differed from"
            assert f"the streamed answer {verb} its non-streamed one" in said
    assert "in a batch or streamed" not in said and "in a batch or streamed" not in lead
    # the recorded patched_bi0: no batched answer equal to alone, so 'In short' says 'no batched answer', not 'some'
    bi0 = stages[(stages.scenario == "patched_bi0") & (stages.stage == "together")]
    assert int(bi0.bitwise_equal.sum()) == 0
    assert "in patched_bi0, every request was answered, but no batched answer bitwise as alone" in said


def test_06_a1_a_stream_that_differs_alone_is_not_said_as_a_batch_difference():
    table, stages = _serve()
    sc = table[table.scenario == "patched_bi1"].iloc[0].copy()
    sc["status"] = "differs"
    mine = stages[stages.scenario == "patched_bi1"].copy()
    at = mine.index[mine.stage == "stream"]
    mine.loc[at, "bitwise_equal"], mine.loc[at, "same_tokens_other_logprobs"] = 0, 1
    said = serving_story.meaning(sc, mine)
    assert "batched answers were bitwise the same as the same request alone" in said
    assert "the streamed answer differed from its non-streamed one" in said
    one = pd.DataFrame([sc]).assign(scenario="x")
    assert "but not every streamed answer to its non-streamed one" in serving_story.conclusion(
        one, mine.assign(scenario="x")
    )


def test_06_a1_the_markdown_names_both_references():
    text = _flat("\n".join(_cells("06_serving", "markdown")))
    assert "the streamed answer with its non-streamed one" in text
    assert "and the streamed answer against its non-streamed one" in text


# B1: the graph counts are shown for every engine they are claimed of


def test_07_b1_the_stopped_engines_table_shows_graphs_captured(recorded, stopped, dispatch):
    view = guard_tables.engine_guard(stopped)
    assert "graphs captured" in view.columns and str(view["graphs captured"].dtype) == "Int64"
    for (_, r), shown in zip(stopped.iterrows(), view["graphs captured"]):
        assert shown == guard_tables.guard_summary(r["records"]).get("graphs_captured")
    engines = [stopped, recorded["guard_false_alarms"][0], recorded["guard026_false_alarms"][0]]
    text = _flat(guard_serving.recorded_sizes(dispatch, engines))
    assert "in every engine that recorded a count (the `graphs captured` column of the table below" in text
    for m in sorted(set(view["max_num_seqs"])):
        assert f"{len([s for s in CAPTURE_SIZES if s <= m])} for `max_num_seqs` {m}" in text
    wrong = stopped.copy()
    wrong.at[0, "records"] = [
        ({**x, "graphs_captured": 19} if x.get("kind") == "guard" else x) for x in wrong.at[0, "records"]
    ]
    assert "counted 19" in guard_serving.recorded_sizes(dispatch, [wrong])


# B2: no 'wrong token' without a comparison


def test_07_b2_the_stopped_sentence_claims_no_wrong_token_it_did_not_compare(stopped):
    engines = guard_tables.engine_guard(stopped)
    said = _flat(guard_story.stopped(engines, "t"))
    assert "wrong token" not in said
    assert ("illegal_memory_access" in set(engines.outcome)) == ("none reached an illegal memory access" not in said)
    quiet = engines[engines["replays checked"] == 0]
    assert len(quiet) and "replayed no FULL graph (its `replays checked`: 0" in said
    assert "its answers are not compared with a reference here" in said


# D5: the dispatch table computed with the engines' own capture list


def test_07_d5_the_dispatch_table_uses_the_engines_capture_list(dispatch):
    assert dispatch.attrs["capture_sizes"] == sorted(CAPTURE_SIZES)
    for _, r in dispatch.iterrows():
        padded = min(s for s in CAPTURE_SIZES if s >= r["decode batch"])
        assert r["padded to"] == padded and r["largest capture size"] == max(CAPTURE_SIZES)
        assert r["largest FULL decode graph"] == max(s for s in CAPTURE_SIZES if s <= r["max_num_seqs"])
        assert r["runs with"] == ("FULL" if padded <= r["max_num_seqs"] else "PIECEWISE")
    said = _flat(guard_serving.capture_sizes(dispatch))
    assert f"ran with**: {', '.join(str(s) for s in sorted(CAPTURE_SIZES))}" in said
    assert "vLLM's default rule, used where no list is given" in said
    code = "\n".join(_cells("07_replay_guard", "code"))
    assert "dispatch = guard_dispatch.decode_dispatch(guard_tables.dispatch_cases(stopped_runs))" in code
    assert "in an engine given the capture list the recorded engines ran with" in _flat(
        "\n".join(_cells("07_replay_guard", "markdown"))
    )


# D1: the one-model answer as a table, the two recordings said apart


def test_06_d1_the_one_model_answer_has_a_server_machine_result_table():
    said = guard_serving.in_short(DATA)
    assert "| server | recorded on | result |" in said
    _, prov = recorded_run(DATA)
    assert (
        f"| `stock`, this notebook's recorded run | {prov['device_name']}, commit {prov['git_commit'][:10]} |" in said
    )
    served, served_prov = guard_tables.served(DATA)
    for n in [n for n in served.scenario if str(n).startswith("patched")]:
        assert f"| `{n}`, notebook 07's *Serving* | {served_prov['device_name']}" in said
    differ = (prov["device_name"], prov["git_commit"]) != (served_prov["device_name"], served_prov["git_commit"])
    assert ("on different machines or commits" in said) == differ


# D2, D6, D7, D8, D9, D10: the words a newcomer missed


def test_06_d2_blockmask_and_kv_indices_are_defined_in_06():
    terms = _flat(_cells("06_serving", "markdown")[0].split("Terms used from here on", 1)[1])
    assert "`BlockMask` is FlexAttention's map" in terms and "`kv_indices` holds the block numbers" in terms


def test_06_d4_the_recorded_run_intro_is_split_in_three():
    intro = next(c for c in _cells("06_serving", "markdown") if c.startswith("## The recorded GPU run"))
    assert "**How to read the dispatch table.**" in intro and "**What the tables count.**" in intro
    assert intro.index("copied to") < intro.index("**How to read") < intro.index("**What the tables count")


def test_07_d6_to_d10_words():
    md = _cells("07_replay_guard", "markdown")
    learn = md[0].split("**What you will learn**", 1)[1].split("Terms used", 1)[0]
    assert learn.count("\n* ") >= 5 and "* that it raises no alarm on correct engines" in learn  # D9
    false = _flat(next(c for c in md if "## No false alarms" in c))
    assert false.index("**The conclusion comes in the bold sentence") < false.index("cries wolf")  # D8
    assert "* `graphs captured` counts" in false and "* `tensors per graph`" in false  # D8
    assert "made by the guard of their own commits (their provenance lines), older than" in false  # D7
    alarms = _flat(next(c for c in md if "`alarms (field: kind)`" in c))
    assert "a sliding window lets each query token attend only to the most recent keys" in alarms  # D10
    assert "`appeared` is an alarm because the capture took the no-tensor branch" in alarms  # D6
    assert "`rswa_prefix_lens` is on no `NOT_READ` list" in alarms  # r20 D8: the rule is in No false alarms
