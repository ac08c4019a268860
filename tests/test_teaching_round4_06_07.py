"""Notebooks 06 and 07 as a newcomer read their published GPU edition (review r0607): one test per finding fixed."""

import json
import logging
import re
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

from flexfix.edition import tables  # noqa: E402
from flexfix.edition.narrative import serving as serving_story  # noqa: E402
from flexfix.edition.plots import serving as serving_plots  # noqa: E402
from flexfix.edition.tables import serving as ts  # noqa: E402
from flexfix.integration import serving  # noqa: E402
from flexfix.integration.serving import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _nb(stem: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())


def _markdown(stem: str) -> str:
    text = " ".join("".join(c["source"]) for c in _nb(stem)["cells"] if c["cell_type"] == "markdown")
    return re.sub(r"\s+", " ", text)


def _code(stem: str) -> str:
    return "\n".join("".join(c["source"]) for c in _nb(stem)["cells"] if c["cell_type"] == "code")


def _recorded():
    return serving.recorded_run(DATA)


def _fake(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))


# 06


def test_06_first_screen_says_the_live_part_is_the_fake_server_and_names_the_recording():
    """A1, A11: a GPU edition with RUN_SERVER off never said why vllm serve did not run, nor where the real one is."""
    table, prov = _recorded()
    said = serving_story.what_runs("cuda", {"fake_server": "x.py"}, DATA)
    assert "live part is the FAKE server, not vLLM" in said and "`RUN_SERVER` is False on this GPU machine" in said
    assert prov["device_name"] in said and str(prov["git_commit"])[:10] in said
    assert "there is no GPU here" in serving_story.what_runs("cpu", {"fake_server": "x.py"}, DATA)
    assert "starts the real `vllm serve`" in serving_story.what_runs("cuda", {"fake_server": None}, DATA)
    assert "story.what_runs(device, run, DATA_DIR)" in _code("06_serving")
    text = _markdown("06_serving")
    assert "the FAKE server that runs here without a GPU" not in text
    assert "or with `RUN_SERVER = False` on a GPU machine (the setup cell's output says which held" in text  # round 11


def test_06_fake_rows_name_no_model_in_table_sentences_and_bars():
    """A2: the FAKE server's rows said model tiny, as if a tiny model had been measured."""
    table, _ = _recorded()
    fake = _fake(table)
    assert set(ts.scenario_table(fake)["model"]) == {ts.FAKE_MODEL} == {"none (FAKE)"}
    said = serving_story.scenarios(fake, tables.stage_table(fake), "t")
    assert "(model none (FAKE)" in said and "tiny model" not in said and "variance model" not in said
    labels = [b[0] for b in serving_plots._bars(fake)]
    assert all("[FAKE, no model]" in label for label in labels) and not any("tiny" in label for label in labels)
    # the real recording keeps its models
    assert "(tiny model)" in serving_story.scenarios(table, tables.stage_table(table), "t")
    assert "labels every scenario tiny" not in _code("06_serving")


def test_06_fake_figure_is_marked_emulated_and_hatched():
    """C3: the FAKE figure looked exactly like the recorded one but for the end of its title."""
    table, _ = _recorded()
    fig = serving_plots.serving_figure(_fake(table), "this run, the FAKE server")
    ax = fig.axes[0]
    assert ax.get_title().startswith(serving_plots.EMULATED)  # round 5 C1, C2: heads the title, bars faded
    assert [p for p in ax.patches if p.get_width() > 0 and p.get_alpha() == serving_plots.EMULATED_ALPHA]
    real = serving_plots.serving_figure(table, "recorded")
    assert serving_plots.EMULATED not in real.axes[0].get_title()
    assert not any(p.get_alpha() == serving_plots.EMULATED_ALPHA for p in real.axes[0].patches if p.get_width() > 0)


def test_06_recorded_figure_parts_models_and_says_it_is_no_with_without_comparison():
    """C4: stock (tiny) sat right above patched (variance), with nothing saying the models differ."""
    table, _ = _recorded()
    fig = serving_plots.serving_figure(table, "recorded")
    ax = fig.axes[0]
    title = ax.get_title().replace("\n", " ")
    assert "models differ (stock: tiny / patched_bi1, patched_bi0: variance)" in title
    assert "not a with/without-the-fix comparison" in title
    assert {"model tiny", "model variance"} <= {t.get_text() for t in ax.texts}
    ys = list(ax.get_yticks())
    assert ys[2] - ys[1] > 1.5  # a gap between the last tiny bar and the first variance bar


def test_06_takeaways_say_what_notebook_07_compares_and_qualify_the_log_processes():
    """A5, A14: 07's servers are stock under the guard, not stock as released; the tails have NCCL/Python lines."""
    text = _markdown("06_serving")
    assert "Stock and patched on one model with the same requests" not in text
    # round 22 (D1): said once, in the result lead
    lead = re.sub(r"\s+", " ", str(serving_story.result_lead(DATA)))
    assert "a stock server without the guard and a patched server on one model" in lead
    assert "The kept lines of those servers' logs come from two processes" not in text
    assert "PyTorch's NCCL process group print as a process exits" in text  # round 8 D16


def test_06_fake_errors_and_views_are_marked_emulated(capsys):
    """A15: the FAKE server's error text, differences and stage rows read as vLLM's."""
    table, _ = _recorded()
    fake = _fake(table)
    ts.print_errors(fake)
    assert "(emulated by the FAKE server: no vLLM ran)" in capsys.readouterr().out
    ts.print_errors(table)
    assert "emulated" not in capsys.readouterr().out
    for view in (tables.stage_table(fake), ts.differences(fake), ts.error_summary(fake)):
        assert set(view[ts.SERVED_BY]) == {"FAKE server (emulated)"}
    assert set(tables.stage_table(table)[ts.SERVED_BY]) == {"vllm serve"}


def test_06_recorded_section_shows_settings_and_dispatch_first_then_the_tables(monkeypatch, capsys):
    """A10, D12, D14: settings and dispatch were promised first and came last; the dispatch table named no
    scenario; the vLLM arguments printed as one long dict; an IMA line twice; three 20-line tails."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda x: shown.append(x))
    serving.show_recorded(DATA, tail=8)  # round 22 (D6): notebook 06 prints the tails itself, last
    out = capsys.readouterr().out
    assert "vLLM args: {" not in out
    assert "vllm serve arguments" in shown[0].columns and "runs with" in shown[1].columns
    assert list(shown[1].columns)[0] == "scenario" and set(shown[1]["scenario"]) == {
        "stock",
        "patched_bi1",
        "patched_bi0",
    }
    assert "capture sizes" in str(shown[2]) and "outcome" in shown[3].columns  # round 9: capture sizes
    lines = [ln for ln in out.splitlines() if ln.startswith("--- stock: ") and "illegal memory access" in ln]
    assert len(lines) == len(set(lines))
    assert "last 8 lines" in out and "last 20 lines" not in out


def test_06_manager_demo_says_which_signal_ended_a_server_and_what_seconds_time():
    """D6: exit status -9 and 'seconds' were left to guess."""
    assert demo._status(-9) == "-9 (killed by SIGKILL)" and demo._status(3) == "3"
    assert "seconds, start to stopped" in _markdown("06_serving")


def test_06_tables_show_cells_whole_and_differences_sample_each_stage(capsys):
    """D10, D11: cells were cut off; the first 20 differences all came from one batch, mismatches as 5.0/NaN."""
    assert 'pd.set_option("display.max_colwidth", None)' in _code("06_serving")
    table, _ = _recorded()
    first = ts.first_differences(table)
    assert set(first["requests"]) == {48, 128} and str(first["first_token_mismatch"].dtype) == "Int64"
    assert "of each stage the first 5 with other tokens" in capsys.readouterr().out  # round 5 D4


def test_06_terms_are_defined():
    """D7: FULL/PIECEWISE, capture size, VLLM_BATCH_INVARIANT, ima_in_log, the variance model, the H100."""
    text = _markdown("06_serving")
    for term in ("a **FULL CUDA graph**", "a **capture size**", "`ima_in_log`: whether", "the **variance** model"):
        assert term in text, term
    assert "on the H100" not in text


# 07


def _guard(names):
    from flexfix.edition.tables import guard as tg

    return tg.recorded(DATA, names)


def test_07_every_recording_a_table_draws_from_prints_its_provenance():
    """B6: the eager section and the stopped-engines table drew from files whose provenance was never printed."""
    code = _code("07_replay_guard")
    for name in ("guard_stock_error", "guard_stock_error_17", "guard_stock_eager", "guard_patched_reference"):
        assert f'tables.provenance_line(recorded["{name}"][1])' in code, name


def test_07_serving_sentence_scopes_batch_variance_to_what_06_measured():
    """B7: 'with VLLM_BATCH_INVARIANT=0 those differ' was said of tiny servers; 06 showed it on the variance model."""
    from flexfix.edition.narrative import guard_serving
    from flexfix.edition.tables import guard as tg

    served, _ = tg.served(DATA)
    agree = tg.servers_agree(served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")])
    said = guard_serving.serving(served, agree)
    assert "and with `VLLM_BATCH_INVARIANT=0` those differ." not in said
    assert "on the `tiny` model;" in said  # review 3: the model read from the rows, 06's finding no longer typed


def test_07_frozen_decision_is_classed_as_a_decision_with_what_the_guard_saw():
    """A8: frozen_decision was called a moved layout, and a changed number reads as information, not an alarm."""
    from flexfix.edition.narrative import guard as story
    from flexfix.edition.tables import guard as tg

    view = tg.mutant_table(_guard(["guard026_mutants"])["guard026_mutants"][0]).set_index("mutant")
    assert "TritonAttentionMetadata.rswa_window: decision" in view.loc["frozen_decision", "alarms (field: kind)"]
    assert "rswa_window: decision None -> 16" in view.loc["frozen_decision", "the first alarm found"]
    said = story.mutants(view.reset_index())
    assert "TritonAttentionMetadata.rswa_window (decision: a bool, string, enum or None at capture" in said
    assert "TritonAttentionMetadata.block_table (strides: a moved layout" in said
    text = _markdown("07_replay_guard")
    assert "three of the class it checks, a moved layout" not in text
    assert "three of the class the guard checks (a layout that moves after capture)" not in text
    assert "a decision frozen at capture" in text and "even if that value is a number" in text


def test_07_a_field_no_kernel_reads_is_said_counted_as_information_where_the_recording_counted_it():
    """A9: 'left out by name' while the tables counted num_blocks_per_seq: pointer at every replay."""
    from flexfix.edition.narrative import guard as story
    from flexfix.edition.tables import guard as tg

    info = tg.information(_guard(["guard_false_alarms"])["guard_false_alarms"][0])
    said = story.not_read_counted(info)
    assert "`FlexAttentionMetadata.num_blocks_per_seq: pointer`" in said and "never as an alarm" in said
    assert story.not_read_counted(pd.DataFrame({"X.y: shape": [1]})) == ""
    text = _markdown("07_replay_guard")
    assert "are left out by name" not in text and "(next section)" not in text


def test_07_cpu_steps_are_written_as_cpu_without_a_stray_warning_or_bare_path(capfd, caplog):
    """A12, D15: CPU-built steps were written as guard_steps-cuda.json, the path shown bare, a WARNING printed."""
    from flexfix.guard.vllm_flex_build import guard_steps

    code = _code("07_replay_guard")
    assert 'results.write_results(RESULTS_DIR, "guard_steps", both, "cpu"' in code
    assert 'print(f"written to RESULTS_DIR/{path.name}")' in code
    with caplog.at_level(logging.DEBUG):
        _, message = guard_steps(48, [16, 200], "error")
    seen = capfd.readouterr()
    assert message and "flexfix replay guard" not in seen.out + seen.err  # vLLM's logger writes to stdout
    assert not [r for r in caplog.records if "flexfix replay guard" in r.getMessage()]


def test_07_engines_that_ran_the_same_batch_are_told_apart_by_max_num_seqs():
    """D18: '1 engine (17 requests) replayed no full graph' while two engines ran 17."""
    from flexfix.edition.narrative import guard as story
    from flexfix.edition.tables import guard as tg

    runs = _guard(["guard_stock_error", "guard_stock_error_17"])
    stopped = pd.concat(
        [runs["guard_stock_error"][0], runs["guard_stock_error_17"][0].query("guard == 'error'")], ignore_index=True
    )
    said = story.stopped(tg.engine_guard(stopped), "t")
    assert "1 engine (17 requests in max_num_seqs 17) replayed no FULL graph" in said


def test_07_cost_share_in_percent_and_terms_and_readme_pointers():
    """D13, D8, D23: a fraction beside a sentence in percent; undefined terms; README sections not in the edition."""
    from flexfix.edition.tables import guard as tg

    view = tg.guard_cost(_guard(["guard_cost"])["guard_cost"][0])
    assert "checking, % of wall time" in view and "checking, share of wall time" not in view
    assert (view["checking, % of wall time"] > 0.1).all()  # percent, not a fraction
    text = _markdown("07_replay_guard")
    for term in ("`BlockMask` is FlexAttention's map", "the **model runner** is", "`CudagraphDispatcher` picks",
                 "`FLEXFIX_GUARD=0`, like unset or `off`, means no guard"):  # fmt: skip
        assert term in text, term
    assert "the README's *Installing*" not in text and "the README's *Guarding a backend*" not in text
    assert "repository's README" in text
    assert "serving_tables.dispatch_table(served, served_prov)" in _code("07_replay_guard")


def test_06_says_why_patched_bi1_runs_flex_and_why_the_scenarios_serve_other_models():
    """D1, D2: why stock serves tiny and patched variance; how FLEX runs with VLLM_BATCH_INVARIANT=1 at all."""
    text = _markdown("06_serving")
    assert "`FlexAttentionBackend.supports_batch_invariance()` answer True" in text
    # round 22 (D1): why each model, said once, in the result lead
    lead = re.sub(r"\s+", " ", str(serving_story.result_lead(DATA)))
    assert "`stock` the tiny model, the model on which notebook 01 reproduces the crash" in lead


def test_07_eager_section_says_which_checks_it_shows_results_of():
    """D3: the engine sweep and every-request check were announced with no results shown."""
    assert "their answers are not compared" in _markdown("07_replay_guard")


def test_07_first_alarm_says_over_which_replays_it_counts_and_for_which_graph():
    """D5: 'first alarm at replay 187' was unexplained: the count runs over every graph of the engine."""
    from flexfix.edition.tables import guard as tg

    view = tg.engine_guard(_guard(["guard_stock_eager"])["guard_stock_eager"][0])
    assert list(view["first alarm at replay"]) == [187, 1] and list(view["first alarm's graph, tokens"]) == [24, 48]
    assert "counts every replay the guard checked in that engine, over all its graphs" in _markdown("07_replay_guard")


def test_07_says_what_patched_means_on_a_fixed_release():
    """D9: 'patched' FLEX engines on vLLM 0.26.0 were unexplained: the plugin leaves a fixed release as it is."""
    from flexfix.integration import vllm_patch

    assert "``apply()`` does nothing" in vllm_patch.__doc__  # a sliced (fixed) release
    assert "`patched` means an engine run with `FLEXFIX_PATCH=1`, under which the plugin should change nothing" in (
        _markdown("07_replay_guard")
    )


def test_07_the_eager_server_shows_the_guard_ran_its_steps_without_the_graph(capsys):
    """D4: nothing showed that the eager server ran any step without its graph."""
    from flexfix.edition.tables import guard as tg

    served, _ = tg.served(DATA)
    tg.print_guard_lines(served, "guard_eager")
    assert "flexfix replay guard (eager mode)" in capsys.readouterr().out
    assert 'guard_tables.print_guard_lines(served, "guard_eager")' in _code("07_replay_guard")


def test_07_the_picture_says_its_widths_are_parameters_not_the_tables():
    """D22: the toy picture's row widths differed from the tables' with nothing saying why."""
    assert "The picture's row widths are its parameters" in _markdown("07_replay_guard")
