"""Teaching round 6, notebooks 01 and 02: a newcomer's reading of the published GPU edition at cd643ab (findings
A1-D20 of r0102). Each test ties a sentence, table or figure to the data it states."""

import pandas as pd
from test_teaching_01_03 import DATA, cells, text
from test_teaching_round4_01_02 import _kernel, _md

from flexfix.edition import schemas
from flexfix.edition.narrative import outcome_cause as cause_story
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables import outcome_cause as cause_tables


def _cell(stem, start):
    found = [text(c) for c in cells(stem) if text(c).startswith(start)]
    assert len(found) == 1, (stem, start, len(found))
    return found[0]


def _default_arm(runs):
    return runs[(runs["placement"] == "default") & (runs["v_placement"] == "default") & runs["touch"].isna()]


# A1, A2, D13: which recordings ran the same seeds is a table of what each recorded; the same cells are claimed only
# for recordings at one commit with the same width at every step.


def test_a1_a13_same_seeds_is_a_table_with_each_recordings_own_widths():
    kernel, kernel_prov = _kernel()
    runs, _ = cause_tables.recorded(DATA)
    this_run = _default_arm(runs).copy()  # stands in for this run's torch-only runs: every step recorded
    said = str(cause_story.same_seeds(kernel, kernel_prov, runs, None, this_run, "cuda"))
    assert "| recording | where | seeds | outcome | step widths `K` recorded |" in said
    mine = [list(r) for r in this_run["records"]]
    widths = [s["K"] for s in max(mine, key=len)]
    replays = ", ".join(str(k) for k in widths[1:])
    assert said.count(f"capture {widths[0]}; replays {replays} |") == 2  # this run's two sets, from their records
    theirs = {len(list(r)) for r in kernel[kernel["copy"] == "as_strided"]["records"]}
    assert theirs == {1} and "no later step recorded (the runs stopped before it)" in said  # the H100: capture only
    assert "kept no capture or replay lengths" not in said and "scenario sizes not recorded" not in said
    assert "whether they read the same cells is not shown" in said
    assert "the recorded torch-only runs kept the width of fewer steps" in said
    # D13: each seed once per batch, not "batch 48 seed 0, batch 48 seed 1, ..."
    assert "batch 48 on seeds 0, 1, 2, 3 and 4" in said and "batch 48 seed 1" not in said


def test_a2_the_same_cells_are_said_only_at_one_commit_with_the_same_widths():
    runs, prov = cause_tables.recorded(DATA)
    arm = _default_arm(runs)
    other = arm.copy()
    other["status"] = "illegal_memory_access"  # the same runs, another end: same commit, same widths
    said = str(cause_story.same_seeds(other, prov, runs, prov, None, "cpu"))
    assert "so the cells they read were the same" in said
    later = dict(prov, git_commit="0" * 40)
    said = str(cause_story.same_seeds(other, later, runs, prov, None, "cpu"))
    assert "the cells they read were the same" not in said and "they ran at different commits" in said


def test_a2_the_notebook_claims_the_same_cells_only_for_the_placement_runs():
    intro = _cell("01_reproduce_ima", "**The question.** Can the same seeds")
    assert "At one commit, the seed fixes the steps" in intro and "with the same width at every step" in intro
    assert "so where two runs of the same seeds differ, the cells\nalone" not in intro
    caption = _cell("01_reproduce_ima", "*How to read it:* one row per scenario")
    assert "where they do, the cells were the same" not in caption
    assert "that the same\ncells ended both ways is shown only by these placement runs" in caption


# A3, C8: the outcome grid's colours are the edition's outcome colours, not the error figures'.


def test_a3_c8_the_colour_words_match_the_figures():
    from flexfix.edition.plots.outcome_cause import OUTCOME_CAUSE_COLOURS
    from flexfix.edition.plots.style import OUTCOME_WORDS, colour

    caption = _cell("01_reproduce_ima", "*How to read it:* one row per scenario")
    assert "as in the error figures" not in caption
    assert OUTCOME_WORDS["ok"] == "blue" and OUTCOME_CAUSE_COLOURS["correct"] == colour("blue")
    assert OUTCOME_WORDS["wrong_result"] == "orange" and OUTCOME_WORDS["illegal_memory_access"] == "black"
    assert "blue correct, orange\nsilently wrong, black an illegal memory access" in caption
    windows = _cell("01_reproduce_ima", "*How to read it:* query block 0 starts")
    assert "no later figure gives them another meaning" not in windows and "(white)" not in windows
    assert "all white" not in windows and "however close" not in windows  # round 7 C9: no other figure's colours
    assert "every figure of this notebook has a legend of its own" in windows  # round 22, D9


# A4, B7: flexfix's restatement of the 0.21.0 rule is called that; 0.21.0's own copy is the check-patch probe.


def test_a4_b7_the_slice_rule_is_flexfixs_and_0_21_0_is_probed_apart():
    from flexfix.edition import tables

    diff = _cell("02_apply_flexfix", "## The fix, as a diff")
    assert "as 0.21.0 ships it" not in diff and "flexfix's restatement of the rule of PR" in diff
    assert "flexfix's restatement" in tables.source_diff("a\n", "b\n")
    md = _md("02_apply_flexfix")
    assert "## The patched 0.20.0 follows the rule of 0.21.0" not in md
    section = _cell("02_apply_flexfix", "## The patched 0.20.0 matches flexfix's slice rule")
    assert "both sides are flexfix code" in section and "check-patch table" in section
    checks = pd.DataFrame({"check": list(workarounds._CYCLE), "value": True})
    said = str(workarounds.patch_cycle(checks))
    assert "behaves as 0.21.0's" not in said and "not 0.21.0's code" in said
    source = "\n".join(text(c) for c in cells("02_apply_flexfix") if c["cell_type"] == "code")
    named = [k for k in workarounds._CYCLE if f'"check": "{k}"' in source]
    assert "patched copy follows flexfix's slice rule" in named and "0.21.0 rule" not in source


# A5: one engine each ranks nothing; the ratios are not ranked.


def test_a5_the_cost_ratios_are_not_ranked():
    from flexfix.edition.tables.workarounds import workaround_table

    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    said = str(workarounds.without_plugin(workaround_table(safety, cost), "here", "there"))
    assert "rank nothing" in said and "came out faster" not in said


# A6: the counts tried are listed, not spanned.


def test_a6_the_crash_threshold_lists_the_counts_tried():
    from flexfix.edition import tables
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    said = str(reproduce.crash_threshold(table))
    for how, group in table.groupby("how", sort=False):
        done = sorted({int(n) for n in group[group["outcome"] == "completed"]["requests"]})
        line = next(x for x in said.splitlines() if x.startswith(f"* {how}:"))
        listed = ", ".join(str(n) for n in done[:-1]) + f" and {done[-1]}"
        assert f"completed at {listed} requests (the counts tried)" in line
        assert "–" not in line.split(";")[0]


# C9, C10: the grid's axis label is scoped; the rings of equal steps no longer pile up.


def test_c9_the_outcome_grid_axis_scopes_the_same_cells():
    from flexfix.edition.plots.outcome_cause import outcome_grid

    runs, _ = cause_tables.recorded(DATA)
    label = outcome_grid(runs, "t").axes[0].get_xlabel()
    assert "every as_strided row past one query block has the same steps" in label
    assert "the sliced and one-query-block rows misread nothing" in label


def test_c10_the_rings_of_a_step_sit_apart():
    from flexfix.edition import plots

    runs, _ = cause_tables.recorded(DATA)
    arm = _default_arm(runs)[["copy", "batch", "seed", "device", "status", "records"]]
    fig = plots.replay_errors(arm, "t")
    rings = [ln for ln in fig.axes[1].get_lines() if str(ln.get_label()).startswith("silently wrong answer (")]
    assert len(rings) == 1
    xs = list(rings[0].get_xdata())
    wrong = sum(s["outcome"] == "wrong_result" for r in arm["records"] for s in r)
    assert len(xs) == wrong and len(set(xs)) == wrong  # every ring at an x of its own
    assert rings[0].get_markersize() <= 10


# D11, D12: the step table's columns and tolerance are stated; the summary lines are one plain sentence.


def test_d11_d12_the_step_table_is_explained_and_its_line_says_the_run_once():
    import torch

    from flexfix.edition import tables
    from flexfix.edition.tables.outcomes import ChildLog
    from flexfix.mechanism.kernel_repro import tolerance

    cell = _cell("01_reproduce_ima", "So any later step whose")
    for column in ("`K`", "`written_stride`", "`launch_stride`", "`max_error`", "`outcome`"):
        assert column in cell.split("start here")[1], column
    assert "All the torch-only runs of this notebook" in cell  # D18
    runs, _ = cause_tables.recorded(DATA)
    arm = _default_arm(runs).copy()
    arm["detail"] = [f"as_strided copy, graph launch, batch 48, seed {s}" for s in arm["seed"]]
    line, _ = tables.replay_steps(arm, "as_strided", 48, 0)
    assert line.startswith("as_strided copy, graph launch, batch 48, seed 0: wrong_result;")
    assert line.count("batch 48, seed 0") == 1
    assert f"exceeds {tolerance(torch.bfloat16):.0e} (the bfloat16 tolerance)" in line
    log = ChildLog(words_are_outcomes=False)
    for status in ("illegal_memory_access", "ok"):
        log(f"run: {status} (exit 0, 2.0 s)")
    said = log.summary("the placement runs")
    assert said == (
        "the placement runs: 2 runs, each alone in a fresh process, so that a crash ends only its own run "
        "(about 2 s each); the tables below say how each ended"
    )
    assert "status words" not in said and "log lines" not in said and "illegal_memory_access" not in said


# D14-D18 and the first screen of 01.


def test_d14_to_d18_and_the_first_screen():
    from flexfix.mechanism import paged

    assert "A third engine" not in _cell("01_reproduce_ima", "What the scenarios are for")
    every = _cell("01_reproduce_ima", "## Every request checked: stock vs patched")  # D15
    every += _cell("01_reproduce_ima", "**Why the batches and engines differ.**")  # its caveats (round 12, D4)
    assert "not a fault" in every and "Silent wrong answers below the crash" not in _md("01_reproduce_ima")
    first = _cell("01_reproduce_ima", "# 01")
    pads = first.index("`-1` pads")
    assert "is filled up with `-1` pads" in first[: pads + 12]  # D16: defined where first used
    assert "a *full* CUDA graph (one that holds the attention kernel\nitself)" in first
    assert "\n\n**What a captured graph freezes.** " in first  # its own paragraph
    frozen = first.split("**What a captured graph freezes.** ")[1].split("\n\n")[0]
    assert "row stride" in frozen and "`kv_num_blocks`" in frozen
    source = _cell("01_reproduce_ima", "shape = paged.PagedShape(")  # D17
    assert "max_num_batched_tokens = max_num_seqs" in source
    shape = paged.PagedShape(max_num_seqs=128, max_model_len=1024, num_pages=8192)
    assert shape.g_max == -(-shape.max_num_seqs // paged.Q_BLOCK)


# D19, D20: notebook 02 defines the variance model before its table, and says what the plugin run proves.


def test_d19_d20_notebook_02_defines_before_use():
    md = _md("02_apply_flexfix")
    first = md.index('"variance model"')
    assert "the larger Llama of notebook 04" in md[first : first + 80]
    assert first < md.index("*How to read it:* `differed`")
    engine = _cell("02_apply_flexfix", "Two routes, both with `VLLM_BATCH_INVARIANT=1`")
    assert "scenario (a)" in engine and "refused" in engine and "in the process that runs the model" in engine
