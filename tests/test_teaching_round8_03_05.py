"""Teaching round 8, notebooks 03-05 (newcomer reading of the published GPU edition, findings A/B/C/D of r0305):
each fix tied to the data or the source that generates the sentence, table or figure."""

import pandas as pd
from test_teaching_round4_03_05 import DATA, _code, _markdown

from flexfix.edition import schemas, tables


def _recorded_kernel():
    from flexfix.measure import record

    return schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)


def _wrong_only(table: pd.DataFrame) -> pd.DataFrame:
    """The recorded sweep with its crashes turned into wrong results: the H200 run's case (nothing crashed)."""
    from flexfix.measure.outcomes import CRASHES

    return table.assign(outcome=table["outcome"].where(~table["outcome"].isin(CRASHES), "wrong_result"))


# A1: a wrong result is not called a crash: headline "wrong at", and the closing sentence defines only words used.


def test_a1_wrong_results_are_not_called_broken_or_crash():
    from flexfix.edition.narrative import invariance as story

    table, provs = _recorded_kernel()
    text = str(story.kernel_sweep(_wrong_only(table), "this run", provenance=provs))
    assert "**broken" not in text and "*broken* is a crash" not in text
    assert "**wrong from 17 requests on**" in text or "**wrong at" in text
    assert "*wrong* a silently wrong result" in text and "*crashed*" not in text
    crashed = str(story.kernel_sweep(table, "the recording", provenance=provs))
    assert "**crashed from 17 requests on**" in crashed and "*crashed* a launch that died" in crashed
    assert "*wrong* a silently" not in crashed


# A2: whether the eager sliced and as_strided rows differ is generated from the cells, per kernel mode.


def test_a2_eager_copies_from_the_cells():
    from flexfix.edition.narrative.misread import eager_copies

    table, _ = _recorded_kernel()
    text = eager_copies(table)
    assert "differ for `flex, pytorch options`" in text
    # identical rows (the H200 run's case) are not said to differ
    eager = table["config"].str.contains("eager")
    same = table[eager & table["config"].str.endswith("sliced")]
    twin = same.assign(config=same["config"].str.replace("sliced", "as_strided"))
    text = eager_copies(pd.concat([same, twin]))
    assert "differ" not in text and "`flex, pytorch options`" in text
    assert "still\n  differ" not in _markdown("04_batch_invariance")
    assert "PyTorch's own options the eager `sliced` and `as_strided` rows still" not in _markdown(
        "04_batch_invariance"
    )


# A3: the L2 sentence states the slowest case instead of "did not make the kernels slower".


def test_a3_flushed_l2_wording_holds_the_max():
    from flexfix.edition.narrative.cost_devices import l2_effect

    effect = pd.DataFrame(
        {
            "impl": ["a", "b", "c", "d"],
            "batch": [1, 2, 4, 8],
            "context": [256] * 4,
            "flushed_over_warm": [1.022, 1.003, 0.5, 0.6],
        }
    )
    text = str(l2_effect(effect))
    assert "did not make the kernels slower" not in text
    assert "no kernel more than 5% slower" in text and "1.02x" in text


# A3/B5: the batch-invariant bands that miss 1 are a table the reader sees.


def test_b5_band_cases_table_matches_the_count():
    from flexfix.edition.narrative.cost_devices import bi_bands
    from flexfix.edition.tables.cost import bi_band_cases

    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    cases = bi_band_cases(timing)
    text = bi_bands(timing)
    if len(cases):
        assert text.startswith(f"; {len(cases)} of the") and "bi_overhead_lo" in text
        assert set(cases["band"]) <= {"wholly above 1", "wholly below 1"}
        above = cases["band"] == "wholly above 1"
        assert (cases["bi_overhead_lo"][above] >= 1).all() and (cases["bi_overhead_hi"][~above] <= 1).all()
    assert _code("05_cost").count("tables.cost.bi_band_cases(") == 2


# B4/D15: the read-window paragraph says the full rows are the example's construction, in three parts.


def test_b4_d15_read_window_paragraph():
    text = _markdown("03_stride_layouts")
    assert "the table below shows `cells_read` equal to `K_replay`" not in text
    assert "That is the example's\n  construction" in text or "the example's construction" in text.replace("\n  ", " ")
    for part in ("* **What it reads.**", "* **In this example.**", "* **In vLLM.**"):
        assert part in text


# C10 / D14: one meaning for the grey cells; query block 0 named as such.


def test_c10_d14_layout_words():
    from flexfix.edition.plots.layouts import READ_WINDOW_COLOURS

    text = _markdown("03_stride_layouts")
    assert "or an earlier tenant of that memory" not in text
    assert any("left from the capture step" in k for k in READ_WINDOW_COLOURS) and "left from the capture step" in text
    assert "Only row 0 is safe" not in text and "only query block 0 (row 0 of `kv_indices`)" in text


def test_read_window_panels_each_have_an_x_label():
    from test_teaching_round7_03_05 import _layouts

    from flexfix.edition import plots

    fig = plots.read_windows(_layouts(2, 4))
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_ylabel()]
    assert labels and all(label == "entry read (j)" for label in labels)


# C8: the replay speed-up panels have their own y axes.


def test_c8_speedup_panels_own_y_axes():
    from flexfix.edition import plots

    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    bands = tables.timing_ratios(timing, spread=True)
    fig = plots.ratio_lines(bands, "batch", "graph_speedup", "context", "t", "s", panels=True, sharey=False)
    tops = [ax.get_ylim()[1] for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(set(round(t, 3) for t in tops)) > 1  # not one shared axis
    assert "sharey=False" in _code("05_cost")


# C9: a batch size with bitwise-equal positions has a marker in the 0 band even where another position moved.


def test_c9_equal_positions_drawn_in_the_band():
    from flexfix.edition import plots

    table, _ = _recorded_kernel()
    table = _wrong_only(table).copy()
    misread = (table["outcome"] == "wrong_result") & (table["position"] == "first")
    table.loc[misread, ["outcome", "bitwise_equal", "max_abs_diff"]] = ["ok", True, 0.0]
    fig = plots.max_diff_vs_batch(table, "t")
    zeros = sum(len(ln.get_xdata()) for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "bitwise equal")
    per = table.groupby(["config", "batch"])["max_abs_diff"].apply(lambda s: (s == 0).any())
    assert zeros == int(per.sum())


# B7: the positions the paragraphs name are a table; B6: the row-length counts are a table.


def test_b7_position_table_names_the_positions():
    from flexfix.edition.tables.invariance import position_outcomes

    table, _ = _recorded_kernel()
    wide = position_outcomes(table)
    assert len(wide) and (wide[["first", "middle", "last"]].nunique(axis=1) > 1).all()
    row = table[(table["config"] == wide["config"][0]) & (table["batch"] == wide["batch"][0])]
    assert set(row["position"]) == {"first", "middle", "last"}
    assert _code("04_batch_invariance").count("position_outcomes(") == 3


def test_b6_row_length_table_sums_to_the_cells():
    from flexfix.edition.narrative.misread import row_length_table

    assert "display(story.row_length_table(analog, sweep))" in _code("04_batch_invariance")
    assert row_length_table(
        pd.DataFrame(columns=["config", "batch", "position", "outcome", "bitwise_equal"]), None
    ).empty


# D11 / D16: the recorded verdicts are shown whole; "query block" is defined in the Words list.


def test_d11_d16():
    assert 'pd.option_context("display.max_colwidth", None)' in _code("04_batch_invariance")
    words = _markdown("04_batch_invariance").split("**Words used below**")[1].split("\n\n")[0]
    assert "A **query block** is" in words


def test_d12_the_joined_line_says_which_batches_the_first_recording_lists_but_holds_no_cell_at():
    """r0305 D12: why a second recording supplies a configuration's cells, from the recordings themselves."""
    from flexfix.edition.narrative import invariance as story
    from flexfix.measure import record

    table, provs = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    config = "flex, batch_invariant options, graph, as_strided"
    first = table[(table["source"] == "kernel_invariance") & (table["config"] == config)]
    missing = sorted(set(provs[0]["parameters"]["batches"]) - set(first["batch"].astype(int)))
    assert missing and min(missing) > int(first["batch"].max())  # the first recording stopped short of them
    said = " ".join(str(story.kernel_sweep(table, "the H100", provenance=provs)).split())
    listed = ", ".join(str(b) for b in missing[:-1]) + f" and {missing[-1]}"
    assert f"`kernel_invariance` lists {listed} requests among its batches but holds no cell of `{config}`" in said
