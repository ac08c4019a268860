"""Notebook 07's views and sentences on the recorded GPU files: each claim checked against the data, and every
reader refusing a table that lost what it reads."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flexfix.edition import checks, results, schemas
from flexfix.edition.narrative import guard as story
from flexfix.edition.tables import guard as tg

DATA = Path(__file__).resolve().parents[1] / "data"
REC = tg.recorded(DATA)


def table(name):
    return REC[name][0]


def test_error_mode_stopped_every_engine_that_replayed_naming_kv_indices():
    engines = tg.engine_guard(pd.concat([table("guard_stock_error"), table("guard_stock_error_17")], ignore_index=True))
    refused = engines[engines.outcome == "guard_refused"]
    assert sorted(refused.requests) == ["128", "17", "32", "48", "48"]
    assert set(refused["fields named"]) == {"FlexAttentionMetadata.block_mask.kv_indices"}
    assert set(refused["first alarm at replay"]) == {1}
    quiet = engines[engines["replays checked"] == 0]  # 17 requests with graphs only up to 17 tokens: none holds 17
    assert list(quiet.requests) == ["17", "17"] and set(quiet.outcome) == {"ok"}
    text = story.stopped(engines[engines.guard == "error"], "here")
    assert "in 5 of 6 engines" in text and "at its replay 1 (over all its graphs)" in text  # reading r0607 D12


def test_eager_mode_gave_the_patched_engines_answers_bit_for_bit():
    equal = tg.eager_vs_reference(table("guard_stock_eager"), table("guard_patched_reference"))
    assert list(equal.requests) == [17, 32, 48, 128, 48]
    assert (equal["bitwise equal"] == equal["of"]).all() and list(equal["of"]) == [17, 32, 48, 128, 48]
    assert "bit for bit" in story.eager_equal(equal, tg.engine_guard(table("guard_stock_eager")))
    # without the guard, 17 requests served from a graph of 24: request 16 (query block 1) alone is wrong
    stock17 = tg.eager_vs_reference(
        table("guard_stock_error_17").query("guard == ''"), table("guard_patched_reference")
    )
    assert stock17.iloc[0][["same tokens", "of"]].tolist() == [16, 17]


@pytest.mark.parametrize("name, engines, backends", [
    ("guard_false_alarms", 4, {"FLEX_ATTENTION"}),
    ("guard026_false_alarms", 10, {"FLEX_ATTENTION", "TRITON_ATTN"}),
])  # fmt: skip
def test_no_false_alarm(name, engines, backends):
    view = tg.false_alarms(table(name))
    assert len(view) == engines and view.alarms.sum() == 0 and set(view.outcome) == {"ok"}
    assert set(view.backend) == backends and (view["replays checked"] > 0).all()
    assert "**No false alarm: 0 alarms**" in story.false_alarms(view, "here")


def test_vllms_own_check_was_on_and_blind():
    debug = table("guard_debug")
    facts = tg.guard_summary(debug.iloc[0]["records"])["facts"]
    assert facts == {"vllm_debug_address_check": True}
    view = tg.engine_guard(debug)
    assert view.outcome.item() == "illegal_memory_access"
    assert view["fields named"].item() == "FlexAttentionMetadata.block_mask.kv_indices"
    assert "did not see the bug" in story.debug_blind_spot(view, facts)


def test_the_debug_check_being_on_is_shown_not_only_said():
    """07 said vLLM's FULL wrapper "said so" with nothing displayed: the fact is a table row now."""
    shown = tg.vllm_check(table("guard_debug"))
    assert shown.iloc[0]["vLLM's address check (its FULL wrapper's is_debugging_mode)"] == "on"
    assert shown.iloc[0]["graphs captured through"] == "CUDAGraphWrapper (V1 runner)"
    off = tg.vllm_check(table("guard_false_alarms"))
    assert set(off["vLLM's address check (its FULL wrapper's is_debugging_mode)"]) == {"off"}
    facts = tg.guard_summary(table("guard_debug").iloc[0]["records"])["facts"]
    assert "said so" not in story.debug_blind_spot(tg.engine_guard(table("guard_debug")), facts)
    from flexfix.edition import glossary

    lines = glossary.debug_check_source()
    assert "is_debugging_mode" in lines and "data_ptr() for x in args" in lines


def test_the_runners_the_recorded_runs_cover():
    """07's takeaway claimed every tensor checked 'on vLLM's V1 runner and on model runner V2': the recorded runs
    cover V2 on vLLM 0.26.0 only (its default runner: the no-false-alarm runs and the planted mutants)."""
    old = tg.false_alarms(table("guard_false_alarms"))
    assert set(old["graphs captured through"]) == {"CUDAGraphWrapper (V1 runner)"}
    new = tg.false_alarms(table("guard026_false_alarms"))
    by_runner = new.groupby("model runner")["graphs captured through"].agg(set).to_dict()
    assert by_runner == {"default (V2)": {"CudaGraphManager (runner V2)"}, "V1": {"CUDAGraphWrapper (V1 runner)"}}
    # 0.20.0's default runner is V1 (the table said "default" for both releases: newcomer reading D8)
    assert set(old["model runner"]) == {"default (V1)"}
    assert "hooks" not in new  # every engine installs both hooks: listing them said nothing about which ran
    assert "CudaGraphManager (runner V2) in 8 engines" in story.false_alarms(new, "here")
    mutants = tg.mutant_table(table("guard026_mutants"))
    assert set(mutants["graphs captured through"]) == {"CudaGraphManager (runner V2)"}
    stopped = tg.engine_guard(pd.concat([table("guard_stock_error"), table("guard_v0_20_2")], ignore_index=True))
    assert set(stopped["graphs captured through"]) == {"CUDAGraphWrapper (V1 runner)"}
    assert tg.captured_through({}) == "no FULL graph captured"
    nb = json.loads((DATA.parent / "notebooks" / "07_replay_guard.ipynb").read_text())
    takeaways = "".join(nb["cells"][-1]["source"])
    assert "checks every tensor a FULL graph can read" not in takeaways
    assert "model runner V2's `CudaGraphManager`" in takeaways and "`graphs captured through`" in takeaways


def test_07_shows_vllms_dispatch_rule_for_full_decode_graphs():
    """07 asserted 'FULL graphs only up to a size that follows max_num_seqs': the dispatcher's table is shown."""
    from flexfix.edition import glossary

    nb = json.loads((DATA.parent / "notebooks" / "07_replay_guard.ipynb").read_text())
    sources = ["".join(c["source"]) for c in nb["cells"]]
    at = next(i for i, s in enumerate(sources) if "decode_dispatch(guard_tables.dispatch_cases" in s)
    assert "captures FULL decode graphs only for batch sizes up to\n  `max_num_seqs`" in sources[at - 1]
    # the table's rows are the recorded engines' (max_num_seqs, batch), and those engines follow it
    assert "stopped_runs = guard_tables.stopped_runs(recorded)" in sources[at]
    assert "guard_tables.dispatch_cases(stopped_runs)" in sources[at]
    assert "guard_tables.engine_guard(stopped_runs)" in sources[at + 2]
    assert "above 16" not in sources[at + 1] or "is not enough" in sources[at + 1]
    # round 9 (D10): the rule is said once, before the table
    assert "at most `max_num_seqs`" in sources[at - 1] and "more than one query block" in sources[at - 1]
    stopped = pd.concat(
        [table("guard_stock_error"), table("guard_stock_error_17").query("guard == 'error'")], ignore_index=True
    )
    cases = tg.dispatch_cases(stopped)
    assert cases == [(17, 17), (48, 17), (32, 32), (48, 48), (128, 128)]
    shown = glossary.decode_dispatch(cases).set_index(["max_num_seqs", "decode batch"])
    assert shown.loc[(17, 17), "runs with"] == "PIECEWISE" and shown.loc[(17, 17), "largest FULL decode graph"] < 17
    assert all(shown.loc[c, "runs with"] == "FULL" for c in cases[1:])
    said = story.dispatch(shown.reset_index(), tg.engine_guard(stopped))
    assert "A batch equal to its engine's" in said and "32, 48 and 128" in said and "refused 4 such engines" in said


def test_every_engine_table_shows_the_max_num_seqs_it_ran_with():
    """A1: a name says max_num_seqs only where the run set it; the column gives the value either way."""
    from flexfix.measure.engine_sweep import EngineRun, llm_kwargs

    view = tg.engine_guard(table("guard_stock_error")).set_index("requests")
    assert list(view["max_num_seqs"]) == [17, 32, 48, 128, 48]
    assert list(tg.engine_guard(table("guard_stock_error_17"))["max_num_seqs"]) == [48, 48]
    assert set(tg.false_alarms(table("guard_false_alarms"))["max_num_seqs"]) == {128}
    assert set(tg.guard_cost(table("guard_cost"))["max_num_seqs"]) == {128}
    for run in (EngineRun(generations=(17,)), EngineRun(every_request=(17, 32, 47)), EngineRun(max_num_seqs=48)):
        row = pd.Series({**{f: getattr(run, f) for f in run.__dataclass_fields__}})
        assert tg.max_num_seqs(row) == llm_kwargs(run, "m")["max_num_seqs"]
    assert str(tg.engine_guard(table("guard_stock_error"))["first alarm at replay"].dtype) == "Int64"


def test_false_alarm_engines_named_as_the_others_and_information_shown():
    """B3: the same naming as the other tables (patched/stock, guard mode); the information counts in a table."""
    names = list(tg.false_alarms(table("guard026_false_alarms"))["engine"])
    assert names[0] == "tiny, BI=0, full graphs, patched, guard=log"
    assert all(("patched" in n) != ("stock" in n) and "guard=log" in n for n in names)
    info = tg.information(table("guard_false_alarms"))
    assert (info["FlexAttentionMetadata.max_seq_len: number"] > 0).all()
    assert tg.guard_cost(table("guard_cost"))["engine"].str.contains("patched").all()


def test_mutants_three_named_the_stale_tail_invisible():
    view = tg.mutant_table(table("guard026_mutants")).set_index("mutant")
    assert set(view["under FLEXFIX_GUARD=error"]) == {"guard_refused", "completed"}  # "ok" is said "completed"
    assert view.loc["stale_tail", "under FLEXFIX_GUARD=error"] == "completed"
    assert set(view["without the guard"]) == {"completed"}  # every mutant ran to the end: that is not "fine"
    assert view.loc["row_stride", "fields named"] == "TritonAttentionMetadata.block_table"
    assert view.loc["fresh_tensor", "fields named"] == "TritonAttentionMetadata.seq_lens"
    assert "rswa_window" in view.loc["frozen_decision", "fields named"]
    assert view.loc["stale_tail", "requests with the clean tokens"] == "32 of 32"
    assert "stopped 3 of 4 planted mutants" in story.mutants(view.reset_index())


def test_served_error_and_eager():
    served, _ = results.read_results(DATA / "serve_guard-cuda.json")
    rows = served.set_index("scenario")
    assert rows.loc["guard_error", "status"] == "guard_refused" and not rows.loc["guard_error", "ima_in_log"]
    assert any("FlexAttentionMetadata.block_mask.kv_indices" in ln for ln in rows.loc["guard_error", "guard_lines"])
    agree = tg.servers_agree(served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")])
    assert (agree["bitwise equal"] == agree["of"]).all() and list(agree["of"]) == [48, 128, 48, 128]


def test_the_cost_is_said_as_measured():
    view = tg.guard_cost(table("guard_cost"))
    assert list(view.requests) == [48, 128]
    text = story.cost(view)
    assert f"{view['on / off'].iloc[0]:.3f}" in text and f"{view['on / off'].iloc[1]:.3f}" in text
    shares = view["checking, % of wall time"]  # in percent (a fraction beside a sentence in %: reading D13)
    low, high = f"{shares.min():.1f}", f"{shares.max():.1f}"
    took = f"about {low}%" if low == high else f"{low}–{high}%"
    assert f"checks took {took} of the engine's time" in text  # timed, it leads
    for _, r in view.iterrows():
        assert f"({r['µs per replay checked']:.0f} µs per replay; {r[tg.SPREAD]}% over its repetitions)" in text
        assert f"{r['slowest / fastest repetition']:.2f}x at {int(r['requests'])} requests" in text
    slower = 100 * (1 - view["on / off"])
    assert f"tokens per second came out {slower.min():.1f}–{slower.max():.1f}% lower" in text
    drifted = ((view["slowest / fastest repetition"] - 1) > (1 - view["on / off"])).all()
    assert ("in runs that drifted by more than that" in text) == bool(drifted)
    if drifted:  # a finding, not a threshold: the checks' share and the ratios as measured
        assert f"The checks' own time, {took} of the wall time, is the firmer measure" in text
        assert "in single pairs" not in text and text.count("single pairs") == len(view)  # r20 D9: said once each
        assert "below 2%" not in text and "within 2%" not in text and "agree" not in text
    steady = view.assign(**{"slowest / fastest repetition": 1.001})  # a run that did not drift: no excuse made
    assert "beyond what the runs drifted" in story.cost(steady) and "cannot tell" not in story.cost(steady)
    # recorded before the checks were timed: the ratios lead
    untimed = tg.guard_cost(results.read_results(DATA / "guard_cost_first-cuda.json")[0])
    noisy = ((untimed["lowest pair"] <= 1) & (untimed["highest pair"] >= 1)).all()
    said = story.cost(untimed)
    assert ("below what this measurement can resolve" in said) == bool(noisy) and "checks took" not in said


@pytest.mark.parametrize("say, view", [
    (story.stopped, lambda: tg.engine_guard(table("guard_stock_error")).iloc[0:0]),
    (story.false_alarms, lambda: tg.false_alarms(table("guard_false_alarms")).drop(columns="alarms")),
    (story.cost, lambda: tg.guard_cost(table("guard_cost")).drop(columns="repetitions")),
])  # fmt: skip
def test_a_sentence_refuses_a_table_that_lost_what_it_reads(say, view):
    with pytest.raises(checks.DataError, match="nothing to say of"):
        say(view(), "here") if say is not story.cost else say(view())


def _flat(path: Path) -> str:
    return " ".join(path.read_text().split())


def test_the_readmes_quote_the_workaround_costs_as_recorded():
    from flexfix.measure import engine_sweep

    tput = engine_sweep.throughput_rows(results.read_results(DATA / "stock_workaround_cost-cuda.json")[0])
    ref = tput[tput.patched].set_index("requests").tokens_per_second
    ratio = {
        (
            "mns16" if "max_num_seqs 16" in r.engine else r.graphs,
            r.requests,
        ): f"{r.tokens_per_second / ref[r.requests]:.2f}"
        for r in tput[~tput.patched].itertuples()
    }
    said = (
        f"piecewise {ratio['piecewise', 48]} (48 requests) and {ratio['piecewise', 128]} (128), no graphs "
        f"{ratio['eager', 48]} and {ratio['eager', 128]}, "
        f"`max_num_seqs=16` {ratio['mns16', 48]} and {ratio['mns16', 128]}"
    )
    for readme in (DATA.parent / "README.md", DATA / "README.md"):
        assert said in _flat(readme), readme
    safety = engine_sweep.request_rows(results.read_results(DATA / "stock_workarounds-cuda.json")[0])
    assert len(safety) == 6 and not any(len(x) for x in (*safety.tokens_differ, *safety.logprobs_differ))
    # what was compared is each request with itself alone, not with a reference answer: no claim of correctness
    lead = _flat(DATA.parent / "README.md").split("**Without the plugin**", 1)[1].split("## ", 1)[0]
    assert "correct" not in lead and "answered otherwise than the same request alone" in lead
    assert "no positive control" in lead


def test_data_readme_quotes_the_guard_as_recorded():
    text = _flat(DATA / "README.md")
    for name, label in (("guard_cost_first", "first version"), ("guard_cost", "as it is now")):
        view = tg.guard_cost(results.read_results(DATA / f"{name}-cuda.json")[0]).set_index("requests")
        a, b = view.loc[48], view.loc[128]
        said = (
            f"{label} {a['on / off']:.3f} (48 requests, pairs {a['lowest pair']:.2f}-{a['highest pair']:.2f}) and "
            f"{b['on / off']:.3f} (128, pairs {b['lowest pair']:.2f}-{b['highest pair']:.2f})"
        )
        assert said in text, said
    shares = tg.guard_cost(table("guard_cost"))["checking, % of wall time"]
    low, high = f"{shares.min():.1f}", f"{shares.max():.1f}"
    said = f"its checks took {'about ' + low if low == high else low + '-' + high}% of the engine's time"
    assert said.lower() in _flat(DATA.parent / "README.md").lower(), said
    for name, said in (("guard_false_alarms", "({} replays checked)"), ("guard026_false_alarms", "V1; {} replays)")):
        assert said.format(int(tg.false_alarms(table(name))["replays checked"].sum())) in text, name
    eager = tg.engine_guard(table("guard_stock_eager"))
    assert f"{eager['steps run without the graph'].sum()} of {eager['replays checked'].sum()} checked" in text


# The recorded files, read through their schemas (issue #22): a file that lost what a view reads is refused by name.


def _damaged(tmp_path: Path, name: str, change) -> Path:
    shutil.copy(DATA / f"{name}-cuda.json", tmp_path / f"{name}-cuda.json")
    path = tmp_path / f"{name}-cuda.json"
    payload = json.loads(path.read_text())
    for record in payload["records"]:
        change(record)
    path.write_text(json.dumps(payload))
    return tmp_path


def _guard_records(record):
    return [s for s in record["records"] if s["kind"] == "guard"]


@pytest.mark.parametrize("name, change, refused", [
    # first_message fell back to the run's detail: another text shown as the guard's message
    ("guard_stock_error", lambda r: r.update(message=None), "stopped without the guard's message"),
    # engine_guard read the requests of every_request instead: a run that planned nothing shown as one
    ("guard_stock_error", lambda r: r.update(generations=[]), "planned no batch"),
    # engine_guard said 0 replays checked, 0 alarms: a lost count shown as a quiet guard
    ("guard_stock_error", lambda r: [g.update(replays_checked=None) for g in _guard_records(r)], "replays_checked"),
    ("guard_stock_error", lambda r: r.update(records=[s for s in r["records"] if s["kind"] != "guard"]),
     "without its guard record"),
    ("guard_stock_error", lambda r: [g.update(first_alarm=None) for g in _guard_records(r)], "without its first alarm"),
    # eager_vs_reference compared fewer request counts: a lost batch is not a smaller experiment
    ("guard_stock_eager", lambda r: r.update(records=[s for s in r["records"] if s["kind"] != "generations"]),
     "generations records at"),
])  # fmt: skip
def test_a_guard_file_that_lost_what_07_shows_is_refused(tmp_path, name, change, refused):
    with pytest.raises(results.ResultsError, match=rf"{name}-cuda.json: record \d+.*{refused}"):
        tg.recorded(_damaged(tmp_path, name, change), [name])


def test_the_cost_without_the_checks_timing_is_refused_not_said_untimed(tmp_path):
    """Nulled, the checks' own time made the cost paragraph lead with the noisy tokens/s ratios instead."""

    def change(r):
        for s in r["records"]:
            if s["kind"] == "guard_cost":
                s["check_share"] = None

    with pytest.raises(results.ResultsError, match=r"guard_cost-cuda.json: record 0: records\[\d+\] has no value for"):
        tg.recorded(_damaged(tmp_path, "guard_cost", change), ["guard_cost"])


def test_the_served_answers_without_their_streams_are_refused(tmp_path):
    def change(r):
        for s in r["records"]:
            if s["stage"] == "together" and "streams" in s:
                s["streams"] = None

    with pytest.raises(results.ResultsError, match=r"serve_guard-cuda.json: record 0: records\[\d+\] has no value"):
        tg.served(_damaged(tmp_path, "serve_guard", change))


def test_the_guard_schemas_accept_every_recorded_guard_file():
    assert set(REC) == set(tg.RECORDED) and all(len(t) for t, _ in REC.values())
    assert len(tg.served(DATA)[0]) == 4
    # the first cost run timed no check: a GUARD_COST table less the timing, refused as one
    untimed = dataclasses.replace(schemas.GUARD_COST, step_values=schemas.GUARD_RUNS.step_values)
    assert len(schemas.recorded(DATA, "guard_cost_first", untimed)[0]) == 1
    with pytest.raises(results.ResultsError, match="guard_cost_first-cuda.json: record 0: records.*lacks check_share"):
        schemas.recorded(DATA, "guard_cost_first", schemas.GUARD_COST)
