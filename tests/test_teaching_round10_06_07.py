"""Notebooks 06 and 07 as a newcomer read the published GPU edition (review r0607, round 10): one test per finding
fixed, each tying the sentence, table or figure to what it states."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from test_teaching_round4_06_07 import DATA, ROOT, _nb

from flexfix.edition import tables
from flexfix.edition.narrative import guard as guard_story
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.plots import serving as serving_plots
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration import serving


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", str(text))


def _cells(name: str, kind: str = "markdown") -> list[str]:
    return ["".join(c["source"]) for c in _nb(name)["cells"] if c["cell_type"] == kind]


def _cell_with(name: str, contains: str, kind: str = "markdown") -> str:
    for text in _cells(name, kind):
        if contains in text:
            return text
    raise AssertionError(f"{name}: no {kind} cell holds {contains!r}")


# A1


def test_07_a1_shapes_change_when_the_longest_sequence_needs_more_kv_blocks_not_every_step():
    """A1: 'the fix changes them every step' while the fixed copy's replay 1 keeps the capture's shape."""
    text = _flat("\n".join(_cells("07_replay_guard")))
    assert "changes them every step" not in text and "changes shapes every step" not in text
    said = (
        "the fix changes `kv_indices`' shape whenever the step's longest sequence needs more KV blocks than at capture"
    )
    assert said in text
    assert "changes `kv_indices`' shape whenever the step's longest sequence needs more KV blocks" in text
    # in a child process: building the steps in this one leaves pytest's log capture attached where a later test
    # (round 4's stray-warning check) would see the quiet guard's records
    script = (
        "from flexfix.guard.vllm_flex_build import guard_steps\n"
        "from flexfix.integration import vllm_patch\n"
        "with vllm_patch.patched():\n"
        "    fixed, _ = guard_steps(48, [16, 200, 600], 'error')\n"
        "print(fixed[['longest sequence', 'kv_indices shape']].to_json(orient='records'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    fixed = pd.DataFrame(json.loads(out.stdout.strip().splitlines()[-1]))
    capture = fixed.iloc[0]
    for _, step in fixed.iloc[1:].iterrows():  # 16 tokens per KV block: more blocks than at capture, another shape
        more_blocks = -(-int(step["longest sequence"]) // 16) > -(-int(capture["longest sequence"]) // 16)
        assert (str(step["kv_indices shape"]) != str(capture["kv_indices shape"])) == more_blocks, step
    # the engines too: the shape changed in at most every replay checked, not necessarily every one
    for name in ("guard_false_alarms", "guard026_false_alarms"):
        table = guard_tables.recorded(DATA)[name][0]
        info, alarms = guard_tables.information(table), guard_tables.false_alarms(table).set_index("engine")
        column = "FlexAttentionMetadata.block_mask.kv_indices: shape"
        if column in info:
            checked = alarms.loc[info.index, "replays checked"]
            assert (info[column] <= checked).all()


# the FAKE figure's right-hand note


def test_06_serving_figure_keeps_a_margin_right_of_its_longest_count():
    """The right-hand 'N equal; N same tokens, other logprobs (of N)' ended about 10 px from the edge."""
    table, _ = serving.recorded_run(DATA)
    fig = serving_plots.serving_figure(table, "t")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width = fig.bbox.width
    right = max(t.get_window_extent(renderer).x1 for t in fig.axes[0].texts)
    assert width - right >= 0.02 * width, (width, right)
    assert serving_plots.RIGHT_ROOM < 1


# D1


def test_06_d1_the_result_leads_read_from_the_recordings():
    code = _cell_with("06_serving", "story.what_runs(", "code")
    assert "story.result_lead(DATA_DIR, then=story.what_runs(device, run, DATA_DIR))" in code
    first = _flat(_cells("06_serving")[0])
    assert "the setup cell's output, just below, states it first" in first
    said = _flat(serving_story.result_lead(DATA))
    table, _ = serving.recorded_run(DATA)
    stages = tables.stage_table(table)
    for _, sc in table.iterrows():
        mine = stages[stages["scenario"] == sc["scenario"]]
        assert _flat(serving_story.meaning(sc, mine)) in said
        assert f"`VLLM_BATCH_INVARIANT={sc['VLLM_BATCH_INVARIANT']}`" in said
    batch = stages[(stages["stage"] == "together") & (stages["scenario"] == "patched_bi1")]  # round 13: stream apart
    assert f"all {int(batch['compared'].sum())} batched answers" in said
    assert "notebook 07's *Serving* recording" in said
    missing = _flat(serving_story.result_lead(ROOT / "no-such-data"))
    assert "not recorded yet" in missing and "Notebook 07's *Serving* recording" in missing


# D2


def test_06_d2_the_terms_are_a_bulleted_list():
    terms = _cells("06_serving")[0].split("Terms used from here on", 1)[1]
    bullets = [b for b in terms.split("\n") if b.startswith("* ")]
    for term in ("**query block**", "**FULL CUDA graph**", "**PIECEWISE**", "**dispatch**", "**replay guard**"):
        assert any(term in b for b in bullets), term
    assert any("**capture size**" in b and "**padded up**" in b for b in bullets)
    assert any(b.startswith("* `max_num_seqs`") for b in bullets)


# D4


def test_06_d4_the_piecewise_batch_says_why_it_is_padded_above_max_num_seqs():
    from flexfix.edition import glossary

    text = _flat(_cell_with("06_serving", "**unlike it**"))
    # round 12 (D2): the dispatch detail left the FAKE server's bullets for *The recorded GPU run*, which says it
    assert "*The recorded GPU run* shows what vLLM runs each recorded batch with" in text
    rec = guard_tables.recorded(DATA)
    runs = pd.concat([rec["guard_stock_error"][0], rec["guard_stock_error_17"][0].query("guard == 'error'")])
    dispatch = glossary.decode_dispatch(guard_tables.dispatch_cases(runs))
    equal = dispatch[(dispatch["decode batch"] == dispatch["max_num_seqs"]) & (dispatch["runs with"] != "FULL")]
    assert len(equal) and (equal["padded to"] > equal["decode batch"]).all()


# D5


def test_07_d5_vllms_no_graph_mode_is_not_called_eager():
    text = _flat(_cell_with("07_replay_guard", "Which steps replay a FULL graph at all"))
    assert "no graph at all (eager)" not in text
    assert "vLLM's mode `NONE`" in text and "not the guard's `eager` mode" in text


# D6


def test_07_d6_the_refused_replay_is_said_not_to_have_run_and_runs_with_computed_now():
    text = _flat(_cell_with("07_replay_guard", "The `runs with` column"))
    assert "the others replayed one" not in text and "is what the engines below did" not in text
    assert "computed now" in text and "refused that replay before it ran" in text


# D8


def test_07_d8_the_not_read_column_is_marked_in_the_table():
    table = guard_tables.recorded(DATA)["guard_false_alarms"][0]
    info = guard_tables.information(table)
    marked = [c for c in info.columns if c.endswith(guard_tables.NOT_READ_MARK)]
    assert marked == [f"FlexAttentionMetadata.num_blocks_per_seq: pointer{guard_tables.NOT_READ_MARK}"]
    said = _flat(guard_story.not_read_counted(info))
    assert "`FlexAttentionMetadata.num_blocks_per_seq: pointer` above" in said
    assert f"`{guard_tables.NOT_READ_MARK.strip()}`" in _flat(_cell_with("07_replay_guard", "Words of these tables"))
    assert not any(c.endswith(guard_tables.NOT_READ_MARK) for c in info.columns if "max_seq_len" in c)


# D9


def test_07_d9_doc_ids_is_explained_where_its_column_shows():
    info = guard_tables.information(guard_tables.recorded(DATA)["guard_false_alarms"][0])
    assert "FlexAttentionMetadata.doc_ids: shape" in info.columns
    text = _flat(_cell_with("07_replay_guard", "Words of these tables"))
    assert "`FlexAttentionMetadata.doc_ids` is FlexAttention's map from each query token" in text


# D10


def test_07_d10_the_without_graphs_counts_are_read_against_n_of_n():
    text = _flat(_cell_with("07_replay_guard", "`requests as without graphs`"))
    assert "below all of them" not in text and "all `N of N`, that the graph changed nothing" in text
    view = guard_tables.mutant_table(guard_tables.recorded(DATA)["guard026_mutants"][0])
    values = view["requests as without graphs"].astype(str)
    assert values.str.fullmatch(r"\d+ of \d+|not recorded").all()


# D11


def test_07_d11_a_pair_is_defined_and_counted_as_pairs():
    cost = guard_tables.guard_cost(guard_tables.recorded(DATA)["guard_cost"][0])
    said = _flat(guard_story.cost(cost))
    for _, r in cost.iterrows():
        n = int(r["repetitions"])
        assert f"{r['lowest pair']:.2f}–{r['highest pair']:.2f}, over {n} pair{'s' * (n != 1)})" in said
    assert "a pair: one repetition's guard-on run and the guard-off run beside it" in said
    assert "a **pair** is one repetition" in _flat(_cell_with("07_replay_guard", "## What it costs"))


# D12


def _demo(left: list[int], status: list[str]) -> pd.DataFrame:
    cases = ["healthy", "exit_at_start", "never_healthy", "ignore_sigterm"]
    return pd.DataFrame(
        {
            "case": cases,
            "exit status": status,
            "processes left": left,
            "seconds of the completion": [0.5, "n/a", "n/a", 0.1],
            "seconds importing openai": [0.9, "n/a", "n/a", 0.0],
        }
    )


def test_06_d12_the_manager_table_comes_first_and_its_conclusion_is_read_from_it():
    cells = _nb("06_serving")["cells"]
    at = next(i for i, c in enumerate(cells) if "serving.manager_demo(" in "".join(c["source"]))
    before, after = "".join(cells[at - 1]["source"]), "".join(cells[at + 1]["source"])
    assert "`startup timeout, s`" not in before and after.startswith("Its columns:")
    assert "* `seconds, start to stopped`" in after
    said = _flat(serving_story.manager_times(_demo([0, 0, 0, 0], ["0", "1", "0", "-9 (killed by SIGKILL)"])))
    assert said.startswith("**All 4 cases left no process of their group behind; only ignore_sigterm ended by SIGKILL")
    said = _flat(serving_story.manager_times(_demo([0, 2, 0, 0], ["0", "1", "0", "0"])))
    assert said.startswith("**3 of 4 cases left no process of their group behind (exit_at_start did)")
    assert "no server ended by SIGKILL" in said


@pytest.mark.parametrize("name", ["06_serving", "07_replay_guard"])
def test_round10_notebooks_stay_nbformat_4_4_without_ids(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 4) and not any("id" in c for c in nb["cells"])
