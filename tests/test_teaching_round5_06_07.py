"""Notebooks 06 and 07 as a newcomer read their republished GPU edition at 595743f (review r0607, round 5): one
test per finding fixed."""

import re

import pandas as pd
from test_teaching_round4_06_07 import DATA, ROOT, _code, _markdown

from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_serving

# 07


def test_07_pointer_sentence_reads_the_tables_data_ptr():
    """A1: the text explained why the two tables' data_ptr differ; the GPU edition showed one address in both."""
    same = pd.DataFrame({"data_ptr": ["0x46117b40"] * 3})
    said = guard_story.pointers(same, same.copy())
    assert "share an address" in said and "differ" not in said and "0x46117b40" in said
    assert "most likely because the first run's buffer is freed" in re.sub(r"\s+", " ", said)  # review 3, honesty 7
    other = pd.DataFrame({"data_ptr": ["0x1"] * 3})
    assert "differ (0x46117b40, then 0x1)" in guard_story.pointers(same, other)
    text = _markdown("07_replay_guard")
    assert "which is why their `data_ptr` values differ" not in text and "hence another pointer" not in text
    assert "print(story.pointers(steps, fixed))" in _code("07_replay_guard")


def test_07_runner_values_and_dispatch_rows_are_said_as_the_tables_show_them():
    """A7: the 0.26.0 table's forced ``V1`` was not among the values named; A8: the dispatch table has one row per
    distinct (batch, max_num_seqs), not one per engine's batch."""
    text = _markdown("07_replay_guard")
    assert "or `V1` where a run forced the V1 runner" in text
    assert "one row for each batch of the recorded engines" not in text
    assert "one row for each distinct pair of a batch and a `max_num_seqs`" in text


def test_07_serving_says_what_the_alone_stage_was_compared_with_and_shows_the_columns():
    """A6: 'a request alone and in a batch was not compared' while every together stage was compared with alone."""
    from flexfix.edition.tables import guard as guard_tables

    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(
        served, [("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again")]
    )
    said = re.sub(r"\s+", " ", guard_serving.serving(served, agree))
    assert "was not compared" not in said
    assert "compared each request of a batch with the same request sent alone" in said
    assert (
        "every batched answer was bitwise equal to the same request alone in all 3 answering servers" in said
        and "guard_error compared none (0 of 48" in said.split("sent alone")[1]
    )
    assert '"compared", "bitwise_equal", "skipped"]' in _code("07_replay_guard")


# 06


def _recorded():
    from flexfix.integration import serving

    return serving.recorded_run(DATA)


def _fake(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))


def test_06_fake_run_heading_and_scenario_cells_say_emulated():
    """A5: 'What this run (against the FAKE server) measured'; its ima_in_log False, server exit and detail unmarked."""
    from flexfix.edition import tables
    from flexfix.edition.narrative import serving as serving_story
    from flexfix.edition.tables import serving as ts

    table, _ = _recorded()
    fake = _fake(table)
    said = serving_story.scenarios(fake, tables.stage_table(fake), "this run (against the FAKE server)")
    assert "**What this run (against the FAKE server) emulated (no vLLM ran" in said and "measured**" not in said
    assert "**What r measured**" in serving_story.scenarios(table, tables.stage_table(table), "r")
    shown = ts.scenario_table(fake)
    for column in ("ima_in_log", "server", "detail", "outcome"):
        assert all(str(v).endswith("(emulated)") for v in shown[column]), column
    real = ts.scenario_table(table)
    assert not any("emulated" in str(v) for column in ("ima_in_log", "server", "detail") for v in real[column])


def test_06_dispatch_table_is_labelled_computed_now_not_recorded(capsys, monkeypatch):
    """B1: the dispatch table read as recorded by the server; it is vLLM's dispatcher asked now from the arguments."""
    from flexfix.integration.serving import recording

    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    recording.show_recorded(DATA)
    assert "asked now, of the installed vLLM, from the recorded arguments (the server recorded no dispatch)" in (
        capsys.readouterr().out
    )
    text = _markdown("06_serving")
    assert "table is not in the recording, it is computed when this notebook runs" in text  # round 7: "That table"
    assert "asked now from the recorded arguments rather than recorded by the server" in text


def test_07_cost_names_its_statistic_and_shows_the_check_share_range():
    """B2: 'ratios of medians' beside unlabelled columns, and 'the checks' own time does not drift' with no spread."""
    from flexfix.edition.tables import guard as guard_tables

    view = guard_tables.guard_cost(guard_tables.recorded(DATA)["guard_cost"][0])
    assert guard_tables.SPREAD in view and all("–" in v for v in view[guard_tables.SPREAD])
    said = re.sub(r"\s+", " ", guard_story.cost(view))
    assert "over its repetitions" in said  # r20 D9: the statistic is named where the ratios are said
    assert "The tokens per second (the median repetitions', the `on / off` column)" in said
    assert "in ratios of medians" not in said
    text = _markdown("07_replay_guard")
    assert "the checks' own time does not" not in text
    assert "* tokens per second are the **median repetition's**, guard on and off" in text  # round 12: a bullet


def test_07_fixed_release_claims_cite_what_shows_them():
    """B3: 'vLLM 0.20.2 carries the same function' (only behaviour shown); B4: 'apply() leaves such a release as it
    is' on 0.26.0 with no output showing it."""
    text = _markdown("07_replay_guard")
    assert "vLLM 0.20.2 carries the same function as 0.20.0" not in text
    assert "notebook 02's release survey reads each release's `copy_to_persistent`" in text
    assert "here it behaves as 0.20.0" in text
    assert "under which the plugin changes nothing, since" not in text
    assert "notebook 02's check-patch table shows on 0.21.0; no output here shows it on 0.26.0" in text


def test_06_emulation_is_not_hatched_and_its_banner_covers_no_bar():
    """C1: hatching meant 'emulated' in the FAKE figure and 'tokens differ' in the recorded one; C2: the EMULATED
    banner was drawn over a bar."""
    from flexfix.edition.plots import serving as serving_plots

    table, _ = _recorded()
    for fig in (serving_plots.serving_figure(_fake(table), "fake"), serving_plots.serving_figure(table, "recorded")):
        ax = fig.axes[0]
        hatches = {p.get_hatch() for p in ax.patches if p.get_width() > 0 and p.get_facecolor()[:3] != (1, 1, 1)}
        tokens_differ = serving_plots.HATCH["tokens differ"]
        assert hatches <= {None, tokens_differ}, hatches  # the cross-hatch says other tokens only (round 19 C1)
        assert not any(serving_plots.EMULATED in t.get_text() for t in ax.texts)  # not inside the axes
    fake = serving_plots.serving_figure(_fake(table), "fake").axes[0]
    assert fake.get_title().startswith(serving_plots.EMULATED)
    faded = [p for p in fake.patches if p.get_width() > 0 and p.get_alpha() == serving_plots.EMULATED_ALPHA]
    assert faded and all(p.get_linewidth() == 0 for p in faded)  # round 6: no outline of their own
    labels = fake.get_legend_handles_labels()[1] + [t.get_text() for t in fake.get_legend().get_texts()]
    assert not any("emulated" in label for label in labels)  # round 6: the title says it, no legend entry


def test_06_figure_and_text_say_alone_stages_are_not_drawn():
    """C3: 'the figure splits each stage's bar the same way', while no alone stage has a bar."""
    from flexfix.edition.plots import serving as serving_plots

    table, _ = _recorded()
    ax = serving_plots.serving_figure(table, "recorded").axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels and not any(": alone " in label for label in labels)
    assert "alone stages not drawn: they are the reference" in ax.get_title().replace("\n", " ")
    text = _markdown("06_serving")
    assert "splits each stage's bar the same way" not in text
    assert "draws each together and stream stage (not alone: it is the reference" in text
    assert "hatched and marked" not in text and "bars faded, its title headed EMULATED" in " ".join(text.split())  # C1


def test_06_differences_sample_lists_other_tokens_first_and_says_how_many(capsys):
    """D3: head(20) cut the FAKE run's differences silently; D4: the sample showed only same-token rows."""
    from flexfix.edition.tables import serving as ts

    table, _ = _recorded()
    first = ts.first_differences(table)
    out = capsys.readouterr().out
    found = ts.differences(table)
    assert (
        f"{len(found)} answers differ from their reference" in out
        and "the first 5 with other tokens, then the first 5 with the same" in out
    )
    for _, stage in first.groupby(["scenario", "stage", "requests"], sort=False):
        flags = list(stage["tokens_equal"])
        assert flags == sorted(flags) and False in flags  # other tokens first, and shown
    assert "differences(table).head(" not in _code("06_serving")
    assert "serving_tables.first_differences(table)" in _code("06_serving")


def test_07_guard_sentences_count_replays_over_all_graphs_and_say_the_not_read_field_once():
    """D12: 'at replay 1 of its graph' beside a column counted over all its graphs; D15: the same bold sentence after
    both false-alarm recordings."""
    info = pd.DataFrame({"FlexAttentionMetadata.num_blocks_per_seq: pointer": [3]})
    full, again = guard_story.not_read_counted(info), guard_story.not_read_counted(info, first=False)
    assert full.startswith("**") and "**" not in again and "as said after the first run's tables" in again
    assert guard_story.not_read_counted(pd.DataFrame({"X.y: shape": [1]}), first=False) == ""
    assert "not_read(guard_tables.information(table), where)" in _code("07_replay_guard")
    engines = pd.DataFrame(
        {"requests": ["48"], "max_num_seqs": [128], "outcome": ["guard_refused"], "replays checked": [9],
         "first alarm at replay": [1], "fields named": ["F.x"]}
    )  # fmt: skip
    said = guard_story.stopped(engines, "here")
    assert "at its replay 1 (over all its graphs)" in said and "of its graph," not in said


def test_07_the_debug_recording_is_not_tied_to_this_runs_requests():
    """D16: 'Recorded: ... at `REQUESTS` requests' tied a recording to this run's parameter."""
    text = _markdown("07_replay_guard")
    assert "logging only, at `REQUESTS` requests" not in text
    assert "the second table's `requests` column (the recording's, not this run's `REQUESTS`)" in text


def test_06_manager_demo_shows_its_timeout_and_grace_and_says_what_status_0_is(manager_demo_table):
    """D5: the grace period was named but never given; never_healthy's exit status 0 was left unexplained."""
    table = manager_demo_table  # serving.manager_demo against the FAKE server (tests/conftest.py)
    assert list(table.columns[2:4]) == ["startup timeout, s", "grace, s"]
    assert (table["grace, s"] > 0).all() and (table["startup timeout, s"] > 0).all()
    never = table.set_index("case").loc["never_healthy"]
    assert never["exit status"] == "0" and "SIGTERM: shutting down" in never["what happened"]
    text = _markdown("06_serving")
    assert "`startup timeout, s` and `grace, s` are the case's settings" in text
    assert "`0` is a server that exited cleanly on its own or on the SIGTERM" in text


def test_06_scenario_table_columns_are_defined_where_the_table_is():
    """D7: startup_seconds was never defined, plugin_lines only in the takeaways."""
    text = _markdown("06_serving")
    before = text.split("## Takeaways")[0]
    assert "`startup_seconds` is the time from the server's start to its first healthy `GET /health`" in before
    assert "`plugin_lines` how many lines flexfix's plugin wrote to the server's log" in before


def test_06_first_screen_says_the_recordings_commit_need_not_be_the_editions():
    """D9: the recording's commit differs from the edition's, unremarked."""
    from flexfix.edition.narrative import serving as serving_story

    said = serving_story.what_runs("cuda", {"fake_server": "x.py"}, DATA)
    assert "that commit need not be this notebook's: what that run saved is shown" in said


def test_07_mutant_columns_not_recorded_and_two_references_are_said():
    """D13: frozen_decision's 3 of 32 beside 0 of 32, and the 'not recorded' cells, were left to guess."""
    text = _markdown("07_replay_guard")
    assert "Its two counts need not agree, since they compare with two references" in text
    assert "Where that column says `not recorded`, the recording has no run of the mutant without graphs" in text


# review of 09dcedd..HEAD (reviews3)


def test_06_first_screen_says_why_the_fake_server_runs_once(capsys):
    """Repetition: notebook_plan's print and what_runs both said why the FAKE server runs; what_runs alone says it."""
    from flexfix.edition.narrative import serving as serving_story
    from flexfix.integration import serving

    fake = ROOT / "tests" / "fake_vllm_server.py"
    run = serving.notebook_plan("cpu", True, ["stock"], None, [20], None, 8, fake)
    printed = capsys.readouterr().out
    said = serving_story.what_runs("cpu", run, DATA)
    assert "no GPU here" not in printed and "RUN_SERVER is False" not in printed
    assert f"the FAKE server {fake}, not vLLM" in printed and "there is no GPU here" in said


def test_publish_finds_the_fake_lead_what_runs_writes():
    """Repetition: publish's _FAKE had to match what_runs' bold lead word for word; one shared constant now (read by
    flexfix.edition.evidence, where the index's counting moved in round 21)."""
    from flexfix.edition import evidence
    from flexfix.edition.narrative import serving as serving_story

    assert evidence._FAKE is serving_story.FAKE_LEAD
    assert f"**{evidence._FAKE}**" in serving_story.what_runs("cpu", {"fake_server": "x.py"}, DATA)


def test_07_serving_sentence_takes_the_model_and_each_comparison_from_the_rows():
    """Honesty 1: 'that is the tiny model' and 06's variance finding were typed; 'bitwise equal:' led every count
    whether or not it was all of them; the server that compared nothing was left out."""
    from flexfix.edition.tables import guard as guard_tables

    served, _ = guard_tables.served(DATA)
    agree = guard_tables.servers_agree(served, [("patched_tiny", "patched_tiny_again")])
    said = re.sub(r"\s+", " ", guard_serving.serving(served, agree))
    assert "notebook 06's recording found" not in said and "on the `tiny` model;" in said
    other = served.copy()
    other["model"] = "variance"
    other["records"] = [
        [{**s, "bitwise_equal": s["compared"] - 1} if s.get("compared") and s["requests"] == 128 else s for s in r]
        for r in other["records"]
    ]
    said = re.sub(r"\s+", " ", guard_serving.serving(other, agree))
    assert "on the `variance` model;" in said and "`tiny`" not in said
    assert "not all bitwise equal: guard_eager 127 of 128 in a batch of 128" in said
    assert "bitwise equal: guard_eager 48 of 48 in a batch of 48," in said and "guard_error compared none" in said


def test_07_not_read_field_points_back_only_to_tables_that_said_it():
    """Honesty 8: 'as said after the first run's tables' was chosen by the recording's name, not by whether the
    first recording's information said anything; NotReadCounted remembers where it was said in full."""
    none = pd.DataFrame({"X.y: shape": [1]})
    info = pd.DataFrame({"FlexAttentionMetadata.num_blocks_per_seq: pointer": [3]})
    not_read = guard_story.NotReadCounted()
    assert not_read(none, "patched vLLM 0.20.0") == ""
    full = str(not_read(info, "vLLM 0.26.0"))
    assert full.startswith("**") and "as said after" not in full  # the first that says it says it in full
    again = re.sub(r"\s+", " ", str(not_read(info, "vLLM 0.27.0")))
    assert "**" not in again and "as said after the tables of vLLM 0.26.0." in again


def test_07_frozen_decision_fields_said_to_hold_a_value_only_where_shown():
    """Honesty 9: 'hold a value at every later step' while the tables show the first alarmed replay only."""
    text = _markdown("07_replay_guard")
    assert "hold a value at every later step" not in text
    assert "Both were `None` at the capture step (no window) and held a value at the replay of its first alarm" in text
