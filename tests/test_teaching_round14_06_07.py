"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 14): one test per finding fixed, each tying the
sentence or table to the data or code it states."""

import json
import re
from importlib import metadata

import pandas as pd
from test_teaching_round4_06_07 import DATA, ROOT, _nb

from flexfix.edition.glossary import _configured as default_config
from flexfix.edition.narrative import guard_dispatch, guard_result, guard_serving, serving_body, serving_manager
from flexfix.edition.tables import guard as guard_tables
from flexfix.edition.tables import serving as serving_tables
from flexfix.integration.serving.recording import recorded_run

FAKE = ROOT / "tests" / "fake_vllm_server.py"


def _flat(text) -> str:
    return re.sub(r"\s+", " ", str(text))


def _cells(name: str) -> list[str]:
    return ["".join(c["source"]) for c in _nb(name)["cells"]]


def _stopped(recorded) -> pd.DataFrame:
    return guard_tables.stopped_runs(recorded)


# A1


def test_07_a1_default_rule_said_as_many_or_more_per_max_num_seqs_from_both_lists():
    recorded = guard_tables.recorded(DATA)
    dispatch = guard_dispatch.decode_dispatch(guard_tables.dispatch_cases(_stopped(recorded)))
    said = _flat(guard_dispatch.engine_sizes(dispatch))
    assert "would give these engines more FULL decode graphs" not in said
    sizes = dispatch.attrs["capture_sizes"]
    same, more = [], []
    for m in dict.fromkeys(int(v) for v in dispatch["max_num_seqs"]):
        own = len([s for s in sizes if s <= m])
        new = len([s for s in default_config(m).compilation_config.cudagraph_capture_sizes if s <= m])
        (same if new == own else more).append(f"{m} ({own})" if new == own else f"{m} ({new} instead of {own})")
        assert new >= own
    if same:
        assert "as many for `max_num_seqs` " + same[0] in said
    for item in same + more:
        assert item in said
    if more:
        assert "more for `max_num_seqs` " + more[0] in said
    # the rule itself, on lists where the default has fewer
    text = guard_dispatch._default_against_own([1, 2, 4, 8, 16], {8: [1, 2, 4, 8], 16: [1, 2]})
    assert text == "FULL decode graphs: as many for `max_num_seqs` 8 (4); fewer for `max_num_seqs` 16 (2 instead of 5)"


# B1


def test_06_b1_the_fake_body_is_printed_and_compared_and_the_client_versions_are_what_is_known():
    body = serving_body.fake_body(str(FAKE))
    served, prov = recorded_run(DATA)
    fake = served.copy()  # a stand-in for this run: the recorded errors, whole objects
    said = str(serving_body.error_bodies(fake, served, prov, str(FAKE)))
    assert json.dumps(body) in said  # the raw body, as the FAKE server sends it
    assert f"`openai` {metadata.version('openai')}" in said
    recorded_forms = serving_body.printed_forms(served)
    assert recorded_forms and all(isinstance(p, dict) for p in recorded_forms)
    if all(p == body for p in recorded_forms):
        assert "printed the whole error object (equal to the FAKE body, field for field)" in _flat(said)
    if "openai" not in prov:
        assert "whose `openai` version the recording did not keep" in said
    # the message-only form of this run's client, against the recorded whole object: no cause claimed
    errors = serving_tables.failed_requests(served)
    assert len(errors)
    text = _flat("\n".join(_cells("06_serving")))
    assert "word for word" not in text and "depending on its version" not in text
    assert "serving_body.error_bodies(table, recorded_serve" in text


def test_06_b1_the_fake_server_sends_the_body_it_names():
    source = FAKE.read_text()
    assert "self.send_json(500, ENGINE_DEAD_BODY)" in source


# D2


def test_06_d2_the_compared_pairs_said_once_where_all_agreed():
    said = _flat(guard_serving.in_short(DATA))
    table, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(table, [p for p in guard_serving.PAIRS if set(p) <= set(table["scenario"])])
    if (agree["bitwise equal"] == agree["of"]).all():
        assert "answered every request bitwise alike" in said
        assert said.count("in a batch of") == agree["concurrent requests"].nunique()
    short = agree.copy()
    short.loc[0, "bitwise equal"] = short.loc[0, "of"] - 1
    each = guard_serving._pairs_said(short)
    assert "every request bitwise alike" not in each and f"{short.loc[0, 'of'] - 1} of" in each


# D3


def test_06_d3_the_first_completion_ratio_is_an_observation_with_its_times():
    demo = pd.DataFrame(
        [
            {"case": "healthy", "seconds importing openai": 0.6, "seconds of the completion": 0.185},
            {"case": "ignore_sigterm", "seconds importing openai": 0.0, "seconds of the completion": 0.173},
        ]
    )
    said = _flat(serving_manager.manager_times(demo))
    assert (
        "took 1.1 times as long as the later one (0.185 s against 0.173 s; each case starts its own server): "
        "not more than twice, so" in said
    )
    assert "is not more than twice as slow" not in said


# D4


def test_07_d4_the_not_read_rule_and_appeared_defined_once_and_referenced():
    cells = _cells("07_replay_guard")
    defining = [c for c in cells if "any field off the lists that was `None` at capture and holds a tensor" in c]
    assert len(defining) == 1 and "skips exactly the fields listed in" in _flat(defining[0])
    notes = _flat(next(c for c in cells if c.startswith("What some columns of that table mean")))
    assert "(defined once, in *No false alarms*, under **Decisions**)" in notes
    assert "Why that alarms although" not in notes


# D5


def test_07_d5_kv_block_size_and_row_width_before_the_first_table():
    cells = _cells("07_replay_guard")
    assert "holds the keys and values of 16 tokens" in _flat(cells[0])  # r20 A2: "(notebook 01's **KV page**)"
    first_table = next(i for i, c in enumerate(cells) if "guard_steps(REQUESTS" in c)
    before = _flat("\n".join(cells[:first_table]))
    assert "`K = 16 * cdiv(max_seq_len, 16)`" in before
    # the term and the formula come before the notebook's first table, and the later cell no longer repeats them
    after = _flat(cells[first_table + 1])
    assert "`K = 16 * cdiv" not in after and "`K` is the row width given before the table" in after


# D6


def test_07_d6_dispatch_table_names_its_engines_as_the_engine_table_does():
    recorded = guard_tables.recorded(DATA)
    stopped = _stopped(recorded)
    engines = guard_tables.engine_guard(stopped)
    dispatch = guard_dispatch.decode_dispatch(guard_tables.dispatch_cases(stopped))
    named = guard_dispatch.with_engines(dispatch, engines)
    assert list(named.columns)[0] == "engines"
    for _, row in named.iterrows():
        for name in row["engines"].split("; "):
            r = engines[engines["engine"] == name].iloc[0]
            assert int(r["max_num_seqs"]) == row["max_num_seqs"]
            assert str(row["decode batch"]) in str(r["requests"]).split(",")
    assert set(engines["engine"]) <= {n for e in named["engines"] for n in e.split("; ")}
    assert "guard_dispatch.with_engines(dispatch" in "\n".join(_cells("07_replay_guard"))


# D7


def test_07_d7_result_block_first_read_from_the_recordings():
    recorded = guard_tables.recorded(DATA)
    said = _flat(guard_result.result(recorded))
    engines = guard_tables.engine_guard(_stopped(recorded))
    refused = int((engines["outcome"] == "guard_refused").sum())
    assert f"in {refused} of {len(engines)} engines" in said
    equal = guard_tables.eager_vs_reference(recorded["guard_stock_eager"][0], recorded["guard_patched_reference"][0])
    assert f"answered {int(equal['bitwise equal'].sum())} of {int(equal['of'].sum())} compared requests" in said
    alarms = [guard_tables.false_alarms(recorded[n][0]) for n in ("guard_false_alarms", "guard026_false_alarms")]
    assert f"over {sum(int(a['replays checked'].sum()) for a in alarms)} replays checked" in said
    mutants = guard_tables.mutant_table(recorded["guard026_mutants"][0])
    named = int((mutants["fields named"].astype(str) != "none").sum())
    assert f"planted bugs the guard named {named} (" in said
    cells = _cells("07_replay_guard")
    assert "display(guard_result.result(recorded))" in cells[2]
    for section in ("*No false alarms*", "*What it costs*", "*Planted bugs of the class*"):
        assert section in said
    headings = [line for c in cells for line in c.splitlines() if line.startswith("## ")]
    assert any(h.startswith("## Planted bugs of the class") for h in headings)
    assert "## What it costs" in headings and "## No false alarms" in headings


# D9


def test_07_d9_the_two_builders_captures_told_apart():
    text = _flat("\n".join(_cells("07_replay_guard")))
    assert "Triton's metadata builder on vLLM 0.26.0 captures with sequences `max_model_len` long" in text
    assert "unlike FlexAttention's on vLLM 0.20.0, which captures with sequences one token long" in text
