"""Round 20 (a reading of the published edition), notebooks 06 and 07: each fix tied to the data or the source that
generates the sentence or table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _cells, _flat  # noqa: E402

from flexfix.edition import glossary, tables  # noqa: E402
from flexfix.edition.narrative import guard_serving  # noqa: E402
from flexfix.edition.narrative import serving as serving_story  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402
from flexfix.integration.serving.recording import recorded_run  # noqa: E402


def _markdown(name: str) -> str:
    return _flat("\n".join(c for k, c in _cells(name) if k == "markdown"))


def _code(name: str) -> str:
    return "\n".join(c for k, c in _cells(name) if k == "code")


# A1 (06) and A4 (07): the variance model was said to be "made so that batch variance shows (notebook 04)"; notebook
# 04 says only that VLLM_BATCH_INVARIANT=0 engines were observed to vary on it, even the same request alone a second
# time, and that the batch's share is not established. 06, 07 and the glossary now say what 04's data shows.

MADE_SO = ("made so that batch variance shows", "made to show batch variance", "looks for batch variance")


def test_06_a1_the_variance_model_is_described_by_what_notebook_04_saw():
    text = _markdown("06_serving") + _flat(_code("06_serving"))
    assert not any(claim in text for claim in MADE_SO)
    assert "on which notebook 04 saw engines with `VLLM_BATCH_INVARIANT=0` vary" in text  # round 22 (D1): once
    assert "even the same request alone run again" in serving_story.MODEL_REASONS["variance"]
    reason = serving_story.MODEL_REASONS["variance"]
    assert "made so" not in reason and "04 did not establish" in reason
    lead = _flat(serving_story.result_lead(DATA))
    assert "made so that batch variance shows" not in lead and reason in lead


def test_glossary_a1_the_variance_model_term_says_what_notebook_04_saw():
    text = _flat(glossary.markdown())
    assert not any(claim in text for claim in MADE_SO)
    assert "notebook 04 saw engines with `VLLM_BATCH_INVARIANT=0` vary (even the same request alone" in text
    assert "04 did not establish" in text


def test_07_a4_the_conclusion_does_not_say_the_variance_model_was_made_to_show_batch_variance():
    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(
        served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")]
    )
    text = _flat(guard_serving.serving(served, agree, DATA))
    assert "Every one of these servers ran with `VLLM_BATCH_INVARIANT=0`" in text  # the sentence A4 is about
    assert not any(claim in text for claim in MADE_SO)
    assert "on which notebook 04 saw `VLLM_BATCH_INVARIANT=0` engines vary even for the same request alone" in text
    assert "its recording does not establish" in text


# A2 (07): "Terms used from here on (notebook 01 shows each on the crash)" - notebook 01 names neither the model runner
# nor the forward context, and calls the KV block a KV page.


def test_07_a2_the_terms_say_which_are_notebook_01s_and_name_its_kv_page():
    first = _flat(_cells("07_replay_guard")[0][1])
    assert "notebook 01 shows each on the crash)" not in first
    assert "calls the KV block a **KV page**; the model runner and the forward context are new here" in first
    assert "a **KV block** (notebook 01's **KV page**)" in first


# A3 (07): the false-alarm engines were said to run "the engine sweeps of notebooks 01 and 04", shown in a `batch
# sizes` column that held notebook 04's sweep only; the table now shows 01's every-request sizes in their own column.


def test_07_a3_the_false_alarm_tables_show_both_notebooks_runs_apart():
    text = _markdown("07_replay_guard")
    assert "engine sweeps of notebooks 01 and 04" not in text
    assert "engine sweep of notebook 04" in text and "notebook 01's every-request check" in text
    recorded = guard_tables.recorded(DATA)
    for name in ("guard_false_alarms", "guard026_false_alarms"):
        raw = recorded[name][0]
        table = guard_tables.false_alarms(raw)
        assert "batch sizes" not in table and "engine sweep, batch sizes" in table, name
        every = table["every request alone and among"]
        assert list(every) == [",".join(map(str, r or [])) or "none" for r in raw["every_request"]], name
        tiny = table["engine"].str.startswith("tiny")
        assert (every[tiny] != "none").all() and (every[~tiny] == "none").all(), name  # as the prose says


# B1 (06): moved logprobs were read as the batch's doing; the recording has one repeat of a request, and notebook 04
# saw the same configuration differ with the same request alone.


def test_06_b1_moved_logprobs_are_not_put_down_to_the_batch():
    from flexfix.edition.narrative import serving_scope

    text = _markdown("06_serving")
    assert "mean the batch changed the arithmetic" not in text
    assert "whether the batch changed it or a second run alone would have too" in text
    assert "serving_scope.batch_or_run(recorded_serve" in _code("06_serving")
    table, _ = recorded_run(DATA)
    said = _flat(serving_scope.batch_or_run(table, tables.stage_table(table), DATA))
    assert "`patched_bi0`'s 176 differing batched answers" in said
    assert "with greedy sampling even the same request alone a second time differed" in said
    assert "the batch's share of those rows' differences is not established" in said  # round 22 (A3)
    assert "this recording does not establish" in said
    equal = table[table["scenario"] != "patched_bi0"]  # no differing batched answer: nothing to scope
    assert serving_scope.batch_or_run(equal, tables.stage_table(equal), DATA) == ""


# B2 (06): the request settings of the recorded servers were stated in prose, shown by no output; they are in the
# recording's provenance, and now printed under its provenance line.


def test_06_b2_the_recorded_request_settings_are_printed_from_the_recording():
    from flexfix.integration.serving.recording import request_settings

    _, prov = recorded_run(DATA)
    line = request_settings(prov)
    params = prov["parameters"]
    for key in ("max_tokens", "temperature", "sampling"):
        assert f"{key} {params[key]}" in line
    assert "this code's" in request_settings({"parameters": {}})
    text = _markdown("06_serving")
    assert "Sampling is seeded (temperature one" not in text
    assert "what the recorded run asked, as it saved it, is printed under its provenance line" in text


# B3 (07): "That is the code that ran, read from its source" of engines recorded at other commits.


def test_07_b3_this_commits_source_is_not_called_the_code_that_ran():
    text = _markdown("07_replay_guard")
    assert "is the code that ran" not in text
    assert "the stock engines above ran with `FLEXFIX_PATCH=0`" not in text
    assert "That is this commit's source; the engines were recorded at other commits" in text
    assert "*Serving* section's stock servers ran with `FLEXFIX_PATCH=0`" in text
    served, prov = guard_tables.served(DATA)
    for name in ("guard_error", "guard_eager"):  # the printed environment the sentence points to
        assert prov["parameters"]["environment"][name]["FLEXFIX_PATCH"] == "0"


# D1 (06): the recorded scenarios' results were printed twice, under the title and in *The recorded GPU run*.


def test_06_d1_the_recorded_results_are_said_once():
    table, _ = recorded_run(DATA)
    stages = tables.stage_table(table)
    lead = _flat(serving_story.result_lead(DATA))
    said = _flat(serving_story.scenarios(table, stages, "the recorded run", stated_above=True))
    for _, sc in table.iterrows():
        meaning = serving_story.meaning(sc, stages[stages["scenario"] == sc["scenario"]])
        assert meaning in lead and meaning not in said, sc["scenario"]
    assert "an illegal memory access in its log" in said and "is the one under the title" in said
    assert "stated_above=True" in _code("06_serving")
    fake = table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))
    assert serving_story.meaning(fake.iloc[1], stages[stages["scenario"] == "patched_bi1"], True) in _flat(
        serving_story.scenarios(fake, stages, "this run")
    )  # the FAKE run, stated nowhere above, keeps its results


# D3 (06): "as the FAKE server emulated it (no vLLM ran)" in every clause and bullet of the FAKE run's summary.


def test_06_d3_the_fake_disclaimer_is_said_once_per_summary():
    table, _ = recorded_run(DATA)
    fake = table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))
    said = _flat(serving_story.scenarios(fake, tables.stage_table(fake), "this run"))
    assert "In short, all emulated by the FAKE server:" in said
    assert "as the FAKE server emulated it" not in said and "the FAKE server emulated it, no vLLM ran" not in said
    assert said.count("(model none (FAKE))") == len(fake)


# D8 (07): what `error` and `eager` are for, said again after the served tables; D9: the cost paragraph's last sentence
# repeated the ratios of the sentence before it.


def test_07_d8_d9_explanations_are_not_repeated():
    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(
        served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")]
    )
    assert "is for a server that must keep answering" not in _flat(guard_serving.serving(served, agree, DATA))
    from flexfix.edition.narrative import guard as guard_story

    cost = _flat(guard_story.cost(guard_tables.guard_cost(guard_tables.recorded(DATA)["guard_cost"][0])))
    assert "is the firmer measure." in cost and "in single pairs" not in cost
    assert cost.count("of the tokens/s without it") == 2  # the ratios, once per request count
