"""Round 22 (report c, a newcomer's reading of the published 06 and 07), notebooks 06 and 07: each fix tied to the
data or the source that generates the sentence or table; each A/B test fails on the code before its fix."""

from __future__ import annotations

import inspect
import re

import matplotlib

matplotlib.use("Agg")

from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _cells, _flat  # noqa: E402

from flexfix.edition import schemas, tables  # noqa: E402
from flexfix.edition.narrative import (  # noqa: E402
    guard_provenance,
    guard_result,
    guard_servers,
    guard_serving,
    serving_manager,
    serving_scope,
)
from flexfix.edition.narrative import serving as serving_story  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402
from flexfix.edition.tables.serving import differences  # noqa: E402
from flexfix.integration.serving import recorded_run  # noqa: E402


def _markdown(name: str) -> str:
    return _flat("\n".join(c for k, c in _cells(name) if k == "markdown"))


def _code(name: str) -> str:
    return "\n".join(c for k, c in _cells(name) if k == "code")


def _at(name: str, needle: str) -> int:
    found = [i for i, (_, c) in enumerate(_cells(name)) if needle in c]
    assert len(found) == 1, (name, needle, found)
    return found[0]


def _fake_run() -> dict:
    return {"fake_server": "../tests/fake_vllm_server.py"}


# A1 (06): the line opening the harness self-test said "nothing about vLLM", yet two of its outputs read the real
# servers' recordings; it now names them, by the bold heads those outputs print.


def test_06_a1_the_self_test_names_the_outputs_that_read_the_real_servers_recordings():
    said = _flat(serving_story.skip_line(_fake_run()))
    assert "nothing about vLLM" not in said
    assert serving_story.REAL_BESIDE in said
    head = re.search(r"\*\*(The real `vllm serve` servers, as recorded)\*\*", serving_story.REAL_BESIDE)[0]
    assert head in _flat(serving_manager.real_servers_left(DATA))  # the output that reads the recordings
    assert "**The HTTP 500 bodies" in serving_story.REAL_BESIDE
    from flexfix.edition.narrative import serving_body

    assert "**The HTTP 500 bodies.**" in inspect.getsource(serving_body)
    fake = _flat(next(c for k, c in _cells("06_serving") if c.startswith("## Harness self-test")))
    assert "nothing about vLLM" not in fake and "Everything from here to the *Takeaways*" not in fake
    assert "Two of the section's outputs set the real servers' recordings beside the FAKE server's" in fake
    # both outputs sit in the section the line opens
    start = _at("06_serving", "story.skip_line(run)")
    assert start < _at("06_serving", "serving_manager.real_servers_left(DATA_DIR)")
    assert start < _at("06_serving", "serving_body.error_bodies(")


# A2 (06): "its only repeat of a request, the stream stage" although requests 0 to the smallest batch were sent in
# every batch; those repeats are now counted, from the recorded differences, and the stream stage is the only
# repeat alone.


def test_06_a2_the_requests_sent_in_both_batches_are_counted_as_repeats():
    table, _ = recorded_run(DATA)
    stages = tables.stage_table(table)
    said = _flat(serving_scope.batch_or_run(table, stages, DATA))
    assert "its only repeat of a request, the `stream` stage" not in said
    assert "Its only repeat of a request alone, the `stream` stage" in said
    for scenario in ("patched_bi0",):
        together = stages[(stages["scenario"] == scenario) & (stages["stage"] == "together")]
        sizes = sorted(int(n) for n in together["requests"])
        found = differences(table)
        found = found[(found["scenario"] == scenario) & (found["stage"] == "together")]
        per = {n: {int(i): (bool(t), float(d)) for i, t, d in zip(
            found[found["requests"] == n]["index"], found[found["requests"] == n]["tokens_equal"],
            found[found["requests"] == n]["max_abs_logprob_diff"])} for n in sizes}  # fmt: skip
        apart = sum(len({per[n].get(i, (True, 0.0)) for n in sizes}) > 1 for i in range(sizes[0]))
        assert f"Its requests 0–{sizes[0] - 1} ran {len(sizes) + 1} times, alone and in each batch" in said
        assert f"of these {sizes[0]} requests, {apart} came out with another largest logprob difference" in said
        assert f"and {sizes[0] - apart} with the same in every batch" in said
        assert 0 < apart < sizes[0]  # the recording shows both: the sentence must say both


# A3 (06): 04's conclusion that the batch's share is not established is its *With the batch* paragraph's (the seeded
# rows), not its *Run to run* paragraph's (the greedy rows); each is now cited for what it says.


def test_06_a3_notebook_04s_two_paragraphs_are_each_cited_for_what_they_say():
    from flexfix.edition.narrative import invariance as notebook04

    needle = serving_scope._notebook04(DATA)
    paragraphs = {p.split(":", 1)[0]: p for p in str(notebook04.engine_sweep(needle, "04")).split("\n\n")}
    run, batch = paragraphs["*Run to run*"], paragraphs["*With the batch*"]
    engine = "variance, BI=0, full graphs"
    assert f"{engine} (greedy)" in run and "cannot be put down to the batch alone" in run
    assert f"{engine} (seeded)" in batch and "the batch's share of these differences is not established" in batch
    table, _ = recorded_run(DATA)
    said = _flat(serving_scope.batch_or_run(table, tables.stage_table(table), DATA))
    assert "its *Run to run* paragraph concludes that the batch's share" not in said
    assert (
        "with greedy sampling even the same request alone a second time differed, so its *Run to run* paragraph "
        "does not put those rows' differences down to the batch alone" in said
    )
    assert (
        "with seeded sampling its one repeat alone came out equal, and its *With the batch* paragraph concludes "
        "that the batch's share of those rows' differences is not established" in said
    )
    _, prov = recorded_run(DATA)
    assert prov["parameters"]["sampling"].startswith("seeded")
    assert "(this recording's requests sampled seeded, as those rows did)" in said


# A4 (07): the table of which recording each section reads left out notebook 06's, which *Serving* compares with
# (another GPU, another commit); it is now a row of *Serving*, and the head counts its commit and GPU.


def test_07_a4_the_provenance_table_lists_notebook_06s_recording_under_serving():
    recorded = guard_tables.recorded(DATA)
    _, served_prov = guard_tables.served(DATA)
    _, stock_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    said = _flat(guard_provenance.provenance(recorded, served_prov, DATA))
    row = (
        f"| *Serving* | `serve` (notebook 06's, its stock server compared with) | {stock_prov['device_name']} | "
        f"{stock_prov['vllm']} | {str(stock_prov['git_commit'])[:10]} | {str(stock_prov['date'])[:10]} |"
    )
    assert row in said
    provs = [p for _, p in recorded.values()] + [served_prov, stock_prov]
    commits = {str(p["git_commit"])[:10] for p in provs}
    gpus = list(dict.fromkeys(p["device_name"] for p in provs))
    assert f"{len(commits)} flexfix commits" in said and f"on {len(set(gpus))} GPUs" in said
    for gpu in gpus:
        assert gpu in said.split("|", 1)[0]
    assert "guard_provenance.provenance(recorded, guard_tables.served(DATA_DIR)[1], DATA_DIR)" in _code(
        "07_replay_guard"
    )


# B1 (07): "what the guard changed is the log" compared servers of two recordings (other GPU, other commit); the
# logs are now said to differ, and why that does not show the guard's doing.


def test_07_b1_the_logs_differ_without_putting_it_down_to_the_guard():
    table, served_prov = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(table, list(guard_serving.PAIRS))
    said = _flat(guard_serving.serving(table, agree, DATA, served_prov))
    assert "what the guard changed is the log" not in said
    assert "The logs differ: this server's names the field the guard refused" in said
    assert "That the guard made that difference, these two recordings do not show by themselves" in said
    _, stock_prov = schemas.recorded(DATA, "serve", schemas.SERVING)
    for prov in (stock_prov, served_prov):
        assert f"{prov['device_name']}, commit {str(prov['git_commit'])[:10]}" in said
    assert "this section's recording ran no stock server without the guard" in said
    same = _flat(guard_servers.clients(table, DATA, stock_prov))  # one machine and commit: still two recordings
    assert "the two servers ran in two recordings, though on one GPU and commit" in same
    assert "guard_serving.serving(served, agree, DATA_DIR, served_prov)" in _code("07_replay_guard")


# D1 (06): "not one model" said once, in the result lead, and pointed to elsewhere


def test_06_d1_the_one_model_caveat_is_said_once():
    lead = _flat(serving_story.result_lead(DATA))
    text = _markdown("06_serving")
    short = _flat(guard_serving.in_short(DATA))
    table, _ = recorded_run(DATA)
    scenarios = _flat(serving_story.scenarios(table, tables.stage_table(table), "x", stated_above=True))
    caveat = "No single recording ran a stock server without the guard and a patched server on one model"
    assert [t.count(caveat) for t in (lead, text, short, scenarios)] == [1, 0, 0, 0]
    for said in (text, scenarios):
        assert "not one model with and without the fix" not in said and "not one server with and without" not in said
    assert "the one-model question: the result at the top, answered in the cell that ends this section" in scenarios
    assert "the stock 0.20.0 server under the guard in `error` mode answered" not in short  # the table's row
    assert "is answered by two recordings together" in _cells("06_serving")[-1][1]


# D2 (06): the FAKE disclaimer said once, where the FAKE server runs, and pointed to from the top


def test_06_d2_the_fake_disclaimer_is_said_once_where_it_runs():
    text = _markdown("06_serving")
    assert "nothing about vLLM" not in text
    assert text.count("bars faded, its title headed EMULATED") == 1
    assert "*Harness self-test* says what it shows and what it does not" in text
    said = _flat(serving_story.what_runs("cuda", _fake_run(), DATA))
    assert "Every table, sentence and figure" not in said
    assert "*Harness self-test*, after *The recorded GPU run*, says what the FAKE server is and what it shows" in said
    from flexfix.integration.serving import scenarios

    printed = _flat(inspect.getsource(scenarios.notebook_plan))
    assert "It is a script: it answers deterministic tokens" not in printed


# D4 (06): the servers the result lead names are said there to be what they are


def test_06_d4_the_lead_says_what_each_named_server_is():
    said = _flat(serving_story.result_lead(DATA))
    table, _ = guard_tables.served(DATA)
    for _, r in table.iterrows():
        if str(r["FLEXFIX_PATCH"]) != "1":
            assert f"`{r['scenario']}` in `{r['FLEXFIX_GUARD']}` mode" in said
    assert "(`patched_tiny` and `patched_tiny_again`: two servers with the fix, `FLEXFIX_PATCH=1`" in said


# D5 (06): max_num_batched_tokens is said where 06 uses it


def test_06_d5_max_num_batched_tokens_is_defined_where_used():
    from flexfix.edition.tables.serving import dispatch_table

    table, prov = recorded_run(DATA)
    said = _flat(guard_serving.capture_sizes(dispatch_table(table, prov)))
    assert "`max_num_batched_tokens`, the most tokens vLLM schedules into one step, another `vllm serve` argument" in (
        said
    )


# D6 (06): the note on the log tails follows the tails


def test_06_d6_the_log_tails_are_printed_right_above_their_note():
    cells = _cells("06_serving")
    at = _at("06_serving", "serving.show_recorded(DATA_DIR)")
    code = cells[at][1].rstrip().splitlines()
    assert code[-1].strip().startswith("tables.print_log_tails(recorded_serve)")
    assert cells[at + 1][1].startswith("**A note on the log tails above.**")
    from flexfix.integration.serving import recording

    assert "if tail is not None:" in inspect.getsource(recording.show_recorded)


# D7 (06): why RUN_SERVER is off on the edition's GPU run


def test_06_d7_the_first_screen_says_the_edition_turns_run_server_off():
    from flexfix.edition.run_notebooks import PARAMETERS

    assert PARAMETERS["cuda"]["06_serving"]["RUN_SERVER"] is False
    said = _flat(serving_story.what_runs("cuda", _fake_run(), DATA))
    assert "The edition's GPU run turns it off (`flexfix.edition.run_notebooks.PARAMETERS`)" in said
    assert "a choice, not a failure" in said
    assert "edition's GPU run" not in _flat(serving_story.what_runs("cpu", _fake_run(), DATA))


# D8 (06): the tokenizer of both served models is checked


def test_06_d8_the_variance_models_tokenizer_is_checked_too(tmp_path):
    from flexfix.integration import serving
    from flexfix.integration.engine import LLAMA_CONFIGS

    code = _code("06_serving")
    assert 'serving.prepare_tokenizer(name)) for name in ("tiny", "variance")' in code
    summary, rows = serving.tokenizer_check(serving.prepare_tokenizer("variance", tmp_path))
    want = LLAMA_CONFIGS["variance"]["vocab_size"]
    assert summary["len(tokenizer)"] == summary["config vocab_size"] == want
    assert rows["round_trip"].all() and rows["ids_below_vocab"].all()
    assert not list((tmp_path / "tokenizer-variance").glob("*.safetensors"))  # no weights written


# D9 (07): the engine that ran live is said to be this run's, and set beside its recorded twin


def test_07_d9_the_live_engine_is_said_to_be_live_and_compared_with_its_recording():
    view = guard_tables.engine_guard(guard_tables.stopped_runs(guard_tables.recorded(DATA)))
    twin = view[(view["requests"] == "48") & (view["max_num_seqs"] == 48) & view["engine"].str.contains("BI=0")]
    live = twin.assign(engine=[e.replace("guard=error,", "guard=error, max_num_seqs 48,") for e in twin["engine"]])
    said = _flat(guard_result.live(live, view))
    assert said.startswith("**This run's engine, measured live** (the table above, not a recording")
    assert f"`{twin['engine'].iloc[0]}`, in the engine table below) ended the same way" in said
    other = _flat(guard_result.live(live.assign(**{"fields named": "another field"}), view))
    assert "ended otherwise" in other
    code = _code("07_replay_guard")
    assert "display(guard_result.live(guard_tables.engine_guard(live), done))" in code
    assert "this run, live on" in code


# D10 (07): the engine names, BatchDescriptor and rswa_prefix_lens are said before they are used


def test_07_d10_terms_come_before_their_first_use():
    cells = _cells("07_replay_guard")
    live = _at("07_replay_guard", "guard_sets.live(REQUESTS")
    assert _at("07_replay_guard", "An engine's name lists its settings") < live
    assert _at("07_replay_guard", "is\nvLLM's key for a captured graph") < live
    text = _markdown("07_replay_guard")
    first = text.index("`rswa_prefix_lens`")
    assert text[first:].startswith("`rswa_prefix_lens` (a tensor field of vLLM 0.26.0's Triton metadata")
    message = _at("07_replay_guard", "That is the message a backend developer reads")
    assert "`BatchDescriptor`, defined before this run's engine above" in _flat(cells[message][1])


# D11, D12 (07): the commit caveat said once; the Serving intro lists its outputs


def test_07_d11_d12_one_commit_caveat_and_a_serving_intro_in_order():
    text = _markdown("07_replay_guard")
    assert "The recorded runs come from several commits of flexfix" not in text
    serving = text.split("## Serving", 1)[1].split("## What it costs")[0]
    assert "The cell below shows, in order:" in serving
    assert "the line under the provenance line names each" not in serving
    assert "computed now, as the line before it says" not in serving
    from flexfix.edition.narrative import guard_dispatch

    stopped = guard_tables.engine_guard(guard_tables.stopped_runs(guard_tables.recorded(DATA)))
    counts = str(guard_dispatch.counts_run(stopped))
    assert counts.count("\n* ") == 3 and "\n* They are a selection, not a sweep" in counts
