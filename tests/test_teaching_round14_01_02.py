"""Teaching round 14, notebooks 01 and 02: a newcomer's reading of a CPU execution of the current sources (finding C1
and D1-D6, D8 of r0102). Each test ties a sentence, table or figure to the data it states."""

import matplotlib
import numpy as np
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas
from flexfix.edition.tables import outcome_cause as cause_tables

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _cell(stem, start):
    """The markdown cell of ``stem`` that begins with ``start``, its lines joined by spaces."""
    found = [text(c) for c in cells(stem) if c["cell_type"] == "markdown" and text(c).startswith(start)]
    assert len(found) == 1, start
    return " ".join(found[0].split())


def _code(stem):
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "code")


def _kernel():
    return schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)


# C1: markers only, each run in one slot at every step, so a run is followed by its slot; the captions say so.


def test_c1_no_line_joins_a_runs_steps_and_each_run_keeps_its_slot():
    from test_plots import live_gpu_wrong_results

    from flexfix.edition import plots

    for table in (_kernel()[0], live_gpu_wrong_results()):
        fig = plots.replay_errors(table, "t")
        ax = fig.axes[1]
        series = [ln for ln in ax.get_lines() if ln.get_marker() in ("o", "s") and ln.get_markersize() == 4]
        assert len(series) == len(table)  # one series per run
        for ln in series:
            assert ln.get_linestyle() == "None"  # no line to cross another run's
            xs = np.asarray(ln.get_xdata(), dtype=float)
            offsets = xs - np.arange(len(xs))
            assert np.allclose(offsets, offsets[0])  # the same slot at every step
        legend = ax.get_legend()
        for h, t in zip(legend.legend_handles, legend.get_texts()):
            if t.get_text().startswith(("sliced", "as_strided")):
                assert h.get_linestyle() == "None"
        plt.close(fig)
    caption = _cell("01_reproduce_ima", "*How to read it:* a point is one step's largest error")
    assert "the same slot at every step" in caption and "markers only, no line joins a run's steps" in caption
    fixed = _cell("02_apply_flexfix", "*How to read it:* as notebook 01's figure of the errors per step")
    assert "one line per run" not in fixed and "the same slot at every step and no line joining the steps" in fixed


# D1: a key under the recordings brief, for the words it uses before "Words first".


def test_d1_the_brief_has_a_key_for_its_words():
    from flexfix.edition.narrative import headline

    said = str(headline.recorded_brief(DATA))
    # round 22, D1: the outcome words keep their key; the placements and the scenarios are said where they are used
    key = said[said.index("*Outcomes:*") :]
    for word in ("`ok`", "`wrong_result`"):
        assert word in key, word
    assert "`illegal_memory_access` a crash" in key
    body = said[: said.index("*Outcomes:*")]
    for word in ("`guarded` (mapped memory in front)", "`fenced` (unmapped memory in front)", "(b) supports_batch"):
        assert word in body, word


# D2: the placement table's columns are defined right under it; the column and control words are unambiguous.


def test_d2_placement_columns_are_defined_under_the_table_with_clear_names():
    from flexfix.edition.narrative import cause_lead

    runs, _ = cause_tables.recorded(DATA)
    table = cause_tables.placement_table(runs)
    assert "as predicted" not in table.columns and "read in front" not in table.columns
    assert cause_tables.AS_PREDICTED in table.columns and cause_tables.OWN_READ in table.columns
    controls = table[table[cause_tables.AS_PREDICTED] == cause_tables.NO_PAD_READ]
    assert set(controls["ok"]) and "no read in front" not in set(table[cause_tables.AS_PREDICTED])
    key = str(cause_lead.placement_key(runs).data)
    for column in table.columns:
        assert f"`{column}`" in key or column in ("ok", "wrong_result", "illegal_memory_access"), column
    assert f"`{cause_tables.NO_PAD_READ}` for a control" in key
    # the runs predicted to fault that answered silently wrong: counted from the runs, named as mapped though unlisted
    unlisted = runs[(runs["predicted"] == "illegal_memory_access") & (runs["status"] == "wrong_result")]
    assert len(unlisted) and f"there {len(unlisted)} runs predicted to fault answered silently wrong" in key
    assert "`as_strided, batch 48, cache default`" in key
    # the key is displayed right after the table, in the same cell
    code = _code("01_reproduce_ima")
    i = code.index("display(cause_tables.placement_table(cause_runs))")
    assert code.index("display(cause_lead.placement_key(cause_runs))") == i + len(
        "display(cause_tables.placement_table(cause_runs))\n"
    )
    grid = _cell("01_reproduce_ima", "*How to read it:* one row per scenario")
    # round 22, D9: the caption names the column exactly, without pointing at where the columns are defined
    assert "`as predicted`" not in grid and "`as the driver's list predicts`" in grid


def test_d2_a_key_without_misses_says_none_fell_short():
    from flexfix.edition.narrative import cause_lead

    runs, _ = cause_tables.recorded(DATA)
    listed = runs.copy()
    listed["status"] = listed["predicted"].where(listed["predicted"].isin(["wrong_result", "illegal_memory_access"]),
                                                 listed["status"])  # fmt: skip
    key = str(cause_lead.placement_key(listed).data)
    assert "It falls short" not in key and "predicted to fault answered" not in key


# D3: the same-seeds paragraph opens with its conclusion; the caveat names the GPUs from the provenance.


def test_d3_same_seeds_opens_with_the_conclusion_and_names_the_gpus():
    from flexfix.edition.narrative import outcome_cause as oc

    kernel, kprov = _kernel()
    cause, cprov = cause_tables.recorded(DATA)
    said = str(oc.same_seeds(kernel, kprov, cause, cprov, None, "cpu")._repr_markdown_())
    first = said.split("\n")[0]
    assert first.startswith("**Which recordings ran the same seeds.** On the same runs")
    assert first.index("ended differently") < first.index("recordings of this edition ran")
    assert f"on {kprov['device_name']}: 5 of 5 `illegal_memory_access`" in first
    assert f"on {cprov['device_name']}: 5 of 5 `wrong_result`" in first
    caveat = said[said.index("The caveat") :]
    assert kprov["device_name"] != cprov["device_name"]
    assert f"different GPUs ({kprov['device_name']} and {cprov['device_name']})" in caveat
    same_gpu = dict(cprov, device_name=kprov["device_name"])  # one GPU: no GPU caveat
    said = str(oc.same_seeds(kernel, kprov, cause, same_gpu, None, "cpu")._repr_markdown_())
    assert "different GPUs" not in said


# D4: the step table's lead states the written/launch contrast; the columns are bullets.


def test_d4_the_step_table_lead_states_the_contrast_and_lists_the_columns():
    cell = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("So any later step whose"))
    lead = cell[cell.index("The torch-only scenario below") :].split("\n\n")[0]
    assert "`written_stride`" in lead and "`launch_stride`, the same on every row" in lead
    for column in ("max_seq_len", "K", "written_stride", "launch_stride", "max_error", "outcome", "ran"):
        assert f"\n* `{column}`: " in cell, column
    # what the lead says holds for the table: the launch stride stays, the written one follows K
    from flexfix.edition import tables

    runs, _ = cause_tables.recorded(DATA)
    arm = runs[(runs["placement"] == "default") & (runs["v_placement"] == "default") & runs["touch"].isna()].copy()
    arm = arm[(arm["copy"] == "as_strided") & (arm["batch"] == 48)]
    arm["detail"] = [f"as_strided copy, graph launch, batch 48, seed {s}" for s in arm["seed"]]
    _, steps = tables.replay_steps(arm, "as_strided", 48, 0)
    assert steps["launch_stride"].astype(str).nunique() == 1
    assert steps["written_stride"].astype(str).nunique() == steps["K"].nunique() > 1


# D5: the capture printouts as bullets; the largest capture size said not to bear on the bug.


def test_d5_capture_printouts_are_bullets_and_the_largest_capture_size_is_explained():
    cell = _cell("01_reproduce_ima", "## At which `K` vLLM captures its decode graphs")
    raw = next(text(c) for c in cells("01_reproduce_ima") if text(c).startswith("## At which `K`"))
    assert raw.count("\n* ") == 0  # round 22, D7: what the cell prints, in one sentence, not a manifest of bullets
    assert "`largest capture size`" in cell and "does not bear on the bug" in cell
    from flexfix.edition import glossary

    table = glossary.decode_dispatch([(48, 48)])
    assert (table["largest capture size"] > table["max_num_seqs"]).all()  # the list runs past max_num_seqs
    assert (table["largest FULL decode graph"] <= table["max_num_seqs"]).all()  # FULL graphs do not


# D6: the sanitizer's block indices are decoded from the launch grid, hedged where BLOCK_M is not recorded.


def test_d6_the_sanitizer_block_is_decoded_as_the_flex_grid():
    import re

    from flexfix.edition.narrative.sanitizer import sanitizer_read

    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    said = str(sanitizer_read(sanitizer))
    lines = " ".join(sanitizer[sanitizer["copy"] == "as_strided"]["sanitizer_lines"].iloc[0])
    x, y, z = re.search(r"in block \((\d+),(\d+),(\d+)\)", lines).groups()
    # round 22, D4: the grid's first coordinate is called the launch tile, not a "query tile"
    assert f"`block ({x},{y},{z})`, which in the launch grid of torch's FlexAttention template is (launch tile" in said
    assert f"launch tile {x}, batch {y}, query head {z}" in said
    assert "this run does not record" in said  # BLOCK_M: the query block is said only conditionally
    # the mapping said is torch's own grid
    from torch._inductor.kernel.flex.flex_attention import flex_attention_grid

    grid = flex_attention_grid(1, 8, 48, 64, {"BLOCK_M": 16})
    assert grid == (3, 1, 8)  # (query tiles, batch, query heads)


# D8: check_cycle's order as it runs: apply twice, then revert twice.


def test_d8_the_revert_paragraph_gives_the_order_check_cycle_runs():
    import inspect

    from flexfix.integration import vllm_patch

    cell = _cell("02_apply_flexfix", "## Revert, and the context manager")
    assert "applies and reverts it twice" not in cell
    assert cell.index("applies it twice") < cell.index("reverts it twice")
    src = inspect.getsource(vllm_patch.check_cycle)
    assert src.index("apply(mod), apply(mod)") < src.index("revert(), revert()")
