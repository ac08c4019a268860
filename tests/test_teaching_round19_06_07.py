"""Round 19 (a reading of the published edition), notebooks 06 and 07: each fix tied to the data or the source that
generates the sentence, table or figure, and each conditional sentence tried with data where its condition goes each
way."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from test_teaching_round4_06_07 import DATA  # noqa: E402
from test_teaching_round16_06_07 import _cells, _flat  # noqa: E402

from flexfix.edition.narrative import guard_dispatch  # noqa: E402
from flexfix.edition.tables import guard as guard_tables  # noqa: E402


def _markdown(name: str) -> str:
    return _flat("\n".join(c for k, c in _cells(name) if k == "markdown"))


def _code(name: str) -> str:
    return "\n".join(c for k, c in _cells(name) if k == "code")


# A1 (07): "Notebook 01 chose those sizes up to one request below the count at which a fresh stock engine first
# faulted" named a fault count (48) that notebook 01's published run contradicts (its fresh engines first faulted at
# 44 there; the recorded ones at 48): the fault count of a run is no fixed number. The sizes are now said to be
# notebook 01's, taken over unchanged, with no reason this notebook cannot show.


def test_07_a1_the_every_request_sizes_are_notebook_01s_and_no_fault_count_is_claimed():
    text = _markdown("07_replay_guard")
    assert "Notebook 01 chose those sizes" not in text and "first faulted" not in text
    assert "at the batch sizes notebook 01's every-request engines run" in text
    assert "taken over unchanged, not chosen here" in text
    assert "Their largest is one request below a kept batch (`answers kept, batch sizes`): two batches, not one" in text
    # "notebook 01's code passes the same sizes": its every-request engines and this notebook's recorded ones
    passed = re.search(r"every_request=\(([\d, ]+)\)", _code("01_reproduce_ima"))
    assert passed, "notebook 01 passes no every_request sizes"
    sizes = [int(n) for n in passed.group(1).split(",")]
    eager = guard_tables.recorded(DATA, ["guard_stock_eager"])["guard_stock_eager"][0].iloc[0]
    assert list(eager["every_request"]) == sizes
    assert max(sizes) + 1 in eager["generations"]  # one request below a kept batch


# A2 (07): "one fresh engine at each request count where notebooks 01 and 04 record a crash or a wrong token", while
# notebook 01 records a crash at a count (44) no engine here ran. The counts are now read from the recording and
# called a selection, with why each.


def _stopped() -> pd.DataFrame:
    return guard_tables.engine_guard(guard_tables.stopped_runs(guard_tables.recorded(DATA)))


def test_07_a2_the_counts_run_are_read_from_the_recording_and_called_a_selection():
    text = _markdown("07_replay_guard")
    assert "at each request count where notebooks 01 and 04 record" not in text
    assert "one fresh engine per request count" in text
    assert "guard_dispatch.counts_run(guard_tables.engine_guard(stopped_runs))" in _code("07_replay_guard")
    engines = _stopped()
    said = _flat(guard_dispatch.counts_run(engines))
    own = sorted(int(r) for r, m in zip(engines["requests"], engines["max_num_seqs"]) if int(r) == int(m))
    assert own == [17, 32, 48, 48, 128]  # 48 twice: BI=0 and BI forced
    assert (
        "One fresh engine each at 17, 32, 48 and 128 requests, each in an engine whose `max_num_seqs` is its count"
        in said
    )
    assert "48 again with `VLLM_BATCH_INVARIANT=1` and `supports_batch_invariance` forced True" in said
    assert "17 again in an engine of `max_num_seqs` 48" in said
    assert (
        "17 the smallest such count, 32 two full query blocks, 48 the count of notebook 01's engine scenarios (b) and "
        "(d) and 128 the largest batch of notebook 04's engine sweep" in said
    )
    assert "They are a selection, not a sweep" in said and "fixed before the run" not in said  # round 21 B6
    assert "each request count where" not in said


def test_07_a2_the_counts_follow_the_table():
    engines = _stopped()
    extra = engines.iloc[[0]].assign(requests="44", max_num_seqs=44, engine="tiny, BI=0, stock, guard=error")
    said = _flat(guard_dispatch.counts_run(pd.concat([engines, extra], ignore_index=True)))
    assert "One fresh engine each at 17, 32, 44, 48 and 128 requests" in said
    assert "44 the" not in said  # no reason is made up for a count the code gives none
    small = engines.iloc[[0]].assign(requests="16", max_num_seqs=16, engine="tiny, BI=0, stock, guard=error")
    said = _flat(guard_dispatch.counts_run(pd.concat([engines, small], ignore_index=True)))
    assert "16 requests fit in one query block, where no copy misreads; the others are past it" in said
    only = engines[engines["requests"].astype(int) == engines["max_num_seqs"].astype(int)]
    only = only[~only["engine"].str.contains("BI forced")]
    said = _flat(guard_dispatch.counts_run(only))
    assert "again" not in said


def test_07_a2_the_set_says_it_is_a_selection():
    from flexfix.measure import guard_sets

    assert "at every request count where notebooks 01 and 04 record" not in _flat(guard_sets.__doc__)
    assert "a selection of request counts past one query block" in _flat(guard_sets.__doc__)
    assert list(guard_sets.CROSS) == [17, 32, 48, 128]


# B1 (07): "the clients in flight get HTTP 500, as a stock server without the guard gives them (notebook 06), and
# only the log differs" and "Its clients got the HTTP 500 that a stock server without the guard gives": the section
# showed the status only. It now shows the clients' errors (the error table) and compares them, message and all,
# with notebook 06's recorded stock server without the guard.


def _served():
    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(
        served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")]
    )
    return served, agree


def _with_error(served: pd.DataFrame, error: str, status: int = 500) -> pd.DataFrame:
    served = served.copy()
    at = served.index[served["scenario"] == "guard_error"][0]
    records = [dict(s) for s in served.at[at, "records"]]
    for s in records:
        s["failed"] = [{**f, "error": error, "status_code": status} for f in s.get("failed", [])]
    served.at[at, "records"] = records
    return served


def test_07_b1_the_clients_errors_are_shown_and_compared_with_notebook_06s():
    from flexfix.edition.narrative import guard_serving
    from flexfix.edition.tables.serving import failed_requests
    from flexfix.integration.serving import recorded_run

    text = _markdown("07_replay_guard")
    assert "only the log differs" not in text and "as a stock server without the guard gives them" not in text
    # round 22 (D12): the Serving intro lists its outputs in order
    assert "the error table, after the stage table, which gives what the stopped server's clients got" in text
    code = _code("07_replay_guard")
    assert "display(tables.error_summary(served))" in code
    assert "guard_serving.serving(served, agree, DATA_DIR, served_prov)" in code
    served, agree = _served()
    stock, _ = recorded_run(DATA)
    mine = failed_requests(served[served["scenario"] == "guard_error"])
    theirs = failed_requests(stock[stock["scenario"] == "stock"])
    assert len(mine) and set(mine["error"]) == set(theirs["error"]) and set(mine["status_code"]) == {500}
    said = _flat(guard_serving.serving(served, agree, DATA))
    assert "HTTP 500 that a stock server without the guard gives" not in said
    assert (
        "Its clients got what the clients of notebook 06's stock server without the guard (`stock`) got, word for "
        "word: HTTP 500 with the same error message (the error table above; notebook 06's error table). The logs "
        "differ" in said  # round 22 (B1): not put down to the guard
    )
    assert "That the guard made that difference, these two recordings do not show by themselves" in said


def test_07_b1_the_comparison_follows_the_errors_each_way():
    from flexfix.edition.narrative import guard_serving

    served, agree = _served()
    said = _flat(guard_serving.serving(_with_error(served, "APIError: another message"), agree, DATA))
    assert "got the same status, another error message" in said and "word for word" not in said
    said = _flat(guard_serving.serving(_with_error(served, "ServiceUnavailable", 503), agree, DATA))
    assert (
        "Its clients got HTTP 503; the clients of notebook 06's stock server without the guard (`stock`) got HTTP "
        "500 instead" in said
    )
    said = _flat(guard_serving.serving(served, agree))  # no notebook 06 recording given: no comparison claimed
    assert "Its clients got HTTP 500 (the error table above gives what they printed)" in said
    assert "notebook 06's stock server" not in said


# D4 (07): the Serving dispatch table's largest capture size (vLLM's default rule) against the engines' (flexfix's
# list), for the same max_num_seqs, without a word on why.


def test_07_d4_serving_says_its_servers_ran_vllms_default_capture_sizes():
    from flexfix.edition.tables import serving as serving_tables

    text = _markdown("07_replay_guard")
    assert (
        "ran vLLM's default capture sizes (its rule is in the paragraph under the engine dispatch table, and reaches "
        "past `max_num_seqs`), where the engines above were given flexfix's list" in text
    )
    served, prov = guard_tables.served(DATA)
    assert not any(
        "cuda-graph" in " ".join(map(str, c)) or "capture" in " ".join(map(str, c)) for c in served["command"]
    )
    largest = set(serving_tables.dispatch_table(served, prov)["largest capture size"].astype(int))
    assert largest == {256}  # vLLM's default rule at max_num_seqs 128; the engines' own list stops at 128


# B2 (07): "tokens per second drift with the GPU's clocks and the host's other work" gave a cause the recording does
# not hold.


def test_07_b2_the_drift_column_gives_no_unrecorded_cause():
    text = _markdown("07_replay_guard")
    assert "GPU's clocks" not in text and "host's other work" not in text
    assert (
        "`slowest / fastest repetition`: how far the same work's repetitions drifted apart (the recording keeps their "
        "tokens per second, not what made them drift)" in text
    )


# B3 (07): "the recorded engines ... are offline LLM(...) engines, each in one process
# (VLLM_ENABLE_V1_MULTIPROCESSING=0, ...), with FLEXFIX_GUARD set and the guard installed in that process before
# the engine started", as if recorded.
# It is now said as what the code that ran does (EngineRun.env()), and what the recordings keep.


def test_07_b3_the_engines_environment_is_said_as_code_and_the_code_holds_it():
    from dataclasses import replace

    from flexfix.measure import guard_sets
    from flexfix.measure.engine_sweep import EngineRun

    text = _markdown("07_replay_guard")
    assert "each in one process" not in text and "installed in that process before the engine started" not in text
    assert "That is this commit's source; the engines were recorded at other commits" in text  # r20 B3
    guarded = [run for name, runs in guard_sets.SETS.items() for run in runs if run.guard and name.startswith("guard")]
    assert guarded and all(isinstance(run, EngineRun) for run in guarded)
    for run in guarded:
        env = run.env()
        assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["FLEXFIX_GUARD"] == run.guard, run.name
    assert replace(guarded[0], guard="").env()["FLEXFIX_GUARD"] == "0"  # an unguarded run says so
    stopped = guard_tables.engine_guard(guard_tables.stopped_runs(guard_tables.recorded(DATA)))
    assert set(stopped["guard"]) == {"error"}  # the mode each engine ran under, as the tables show it


# C1 (06): hatching meant "tokens differ" in the recorded figure and "emulated" in the FAKE one, whose yellow and blue
# bars were all hatched. Hatching now means other tokens in both; emulated bars are faded (and labelled FAKE).


def test_06_c1_hatching_means_other_tokens_in_both_figures():
    from flexfix.edition.plots import serving as serving_plots
    from flexfix.integration.serving import recorded_run

    table, _ = recorded_run(DATA)
    fake_table = table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))
    cross = serving_plots.HATCH["tokens differ"]
    differ_rgb = to_rgb(serving_plots.SERVING_KINDS["tokens differ"])
    for fig in (serving_plots.serving_figure(table, "rec"), serving_plots.serving_figure(fake_table, "fake")):
        ax = fig.axes[0]
        bars = [p for p in ax.patches if p.get_width() > 0 and p.get_linewidth() == 0]  # values; not-run boxes outlined
        differ = [p for p in bars if to_rgb(p.get_facecolor()) == differ_rgb]
        assert differ and all(p.get_hatch() == cross for p in differ)
        assert all(not p.get_hatch() for p in bars if to_rgb(p.get_facecolor()) != differ_rgb)
        legend = dict(zip([t.get_text() for t in ax.get_legend().get_texts()], ax.get_legend().legend_handles))
        assert legend["tokens differ"].get_hatch() == cross
        assert all(not h.get_hatch() for label, h in legend.items() if label != "tokens differ")
    fake = serving_plots.serving_figure(fake_table, "fake").axes[0]
    assert "hatched" not in fake.get_title() and "its bars faded: emulated" in fake.get_title()
    faded = [p for p in fake.patches if p.get_width() > 0 and p.get_linewidth() == 0]
    assert faded and all(p.get_alpha() == serving_plots.EMULATED_ALPHA for p in faded)
    assert all("[FAKE, no model]" in t.get_text() for t in fake.get_yticklabels())
    assert not hasattr(serving_plots, "EMULATED_HATCH")
    text = _markdown("06_serving")
    assert "hatched with diagonals" not in text
    assert "hatching means other tokens there, as in the recorded figure, not emulation" in text


# D3 (06): "On the patched servers' GPU (NVIDIA H200, commit a398688a9a, ...)" read as the patched servers' commit
# (theirs is the Serving recording's); the commit is now the guard_debug recording's, said so.


def test_06_d3_the_same_gpu_crash_names_its_own_recordings_commit():
    from flexfix.edition.narrative import guard_serving

    said = _flat(guard_serving.in_short(DATA))
    debug_prov = guard_tables.recorded(DATA, ["guard_debug"])["guard_debug"][1]
    served_prov = guard_tables.served(DATA)[1]
    debug, served = str(debug_prov["git_commit"])[:10], str(served_prov["git_commit"])[:10]
    assert debug != served  # the two commits the old wording ran together
    assert f"({debug_prov['device_name']}, commit {debug}, notebook 07's" not in said
    assert (
        f"On the patched servers' GPU ({debug_prov['device_name']}), in notebook 07's *vLLM's own check is blind to "
        f"it* (a recording of its own, flexfix commit {debug})" in said
    )


# D7 (07): the printed excerpt of vLLM's own check skipped lines without a mark, leaving `input_addresses = [` and
# `assert ... , (` unclosed.


def test_07_d7_the_debug_check_excerpt_marks_its_gaps():
    import inspect

    from flexfix.edition import glossary

    lines = glossary.debug_check_source().splitlines()
    numbered = [(k, int(line.split()[0])) for k, line in enumerate(lines) if line.split()[0].isdigit()]
    for (k, n), (k2, n2) in zip(numbered, numbered[1:]):
        if k2 == k + 1:
            assert n2 == n + 1, (n, n2)  # adjacent printed lines are adjacent in the source
        elif lines[k + 1].strip().startswith("..."):  # else a function's header line: another function
            assert " ".join(lines[k + 1].split()) == f"... ({n2 - n - 1} line{'s' * (n2 - n > 2)} left out)"
    assert " ".join(lines[-1].split()) == "... (the rest of CUDAGraphWrapper.__call__ left out)"
    assert any("left out" in line for line in lines)
    from flexfix.edition import vllm_source

    assert "def _lines(obj, wanted, gaps: bool = False)" in inspect.getsource(vllm_source._lines).splitlines()[0]


# D2 (06): the same HTTP 500 message was shown twice, in the error table and printed again after it.


def test_06_d2_each_error_is_shown_once():
    code = _code("06_serving")
    assert "print_errors" not in code
    assert code.count("display(tables.error_summary(table))") == 1
    text = _markdown("06_serving")
    assert "each error printed whole after the table" not in text
    assert "the error table, each error whole; its `served by` column names who answered" in text
    import inspect

    from flexfix.integration.serving import recording

    assert "display(error_summary(table))" in inspect.getsource(recording.show_recorded)  # the recorded run's, once
