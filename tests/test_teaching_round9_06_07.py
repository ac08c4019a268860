"""Notebooks 06 and 07 as a newcomer read the published GPU edition (review r0607, round 9): one test per finding
fixed, each tying the sentence, table or figure to what it states."""

import json
import re

import pandas as pd
import pytest
from test_teaching_round4_06_07 import DATA, ROOT, _markdown, _nb

from flexfix.edition import glossary
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import guard_serving
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.plots import serving as serving_plots
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration import serving
from flexfix.integration.serving import demo


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _cell_with(name: str, contains: str, kind: str = "markdown") -> str:
    for cell in _nb(name)["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == kind and contains in text:
            return text
    raise AssertionError(f"{name}: no {kind} cell holds {contains!r}")


def _stopped() -> pd.DataFrame:
    rec = guard_tables.recorded(DATA)
    return pd.concat(
        [rec["guard_stock_error"][0], rec["guard_stock_error_17"][0].query("guard == 'error'")], ignore_index=True
    )


# A1


def test_07_a1_full_graphs_legend_states_the_max_num_seqs_condition_the_dispatch_table_shows():
    """A1: 'FULL graphs for decode batches' while a decode batch of a `full graphs` engine ran PIECEWISE."""
    legend = _flat(_cell_with("07_replay_guard", "An engine's name lists its settings"))
    assert "FULL graphs for decode batches whose padded size is at most `max_num_seqs`" in legend
    assert "(FULL graphs for decode batches, PIECEWISE otherwise)" not in legend
    dispatch = glossary.decode_dispatch(guard_tables.dispatch_cases(_stopped()))
    above = dispatch[dispatch["padded to"] > dispatch["max_num_seqs"]]
    assert len(above) and (above["runs with"] != "FULL").all()  # the case the legend now names
    at_most = dispatch[dispatch["padded to"] <= dispatch["max_num_seqs"]]
    assert (at_most["runs with"] == "FULL").all()


# B1


def _demo(first: float, later: float, imported: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"case": "healthy", "seconds importing openai": imported, "seconds of the completion": first},
            {"case": "exit_at_start", "seconds importing openai": "n/a", "seconds of the completion": "n/a"},
            {"case": "ignore_sigterm", "seconds importing openai": 0.0, "seconds of the completion": later},
        ]
    )


def test_06_b1_the_first_requests_import_is_timed_apart_and_the_rest_is_not_asserted():
    """B1: 'the first is the slowest: it imports openai and opens its first connection', a cause never measured."""
    said = _flat(serving_story.manager_times(_demo(1.6, 0.1, 1.2)))
    assert "took 1.2 s in the healthy case (`seconds importing openai`" in said
    assert "is still the slowest" in said and "not measured" in said
    assert "which also imports the `openai` client library and opens its first connection" not in said
    said = _flat(serving_story.manager_times(_demo(0.2, 0.1, 1.4)))
    assert "took 1.4 s" in said and "is still the slowest" not in said and "not more than twice" in said
    said = _flat(serving_story.manager_times(_demo(0.1, 0.1, 0.0)))  # already imported: no import sentence
    assert "Importing" not in said
    assert demo._import_seconds("json") < 1.0  # what the column times: an import, here of a loaded module
    text = _flat(_markdown("06_serving"))
    assert "`seconds importing openai` is the import of the `openai` client library, timed apart" in text
    assert "(health, import, completion, stop)" in text


# C1


def test_06_c1_the_emulated_error_bar_is_faded_grey_like_every_emulated_bar_not_the_real_black():
    """C1: the FAKE error bar was near-black, hard to tell from the recorded figure's real error bar."""
    table, _ = serving.recorded_run(DATA)
    fake_table = table.assign(command=[["python", "tests/fake_vllm_server.py"]] * len(table))
    fake = serving_plots.serving_figure(fake_table, "fake").axes[0]
    drawn = [p for p in fake.patches if p.get_width() > 0 and p.get_linewidth() == 0]
    errors = [p for p in drawn if p.get_label() == "error" or p.get_facecolor()[:3] == (0.0, 0.0, 0.0)]
    assert errors and all(p.get_alpha() == serving_plots.EMULATED_ALPHA for p in errors)
    assert {p.get_alpha() for p in drawn} == {serving_plots.EMULATED_ALPHA}  # faded as far as every other bar
    assert not any(p.get_hatch() for p in errors)  # round 19 C1: faded, not hatched
    legend = dict(zip([t.get_text() for t in fake.get_legend().get_texts()], fake.get_legend().legend_handles))
    assert legend["error"].get_alpha() == serving_plots.EMULATED_ALPHA
    real = serving_plots.serving_figure(table, "rec").axes[0]
    real_errors = [p for p in real.patches if p.get_width() > 0 and p.get_facecolor()[:3] == (0.0, 0.0, 0.0)]
    assert real_errors and all(p.get_alpha() in (None, 1.0) and not p.get_hatch() for p in real_errors)


# D3


def test_07_06_d3_capture_sizes_are_listed_and_each_padded_size_is_the_next_listed():
    """D3: 'padded to 24' and a largest capture size of twice max_num_seqs could not be worked out by hand."""
    dispatch = glossary.decode_dispatch(guard_tables.dispatch_cases(_stopped()))
    said = _flat(guard_serving.capture_sizes(dispatch))
    for m, rows in dispatch.groupby("max_num_seqs"):
        found = re.search(rf"`max_num_seqs` {m}: ([\d, ]+)[;.]", said)
        assert found, m
        sizes = [int(x) for x in found.group(1).split(", ")]
        assert max(sizes) == rows["largest capture size"].iloc[0]
        for _, r in rows.iterrows():
            assert r["padded to"] == min(s for s in sizes if s >= r["decode batch"])
    assert "counts a step's tokens, not its requests" in said and "twice `max_num_seqs`" in said
    assert "guard_serving.capture_sizes(dispatch)" in _cell_with("07_replay_guard", "decode_dispatch", "code")
    assert "capture_sizes(dispatch)" in (ROOT / "flexfix" / "integration" / "serving" / "recording.py").read_text()


# D4


def test_06_d4_takeaways_state_notebook_07s_serving_result_read_from_its_recording():
    """D4: the 06 takeaways never said what notebook 07's like-with-like serving comparison found."""
    said = _flat(guard_serving.in_short(DATA))
    table, _ = guard_tables.served(DATA)
    rows = table.set_index("scenario")
    for s in rows.loc["guard_error", "records"]:
        if s.get("stage") == "together" and s.get("errored"):
            assert f"{s['errored']} of {s['requests']} concurrent requests" in said
    agree = guard_tables.servers_agree(table, guard_serving.PAIRS)
    for _, r in agree.iterrows():
        assert f"{int(r['bitwise equal'])} of {int(r['of'])} in a batch of {int(r['concurrent requests'])}" in said
    assert f"`{rows['model'].iloc[0]}` model" in said
    assert "guard_serving.in_short(DATA_DIR)" in _cell_with("06_serving", "in_short", "code")
    cells = _nb("06_serving")["cells"]
    at = next(i for i, c in enumerate(cells) if "in_short" in "".join(c["source"]))
    assert "".join(cells[at + 1]["source"]).startswith("## Harness self-test")  # round 15: the FAKE part after it
    assert "".join(cells[-1]["source"]).startswith("## Takeaways")


# D6


def test_07_d6_eager_says_only_the_kept_batches_are_compared_and_why_the_sweeps_ran():
    text = _flat(_cell_with("07_replay_guard", "`eager`: the right answer instead of an error"))
    assert "Only the kept batches (the `answers kept, batch sizes` column) are compared" in text
    assert "only to give the guard many replays to check" in text
    assert "taken over unchanged, not chosen here" in text  # round 19 A1: no fault count of notebook 01 claimed


# D7


def test_07_d7_the_older_guard_counting_a_not_read_pointer_as_information_is_explained():
    info = pd.DataFrame(columns=["FlexAttentionMetadata.num_blocks_per_seq: pointer"])
    said = _flat(guard_story.not_read_counted(info))
    assert "already had the field on that list" not in said  # round 21 B3: not shown, the result only
    assert "each change of the field counted as information (a `pointer` too, which alarms in any field off" in said


# D8


def test_07_d8_the_python_example_is_in_the_notebook_and_runs(capsys):
    text = _cell_with("07_replay_guard", "## Guarding your own backend")
    assert "README, which this edition does not include" not in text
    block = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert block and "guard.captured(" in block.group(1) and "guard.before_replay(" in block.group(1)
    exec(compile(block.group(1), "07-example", "exec"), {})  # noqa: S102 - the notebook's own example
    assert "MyMetadata.block_table: strides" in capsys.readouterr().out


# D9


def test_07_d9_forward_context_is_a_term():
    terms = _flat(_cell_with("07_replay_guard", "Terms used from here on"))
    assert "the **forward context** is vLLM's per-step context object" in terms


# D10


def test_07_d10_the_dispatch_rule_is_said_once_before_the_table():
    text = _flat(_markdown("07_replay_guard"))
    assert text.count("is no safeguard") == 1
    before = _flat(_cell_with("07_replay_guard", "Which steps replay a FULL graph at all"))
    assert "`max_num_seqs` equal to the batch is no safeguard" in before
    dispatch = glossary.decode_dispatch(guard_tables.dispatch_cases(_stopped()))
    said = _flat(guard_story.dispatch(dispatch, guard_tables.engine_guard(_stopped())))
    assert "no safeguard" not in said and "at most `max_num_seqs`" not in said
    assert "What the dispatcher runs each recorded batch with" in said


# D11


def test_07_d11_frozen_decision_says_why_it_matches_neither_reference():
    text = _flat(_cell_with("07_replay_guard", "## Planted bugs of the class"))
    assert "the steps that replay no FULL graph (the prompt's prefill steps among them" in text
    assert "so that a request can match neither" in text


# D1


def test_06_d1_the_first_cell_says_where_the_real_result_is():
    first = _flat("".join(_nb("06_serving")["cells"][0]["source"]))
    assert first.index("**Where the result is**") < first.index("**What you will learn**")
    assert "*The recorded GPU run*" in first.split("**What you will learn**")[0]


@pytest.mark.parametrize("name", ["06_serving", "07_replay_guard"])
def test_round9_notebooks_stay_nbformat_4_4_without_ids(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 4) and not any("id" in c for c in nb["cells"])
