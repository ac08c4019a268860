"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 17): one test per finding fixed, each tying the
sentence to the data, code or heading order it states."""

from pathlib import Path

import pandas as pd
from test_teaching_round4_06_07 import DATA
from test_teaching_round16_06_07 import _cells, _flat, _headings

from flexfix.edition import schemas
from flexfix.edition.narrative import guard_servers, guard_serving, serving_manager
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration.serving import scenarios

FAKE = str(Path(__file__).parent / "fake_vllm_server.py")


def _short(commit) -> str:
    return str(commit)[:10]


# A1: no single recording ran an unguarded stock server and a patched one: the answer combines two recordings


def test_06_a1_the_lead_says_no_recording_ran_both_and_names_each_machine():
    table, prov = guard_tables.served(DATA)
    _, serve_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    said = _flat(guard_servers.one_model(DATA))
    unguarded = [
        s
        for s, p, g in zip(table["scenario"], table["FLEXFIX_PATCH"], table["FLEXFIX_GUARD"])
        if str(p) != "1" and str(g).strip().lower() in {"", "0", "off", "none", "nan", "<na>"}
    ]
    assert not unguarded  # the recording: its stock servers all ran under the guard
    assert "No single recording ran a stock server without the guard and a patched server on one model" in said
    crashed = table[(table["status"] == "illegal_memory_access") | (table["ima_in_log"].astype(str) == "True")]
    assert crashed.empty and "none of its servers ended in an illegal memory access" in said
    for s in table["scenario"]:
        assert f"`{s}`" in said
    assert f"{serve_prov['device_name']}, commit {_short(serve_prov['git_commit'])}" in said
    assert f"{prov['device_name']}, commit {_short(prov['git_commit'])}" in said
    assert "ran stock and patched servers on one model" not in _flat(serving_story.result_lead(DATA))
    assert said in _flat(serving_story.result_lead(DATA))


def test_06_a1_the_lead_follows_the_recording_each_way(monkeypatch):
    table, prov = guard_tables.served(DATA)
    crashed = table.copy()
    crashed.loc[crashed["scenario"] == "guard_error", "status"] = "illegal_memory_access"
    monkeypatch.setattr(guard_tables, "served", lambda data_dir: (crashed, prov))
    said = _flat(guard_servers.one_model(DATA))
    assert "`guard_error` ended in an illegal memory access" in said and "none of its servers ended" not in said
    unguarded = table.copy()
    unguarded.loc[unguarded["scenario"] == "guard_eager", "FLEXFIX_GUARD"] = ""
    monkeypatch.setattr(guard_tables, "served", lambda data_dir: (unguarded, prov))
    said = _flat(guard_servers.one_model(DATA))
    assert "ran a stock server without the guard (`guard_eager`)" in said
    assert "No single recording" not in said


def test_06_a1_the_answer_is_qualified_and_cites_the_same_gpu_crash():
    said = _flat(guard_serving.in_short(DATA))
    assert "Yes, by combining two recordings, on the `tiny` model" in said
    debug, debug_prov = guard_tables.recorded(DATA, ["guard_debug"])["guard_debug"]
    _, prov = guard_tables.served(DATA)
    row = debug.iloc[0]
    assert row["model"] == "tiny" and not row["patched"] and row["guard"] == "log"
    assert row["status"] == "illegal_memory_access" and debug_prov["device_name"] == prov["device_name"]
    assert (
        f"On the patched servers' GPU ({debug_prov['device_name']}), in notebook 07's *vLLM's own check is blind to "
        f"it* (a recording of its own, flexfix commit {_short(debug_prov['git_commit'])}), a stock engine of the "
        "`tiny` model without the fix, sent a "
        f"batch of {row['generations'][0]} requests with its guard only logging (`guard=log`), ended in CUDA's "
        "illegal memory access" in said
    )
    assert "vLLM's own check is blind to it" in [h for _, h in _headings("07_replay_guard")]


def test_06_a1_the_same_gpu_sentence_follows_the_recording_each_way(monkeypatch):
    debug, debug_prov = guard_tables.recorded(DATA, ["guard_debug"])["guard_debug"]
    other = debug.copy()
    other["status"] = "ok"
    monkeypatch.setattr(guard_tables, "recorded", lambda data_dir, names: {"guard_debug": (other, debug_prov)})
    said = _flat(guard_servers.same_gpu_crash(DATA, "tiny", {"device_name": "another"}))
    assert "On another GPU" in said and "ended `ok`, without an illegal memory access" in said
    assert "the crash itself" not in said
    assert guard_servers.same_gpu_crash(DATA, "variance", {"device_name": "another"}) == ""


def test_06_a1_the_takeaway_says_the_answer_combines_two_recordings():
    takeaway = _flat(_cells("06_serving")[-1][1])
    assert "No single recording ran a stock server without the guard" not in takeaway  # round 22 (D1): the lead's
    assert "is answered by two recordings together: this notebook's stock crash and notebook 07's patched" in takeaway
    assert "whose result the last cell" not in takeaway
    cells = _cells("06_serving")
    at = next(i for i, (_, c) in enumerate(cells) if "guard_serving.in_short(DATA_DIR)" in c)
    recorded = next(i for i, h in _headings("06_serving") if h == "The recorded GPU run")
    after = min(i for i, _ in _headings("06_serving") if i > recorded)
    assert recorded < at < after and all(k != "code" for k, _ in cells[at + 1 : after])


# D7: the FULL-graph rule once; what max_num_seqs above 16 is not enough for


def test_07_d7_the_full_graph_rule_is_stated_once():
    cell = _flat(next(c for _, c in _cells("07_replay_guard") if "Which steps replay a FULL graph at all" in c))
    assert "The rule in full" not in cell and cell.count("misreads") == 1
    assert cell.count("captures FULL decode graphs only for batch sizes up to") == 1
    assert (
        "A `max_num_seqs` above 16 does not by itself make a batch of more than 16 requests replay FULL: its padded "
        "size must also be at most `max_num_seqs`" in cell
    )


# D8: where the largest every-request size comes from, and that those batches only add replays


def test_07_d8_the_every_request_sizes_are_said_plainly_and_hold_in_the_data():
    text = _flat("\n".join(c for k, c in _cells("07_replay_guard") if k == "markdown"))
    assert "only to give the guard many replays to check; their answers are not compared" in text
    assert "Their largest is one request below a kept batch" in text  # round 19 A1: no reason from a fault count
    eager = guard_tables.recorded(DATA, ["guard_stock_eager"])["guard_stock_eager"][0].iloc[0]
    assert max(eager["every_request"]) + 1 in eager["generations"]
    batches = guard_tables.engine_batches(guard_tables.recorded(DATA, ["guard_stock_eager"])["guard_stock_eager"][0])
    assert {"every request alone and among", "answers kept, batch sizes", "engine sweep, batch sizes"} <= set(batches)


# D12: SGLang's PaddingPolicy.ZERO defined where it is named


def test_07_d12_padding_policy_zero_is_defined():
    text = _flat("\n".join(c for k, c in _cells("07_replay_guard") if k == "markdown"))
    assert (
        "`PaddingPolicy.ZERO` keeps them (its option to fill the padded rows of its persistent buffers with zeros "
        "before a replay)" in text
    )


# D4: the first-completion ratio says what it shows


def _demo(first, later):
    return pd.DataFrame(
        [
            {"case": "healthy", "seconds importing openai": 0.6, "seconds of the completion": first},
            {"case": "ignore_sigterm", "seconds importing openai": 0.0, "seconds of the completion": later},
        ]
    )


def test_06_d4_the_ratio_sentence_says_what_it_shows_each_way():
    said = _flat(serving_manager.manager_times(_demo(0.171, 0.131)))
    assert "took 1.3 times as long as the later one (0.171 s against 0.131 s; each case starts its own server)" in said
    assert (
        "no cost of being the notebook's first request stands out" in said and "not more than twice, so no cost" in said
    )
    said = _flat(serving_manager.manager_times(_demo(0.5, 0.131)))
    assert "is still the slowest" in said and "stands out" not in said


# D1: RUN_SERVER=True said ignored where no GPU runs it


def test_06_d1_run_server_is_said_ignored_without_a_gpu(capsys):
    scenarios.notebook_plan("cpu", True, ["stock"], None, [20], None, 8, FAKE)
    assert "RUN_SERVER=True (ignored: no GPU, the device is cpu)" in capsys.readouterr().out
    scenarios.notebook_plan("cpu", False, ["stock"], None, [20], None, 8, FAKE)
    assert "ignored" not in capsys.readouterr().out
