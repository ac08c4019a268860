"""Notebooks 06 and 07 as a newcomer read their CPU execution at the current sources (review r0607, round 7): one
test per finding fixed, each tying the sentence, table or figure to what it states."""

import json
import logging
import re

import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from test_teaching_round4_06_07 import DATA, ROOT, _code, _markdown, _nb

from flexfix.edition import glossary
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.plots import serving as serving_plots
from flexfix.edition.tables import guard as guard_tables
from flexfix.edition.tables import serving as serving_tables
from flexfix.integration import serving

FAKE = ROOT / "tests" / "fake_vllm_server.py"


def _cell(name: str, start: str) -> str:
    """The notebook's markdown cell that begins with ``start``, its lines joined by spaces."""
    for cell in _nb(name)["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and text.startswith(start):
            return re.sub(r"\s+", " ", text)
    raise AssertionError(f"{name}: no markdown cell starts with {start!r}")


def _recorded():
    return serving.recorded_run(DATA)


def _fake(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))


# 06


def test_06_a1_a13_manager_text_claims_no_ordering_and_an_exited_server_has_no_stop_time(manager_demo_table):
    """A1: 'start to stopped can therefore be larger for the healthy case' beside a table showing the opposite;
    D13: 'SIGTERM to stopped' 0.0 for a server that had exited before any SIGTERM."""
    text = _cell("06_serving", "Its columns:")  # round 10: the columns follow the table
    assert "can therefore be larger" not in text and "the notebook's first request" not in text
    assert "`n/a` where the server had already exited before the manager's SIGTERM" in text
    demo = manager_demo_table.set_index("case")  # serving.manager_demo against the FAKE server (tests/conftest.py)
    stop = demo["seconds, SIGTERM to stopped"]
    assert stop["exit_at_start"] == "n/a" and demo.loc["exit_at_start", "seconds to healthy"] == "never"
    assert all(isinstance(stop[c], float) for c in ("healthy", "never_healthy", "ignore_sigterm"))  # they were stopped


def test_06_a2_plugin_lines_are_said_to_need_a_switch_as_the_plugin_and_the_recording_show(monkeypatch, caplog):
    """A2: 'each process that loads it writes one' beside a stock row with plugin_lines 0."""
    from flexfix.integration import vllm_plugin

    for name in ("FLEXFIX_PATCH", "FLEXFIX_GUARD", "FLEXFIX_GUARD_NOT_READ", "FLEXFIX_GUARD_STATS"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.DEBUG, logger="vllm.flexfix"):
        vllm_plugin.register()  # loaded with neither switch: nothing to say
    assert not [r for r in caplog.records if r.name.startswith("vllm.flexfix")]
    table, _ = _recorded()
    lines = table.set_index("scenario")["plugin_lines"]
    assert lines["stock"] == 0 and (lines.drop("stock") > 0).all()
    text = _cell("06_serving", "The model table gives")
    assert "each process that loads it writes one" not in text
    # round 21 B2: plugin_lines counts the patch's line, written only with FLEXFIX_PATCH=1
    assert "the plugin patches, and writes that line, only with `FLEXFIX_PATCH=1`" in text
    assert "the stock scenario does not set it, so its count is zero" in text
    takeaways = _cell("06_serving", "## Takeaways")
    assert "without it, as in the stock scenario, it writes none" in takeaways  # round 21 B2


def test_06_a3_the_fake_server_is_said_to_run_without_a_gpu_too():
    """A3: 'on a run without RUN_SERVER, the FAKE server's' on a run with RUN_SERVER True and no GPU."""
    text = _cell("06_serving", "Per scenario and stage")  # round 15: before the recorded tables, no FAKE aside
    assert "on a run without `RUN_SERVER`, the FAKE" not in text
    assert "Without a GPU, or with `RUN_SERVER = False` on a GPU machine" in _cell("06_serving", "## Harness self-test")


def test_06_a4_the_fake_servers_differences_name_dispatch_and_the_error_body():
    """A4: the FAKE server ignores max_num_seqs and padding, and its HTTP 500 body is not the real server's."""
    text = _cell("06_serving", "## Harness self-test")  # round 15: the FAKE server is described there
    unlike = text[text.index("**unlike it**") :]
    assert "it knows nothing of `max_num_seqs`, capture sizes or padding" in unlike
    assert "running PIECEWISE" in unlike and "a JSON error object" in unlike
    like = text[text.index("**like the recorded real server**") : text.index("**unlike it**")]
    assert "one that vLLM replays with a FULL graph" in like
    # notebook 07's recorded dispatch: a batch past one query block, max_num_seqs equal to it, PIECEWISE
    recorded = guard_tables.recorded(DATA)
    runs = pd.concat([recorded["guard_stock_error"][0], recorded["guard_stock_error_17"][0].query("guard == 'error'")])
    dispatch = glossary.decode_dispatch(guard_tables.dispatch_cases(runs))
    piecewise = dispatch[(dispatch["runs with"] != "FULL") & (dispatch["decode batch"] > 16)]
    assert not piecewise.empty and (piecewise["decode batch"] == piecewise["max_num_seqs"]).any()
    # the error bodies: the recorded server's is a JSON object, the FAKE server's a plain sentence
    table, _ = _recorded()
    errors = serving_tables.error_summary(table)
    assert errors["error"].str.contains("Error code: 500 - {'error': {'message'", regex=False).all()
    fake_source = FAKE.read_text()
    assert (
        '"message": "EngineCore encountered an issue.' in fake_source
        or "EngineCore encountered an issue" in fake_source
    )


def test_06_b6_07_b6_the_refusal_is_cited_where_it_is_recorded():
    """B6: 'stock 0.20.0 refuses the backend in that mode' with no output showing it: notebook 01's scenario (a)."""
    records = json.loads((DATA / "engine_scenarios-cuda.json").read_text())["records"]
    a = next(r for r in records if r["scenario"] == "a")
    assert a["status"] == "refused" and a["batch_invariant"] and a["patch"] == "none"
    assert "batch invariance not supported" in a["detail"]
    for name in ("06_serving", "07_replay_guard"):
        text = re.sub(r"\s+", " ", _markdown(name))
        assert "refuses the backend in that mode, as notebook 01's scenario (a) records: `refused`" in text, name


def test_06_b7_the_dispatch_is_said_to_be_computed_from_the_recorded_arguments():
    """B7: 'the recorded section below shows it for the recorded servers' of a table computed now."""
    # round 9b (D2): the rule left the first screen's goals for the recorded section, which computes the table
    recorded = next(c for c in _nb("06_serving")["cells"] if "## The recorded GPU run" in "".join(c["source"]))
    text = re.sub(r"\s+", " ", "".join(recorded["source"]))
    assert "it is computed when this notebook runs, by the installed vLLM's dispatcher from the recorded" in text
    assert "shows it for the recorded servers" not in _markdown("06_serving")


def test_06_c8_c9_one_dark_error_colour_gaps_between_rows_boxes_off_the_spine_and_no_nested_parentheses():
    """C8: error grey in the FAKE figure, black in the recorded one; not-run boxes touching and on the spine;
    C9: 'stock (none (FAKE)): together 20'."""
    table, _ = _recorded()

    def drawn_error(ax):  # the error bar's colour as drawn on white
        error = to_rgb(serving_plots.SERVING_KINDS["error"])
        bars = [p for p in ax.patches if p.get_width() > 0 and to_rgb(p.get_facecolor()) == error]
        assert bars
        rgb, alpha = to_rgb(bars[0].get_facecolor()), bars[0].get_alpha() or 1.0
        return tuple(alpha * c + (1 - alpha) for c in rgb)

    fake_ax = serving_plots.serving_figure(_fake(table), "fake").axes[0]
    real_ax = serving_plots.serving_figure(table, "recorded").axes[0]
    assert max(drawn_error(real_ax)) < 0.25  # the recorded error bar: dark
    assert min(drawn_error(fake_ax)) > 0.4  # round 9 (C1): the emulated one faded to grey, never the real black
    for ax in (fake_ax, real_ax):
        heights = {round(p.get_height(), 6) for p in ax.patches if p.get_width() > 0}
        assert heights and max(heights) < 1  # rows one apart: a gap between any two bars
        boxes = [p for p in ax.patches if p.get_width() > 0 and p.get_linestyle() == ":"]
        assert boxes and all(p.get_x() > 0 and p.get_x() + p.get_width() < 100 for p in boxes)  # off the spines
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels and not any(re.search(r"\([^)]*\(", label) for label in labels)  # no nested parentheses
    assert all("[FAKE, no model]" in t.get_text() for t in fake_ax.get_yticklabels())
    assert "stock [tiny]: together 48" in [t.get_text() for t in real_ax.get_yticklabels()]


def test_06_d11_each_term_is_defined_once_and_piecewise_where_it_is_used():
    """D11: query block, FULL, capture size, variance and tiny defined twice or thrice; PIECEWISE in no table."""
    text = re.sub(r"\s+", " ", _markdown("06_serving"))
    for definition in (
        "16 query tokens FlexAttention's kernel takes as one row",
        "is a number of tokens in a step (a decode step holds one per request) that vLLM captured a graph for",
        "larger Llama config, on which notebook 04 saw engines with",  # r20 A1: what 04 shows
        "the small one notebook 01 reproduces the crash on",
        "captures a whole decode step",
    ):
        assert text.count(definition) == 1, definition
    scenarios = _cell("06_serving", "## The scenarios")
    terms = scenarios[scenarios.index("Terms the tables use") : scenarios.index("Prompts are token ids")]
    assert "PIECEWISE" not in terms and "FULL" not in terms and "capture size" not in terms


def test_06_d12_the_dispatch_columns_are_explained_by_the_recorded_dispatch():
    """D12: 'largest capture size' 256 above max_num_seqs 128, unexplained beside 'FULL up to max_num_seqs'."""
    table, prov = _recorded()
    dispatch = serving_tables.dispatch_table(table, prov)
    assert (dispatch["largest FULL decode graph"] <= dispatch["max_num_seqs"]).all()
    assert (dispatch["largest capture size"] > dispatch["max_num_seqs"]).any()  # what the sentence explains
    text = _cell("06_serving", "## The recorded GPU run")
    assert "`largest FULL decode graph` is the largest capture size at most `max_num_seqs`" in text
    assert (
        "may be above `max_num_seqs`: a decode batch padded to one of those sizes runs with a PIECEWISE graph" in text
    )


# 07


def test_07_a5_a16_what_is_not_compared_is_named_and_the_not_read_sentence_states_the_current_guard():
    """A5: 'two things are not compared' then listing decisions, which alarm; A16: a changelog sentence."""
    import torch

    from flexfix.guard.replay_guard import ReplayGuard

    text = _cell("07_replay_guard", "Two things never alarm.")
    assert "says so rather than hiding" not in text
    assert (
        "**Numbers**" in text and "**Fields no captured kernel reads**" in text and "**Decisions**, by contrast" in text
    )
    assert "reports nothing of them, neither alarm nor information" in text
    # the guard of this commit: a not-read field that moves raises nothing, counts nothing
    guard = ReplayGuard("log", devices=None)
    buf = torch.zeros(4)
    guard.captured("g", {"M": {"kept": buf, "skipped": torch.zeros(3)}}, not_read=["M['skipped']"])
    guard.before_replay("g", {"M": {"kept": buf, "skipped": torch.zeros(5)[1:]}})
    assert not guard.alarms and not guard.information
    info = pd.DataFrame({"FlexAttentionMetadata.num_blocks_per_seq: pointer": [3]})
    said = re.sub(r"\s+", " ", str(guard_story.not_read_counted(info)))
    assert "this commit" not in said and "The guard leaves such fields out of its comparison" in said
    assert "This recording was made by an older guard" in said  # round 21 B3


def test_07_c10_the_caption_names_query_block_g():
    """C10: 'where the captured kernel starts reading row g', while the legend says query block g."""
    from flexfix.edition.plots import guard as guard_plots

    text = _cell("07_replay_guard", "## What a captured graph freezes")
    assert "starts reading query block `g`" in text and "reading row `g`" not in text
    assert "query block g" in guard_plots.CAPTURED


def test_07_d14_the_every_request_sizes_are_notebook_01s():
    """D14: 'every request alone and among' 17, 32, 47 beside kept batches 17, 32, 48, 128, unexplained."""
    from flexfix.measure import guard_sets

    run = guard_sets.SETS["guard_stock_eager"][0]
    nb01 = _code("01_reproduce_ima")
    found = re.search(r"every_request=\(([\d, ]+)\)", nb01)
    assert found and tuple(int(n) for n in found.group(1).split(",")) == run.every_request
    assert max(run.every_request) < max(run.generations)
    text = _cell("07_replay_guard", "That is the message a backend developer reads")
    assert "(*Every request checked: stock vs patched*: every request run alone" in text  # round 9: reworded
    assert "Only the kept batches (the `answers kept, batch sizes` column) are compared" in text


def test_07_d15_table_words_come_before_the_tables_and_every_engine_name_part_is_keyed():
    """D15: information, 'graphs captured', 'tensors per graph' undefined before their tables; the name key left out
    runner v1, TRITON_ATTN and VLLM_LOGGING_LEVEL=DEBUG."""
    cells = _nb("07_replay_guard")["cells"]
    first = next(i for i, c in enumerate(cells) if "guard_tables.false_alarms(table)" in "".join(c["source"]))
    before = re.sub(r"\s+", " ", "".join(cells[first - 1]["source"]))
    for word in ("`graphs captured` counts", "`tensors per graph`", "**Information** is a change", "`field: kind`"):
        assert word in before, word
    assert "(what that is, after these tables)" not in before
    key = _cell("07_replay_guard", "## On the GPU: stock vLLM 0.20.0")  # round 22 (D10): before the live engine
    recorded = guard_tables.recorded(DATA)
    shown = ("guard_stock_error", "guard_stock_error_17", "guard_stock_eager", "guard_patched_reference",
             "guard_v0_20_2", "guard_false_alarms", "guard026_false_alarms", "guard_debug", "guard_cost")  # fmt: skip
    names = {n for name in shown for n in recorded[name][0]["engine"]}
    parts = {re.sub(r" \d[\d,]*$", "", part) for name in names for part in name.split(", ")}
    parts -= {"tiny", "variance"}  # the model, keyed as `tiny` or `variance`
    missing = [p for p in parts if f"`{p.split('=')[0] if p.startswith('guard=') else p}" not in key]
    assert not missing, missing


def test_07_d17_a_field_read_outside_the_graph_alarms_until_listed():
    """D17: 'alarms at every replay' beside 'never alarm', without the way to list one's own field."""
    from flexfix.guard import vllm_metadata

    assert vllm_metadata.NOT_READ_ENV == "FLEXFIX_GUARD_NOT_READ"
    text = _cell("07_replay_guard", "## Guarding your own backend")
    assert "never reads inside the graph alarms at every replay, until you list it in `FLEXFIX_GUARD_NOT_READ`" in text


@pytest.mark.parametrize("name", ["06_serving", "07_replay_guard"])
def test_round7_notebooks_keep_their_structure(name):
    assert _nb(name)["nbformat_minor"] == 4
