"""Teaching round 11, notebooks 01 and 02: a newcomer's reading of a CPU execution of the current sources (findings
A1-A4, the legend point under C, D1 and D2 of r0102). Each test ties a sentence, table or figure to the data it states,
or to the notebook text; the generated sentences must hold on a CPU and on a GPU run."""

import matplotlib
import pandas as pd
from test_plots import cpu_index_errors, gpu_died_at_first_replay, live_gpu_wrong_results
from test_teaching_01_03 import DATA
from test_teaching_round4_01_02 import _kernel
from test_teaching_round7_01_02 import _cell

from flexfix.edition import plots, schemas
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.narrative.cpu_analog import analog_outcomes
from flexfix.edition.tables import outcome_cause as cause_tables
from flexfix.measure import record

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# A1: the CPU analog's own index errors and silently wrong replays are named, not denied, and they add nothing to the
# GPU recordings; on a GPU the sentence is not there (its own runs are a recording of their own).


def _counts(runs):
    strided = runs[(runs["copy"] == "as_strided") & (runs["batch"] > 16)]
    errors = int((strided["status"] == "index_error").sum())
    silent = sum(1 for recs in strided["records"] for r in recs if r.get("outcome") == "wrong_result")
    return errors, silent


def test_a1_the_cpu_analog_names_its_own_wrong_replays():
    kernel, kernel_prov = _kernel()
    runs, prov = cause_tables.recorded(DATA)
    cpu = cpu_index_errors()
    errors, silent = _counts(cpu)
    assert errors and silent
    said = str(cause_story.same_seeds(kernel, kernel_prov, runs, prov, cpu, "cpu"))
    assert "it adds no recorded crash or silently wrong answer" not in said
    assert f"{errors} runs of its own ended in an index error" in said
    assert f"{silent} replays of its own answered silently wrong" in said
    assert "not a GPU's, so it adds nothing to which way a GPU run ends" in said
    # one wrong replay, no index error: said as it is
    one = cpu.copy()
    one["status"] = "ok"
    one["records"] = [[r for r in recs if r["outcome"] != "index_error"] for recs in one["records"]]
    one = one.iloc[[0]]
    alone = analog_outcomes(one, "cpu")
    assert "1 replay of its own answered silently wrong" in alone and "index error" not in alone
    # no wrong step at all: no wrong replay is claimed
    right = analog_outcomes(cpu[cpu["copy"] == "sliced"], "cpu")
    assert "silently wrong" not in right and "adds nothing to which way a GPU run ends" in right
    # on a GPU, the sentence is absent
    assert analog_outcomes(live_gpu_wrong_results(), "cuda") == ""
    gpu = str(cause_story.same_seeds(kernel, kernel_prov, runs, prov, kernel, "cuda"))
    assert "CPU analog" not in gpu


# A2: the torch-only section's opening gives the two-stage rule: a pad first, then the memory in front.


def test_a2_torch_only_opening_gives_the_two_stage_rule():
    opening = _cell("01_reproduce_ima", "## Torch-only reproduction, both copies, several seeds")
    flat = " ".join(opening.split())
    assert "depends on the memory in front of the KV cache, not on the copy" not in flat
    # round 22, D5: the two-stage rule is said once, in the section on what decides, and the opening points there
    assert 'not the copy decides which (section "Crash or wrong answer: what decides")' in flat
    decides = " ".join(_cell("01_reproduce_ima", "So a misread cell is either a page of the cache").split())
    assert "or a `-1` pad" in decides and "only whether the address is **mapped**" in decides


# A3: scenario (c) is a completed run, not evidence that one query block reads correctly.


def test_a3_scenario_c_is_not_said_to_show_safety():
    said = " ".join(_cell("01_reproduce_ima", "What the scenarios are for:").split())
    assert "shows that one query block is safe" not in said
    assert "(c) completed without a fault" in said and "follows from the mechanism" in said
    assert "which compared only request 0 with itself alone" in said  # round 20, A2: request 0 was compared


# A4: 02 does not say that 01 reran live; it says when 01 does.


def test_a4_the_live_rerun_is_conditional():
    safety, safety_prov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, cost_prov = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    _, control_provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    from flexfix.edition.tables.workarounds import workaround_table

    said = str(workarounds.without_plugin(workaround_table(safety, cost), "a", "b", safety_prov, control_provs))
    assert "also reruns it live" not in said
    assert "reruns it live only when it is executed on a GPU with its engine runs switched on" in said
    assert "otherwise it shows only the recorded runs" in said
    # and notebook 01 indeed reruns only on a GPU with RUN_ENGINE
    code = [c for c in _notebook_code("01_reproduce_ima") if "every_live" in c and "display(live_rows)" in c]
    assert code and all('if device == "cuda" and RUN_ENGINE' in c for c in code)


def _notebook_code(stem):
    from test_teaching_01_03 import cells, text

    return [text(c) for c in cells(stem) if c["cell_type"] == "code"]


# C: a copy whose runs draw no line (one measured point a run) has a marker-only legend entry.


def _legend_handle(fig, start):
    legend = fig.axes[1].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    found = [h for h, lab in zip(legend.legend_handles, labels) if lab.startswith(start)]
    assert len(found) == 1, (start, labels)
    return found[0]


def test_c_legend_sample_is_a_marker_where_no_line_is_drawn():
    fig = plots.replay_errors(gpu_died_at_first_replay(), "t")
    assert _legend_handle(fig, "as_strided").get_linestyle() == "None"
    plt.close(fig)
    fig = plots.replay_errors(live_gpu_wrong_results(), "t")  # markers only since round 14, C1: no run draws a line
    assert _legend_handle(fig, "as_strided").get_linestyle() == "None"
    assert _legend_handle(fig, "sliced").get_linestyle() == "None"
    plt.close(fig)
    kernel, _ = _kernel()  # the recorded H100 runs: as_strided stopped after the capture step
    fig = plots.replay_errors(kernel, "t")
    assert _legend_handle(fig, "as_strided").get_linestyle() == "None"
    assert _legend_handle(fig, "sliced").get_linestyle() == "None"
    plt.close(fig)


# D1: a run right at every step says which tolerance it was under (bfloat16 on a GPU, float32 on CPU).


def test_d1_right_runs_name_their_tolerance():
    kernel, _ = _kernel()
    said = str(reproduce.kernel_outcomes(kernel, "t", both_faces=False))
    line = next(x for x in said.splitlines() if x.startswith("* `sliced`"))
    assert "under the bfloat16 tolerance 5e-02" in line
    errors = [r["max_error"] for recs in kernel[kernel["copy"] == "sliced"]["records"] for r in recs]
    assert max(errors) < 5e-2  # the tolerance the sentence names holds for every step it summarises
    cpu = str(reproduce.kernel_outcomes(cpu_index_errors(), "t", both_faces=False))
    assert "under the float32 tolerance 1e-04" in cpu and "bfloat16" not in cpu
    mixed = pd.concat([kernel[kernel["copy"] == "sliced"], cpu_index_errors()[lambda t: t["copy"] == "sliced"]])
    assert "tolerance" not in str(reproduce.kernel_outcomes(mixed, "t", both_faces=False))


# D2: under the recorded H100 runs, a pointer to the placement runs that ran the same seeds and may end otherwise.


def test_d2_recorded_runs_point_to_the_placement_runs():
    read = " ".join(_cell("01_reproduce_ima", "*How to read it:* as the figure of this run above.").split())
    assert "These recorded runs left the caches where PyTorch put them" in read
    assert '"Crash or wrong answer: what decides"' in read and "**Which recordings ran the same seeds**" in read
    runs, prov = cause_tables.recorded(DATA)
    kernel, kernel_prov = _kernel()
    assert "**Which recordings ran the same seeds.**" in str(
        cause_story.same_seeds(kernel, kernel_prov, runs, prov, None, "cpu")
    )
    assert _cell("01_reproduce_ima", "## Crash or wrong answer: what decides")


# D5: 02's workaround table is measured on the variance model; its config is shown beside the table, from the
# project's configs (the same table notebook 06 shows), and the caption says which model each part ran on.


def test_d5_the_variance_models_config_is_shown_beside_the_workaround_table():
    from test_teaching_round7_01_02 import _code

    from flexfix.edition.tables.serving import model_table
    from flexfix.integration.engine import LLAMA_CONFIGS

    code = _code("02_apply_flexfix", "workaround_table(safety, cost)")
    # round 20, D12: the model table sits right under the workaround table, both above their key
    assert "display(ways)\ndisplay(model_table())" in code
    later = _code("02_apply_flexfix", "workarounds.without_plugin(")
    assert "display(\n    workarounds.without_plugin(" in later  # the sentence is still shown, not a dropped value
    table = model_table()
    assert table.loc["variance", "layers"] == LLAMA_CONFIGS["variance"]["num_hidden_layers"]
    assert table.loc["variance", "hidden size"] == LLAMA_CONFIGS["variance"]["hidden_size"]
    read = _cell("02_apply_flexfix", "*How to read it:* `differed`")
    assert "the checks ran on the tiny model, the throughput on the variance model" in read
