"""Teaching round 15, notebooks 03-05 (newcomer reading of the published GPU edition, findings of r0305, and C2 of
r0102: the read-window colours): each fix tied to the data or the source that generates the sentence, table or
figure."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from test_teaching_round4_03_05 import DATA, NOTEBOOKS, _code, _markdown, _speed  # noqa: E402

from flexfix.edition import plots, schemas, tables  # noqa: E402
from flexfix.edition.narrative import invariance as story  # noqa: E402
from flexfix.measure import engine_sweep, record  # noqa: E402


def _needle() -> pd.DataFrame:
    table, _ = schemas.recorded(DATA, record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)
    return engine_sweep.invariance_rows(table)


def _gpu():
    return schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)[0]


# B1 (04): a bitwise-equal N = 1 repeat and differences among more requests are "consistent with" batch variance, and
# where the same engine's other sampling differed at N = 1, the batch's share is said not to be established.


def test_b1_with_the_batch_claims_only_consistency_and_names_the_same_engines_run_to_run_rows():
    needle = _needle()
    said = str(story.engine_sweep(needle, "the recorded runs"))
    batch = next(p for p in said.split("\n\n") if p.startswith("*With the batch*"))
    assert "came with the batch" not in batch and "consistent with batch variance" in batch
    assert "does not rule out run-to-run differences" in batch
    equal = needle["logprobs_bitwise_equal"].fillna(False).astype(bool) & needle["tokens_equal"].fillna(False)
    noisy = {
        e
        for (e, _), rows in needle.assign(equal=equal).groupby(["engine", "sampling"])
        if not rows.loc[rows["requests"] == 1, "equal"].all()
    }
    for engine, sampling in needle.groupby(["engine", "sampling"]).groups:
        name = engine.replace("eager graphs", "eager")
        if f"{name} ({sampling}) first at" in batch:  # a row of the paragraph: is its engine noisy at N = 1?
            assert ("not established" in batch) == bool(noisy - {engine} or engine in noisy)
            if engine in noisy:
                assert name in batch.split("the same engine")[1]
    # the same engine with no run-to-run row: no "not established" clause
    quiet = needle[needle["sampling"] == "seeded"]
    alone = str(story.engine_sweep(quiet, "x"))
    if "*With the batch*" in alone:
        assert "not established" not in alone and "consistent with batch variance" in alone
    md = " ".join(_markdown("04_batch_invariance").split())
    assert "came out bitwise equal, its logprobs still moved among more requests (batch variance)" not in md
    assert "is consistent with batch variance but does not rule out run-to-run differences" in md
    assert "*Batch variance* is shown by a row" not in md and "*consistent with* batch variance, no more" in md


# C1 (05): a band thinner than its line is said to be so in the legend, from the drawn heights.


def test_c1_the_legend_says_where_bands_are_too_thin_to_see():
    from flexfix.edition.plots.cost_marks import band_heights_pt, band_hidden, thin_band_note

    bands = tables.timing_ratios(_gpu(), spread=True)
    args = ("batch", "flex_over_sdpa", "context", "t", "y")
    fig = plots.ratio_lines(bands, *args, reference_label="1", logy=True, panels=True)
    fig.draw_without_rendering()
    heights = band_heights_pt(fig.axes)
    assert heights and len(heights) == bands["context"].nunique()
    note = thin_band_note(fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    hidden = band_hidden(fig.axes)  # thinner than its line and the markers on it (r17 C2)
    if any(hidden):
        assert note in legend and "narrower than its line" in note
        assert note.startswith("(no band shows here") == all(hidden)
    else:
        assert note is None and not any("narrower than its line" in t for t in legend)
    # a band made wide is not called thin
    wide = bands.assign(flex_over_sdpa_lo=bands["flex_over_sdpa"] / 3, flex_over_sdpa_hi=bands["flex_over_sdpa"] * 3)
    fig = plots.ratio_lines(wide, *args, reference_label="1", logy=True, panels=True)
    assert thin_band_note(fig.axes) is None


# C2 (05): the slowest-to-fastest bar is drawn over a hollow median marker, with a tick at each end.


def test_c2_throughput_bars_sit_over_hollow_markers_with_end_ticks():
    speed = _speed()
    fig = plots.throughput_points(speed, "t")
    ax = fig.axes[0]
    markers = [ln for ln in ax.lines if ln.get_label() and not ln.get_label().startswith("_")]
    assert markers and all(ln.get_markerfacecolor() == "none" for ln in markers)
    ticks = [c for c in ax.collections if c.get_gid() == "spread tick"]
    bars = [c for c in ax.collections if c.get_gid() != "spread tick"]
    assert ticks and bars
    # round 21 C2: a tick covered run 3's marker; the hollow markers are now drawn above the bars and their end ticks
    assert max(t.get_zorder() for t in ticks) < min(m.get_zorder() for m in markers)
    assert max(b.get_zorder() for b in bars) < min(m.get_zorder() for m in markers)
    n = int((speed["requests"] == sorted(speed["requests"].unique())[0]).sum())
    assert sum(len(t.get_segments()) for t in ticks) == 2 * n  # a tick at each end of every bar, none hidden


# r0102 C2: the read-window kinds reuse no outcome colour, and "another entry of its own row" is no longer orange-ish.


def test_r0102_c2_read_window_colours_are_no_outcome_colour_and_not_near_orange():
    from flexfix.edition.plots.style import OUTCOME_COLOURS, PALETTE

    outcomes = {to_hex(h) for h in OUTCOME_COLOURS.values()}
    kinds = {to_hex(h) for _, h in plots.READ_WINDOW_COLOURS.values()}
    assert not kinds & outcomes
    own_row = plots.READ_WINDOW_COLOURS["another entry of its own row"]
    assert own_row[0] != "light brown" and "light brown" not in PALETTE

    from test_teaching_round7_03_05 import _delta

    for word, hex_ in plots.READ_WINDOW_COLOURS.values():  # far from the warm outcome colours (light brown: 40, 38)
        for outcome in ("wrong_result", "index_error"):
            assert _delta(hex_, OUTCOME_COLOURS[outcome]) >= 50, (word, outcome)


# D1 (04): one key gives each outcome's name in the table, verdict, headline and heatmap.


def test_d1_one_key_names_each_outcome_everywhere():
    from flexfix.edition.tables.invariance import POSITION_MARKS, outcome_key
    from flexfix.measure import invariance

    key = outcome_key()
    assert len(key) == 5 and set(key["heatmap mark"]) == set(POSITION_MARKS.values())
    table, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    verdicts = invariance.verdicts(table)
    assert set(key["verdict table column"]) - {"moved"} <= set(verdicts.columns)
    assert set(verdicts["verdict"]) <= {v.replace(" (every cell)", "") for v in key["verdict"]}
    assert "tables.invariance.outcome_key()" in _code("04_batch_invariance")
    assert "The key after these definitions" in " ".join(_markdown("04_batch_invariance").split())


# D2 (04): the sweep's widths are printed, from its parameters, and the narrower case is said to be the only one.


def test_d2_the_sweep_prints_both_widths_and_the_buffer_width():
    from flexfix.edition.narrative.invariance_lead import sweep_widths
    from flexfix.measure import invariance
    from flexfix.mechanism import paged

    for needle_len, capture_len in ((120, 200), (200, 120)):
        shape = paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)
        said = sweep_widths(invariance.SweepShape(shape, needle_len=needle_len, capture_len=capture_len))
        cap, rep = (16 * -(-n // 16) for n in (capture_len, needle_len))
        assert f"= {cap};" in said and f"= {rep}," in said and f"= {shape.w_max}" in said
        how = "narrower than" if rep < cap else "wider than" if rep > cap else "as wide as"
        assert how in said
    assert "invariance_lead.sweep_widths(sweep)" in _code("04_batch_invariance")
    md = " ".join(_markdown("04_batch_invariance").split())
    assert "every sweep here replays **narrower** than its capture, never **wider** as vLLM does" in md  # round 22 D6


# D3 (04): the first recording's missing cells are said to be the tail of its plan, with no outcome recorded.


def test_d3_the_missing_cells_of_the_first_recording_are_explained_from_its_plan():
    table, provs = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    said = " ".join(str(story.kernel_sweep(table, "the H100", provenance=provs)).split())
    config = "flex, batch_invariant options, graph, as_strided"
    tail = provs[0]["parameters"]["configs"][-1] == config
    assert ("the last cells of its plan" in said) == tail
    assert "the missing cells are no evidence either way" in said or not tail
    other = [dict(p, parameters=dict(p["parameters"], configs=[config, "x"])) for p in provs]
    assert "the last cells of its plan" not in str(story.kernel_sweep(table, "t", provenance=other))


# D4 (04): the engine table's count of batch sizes is named as a count, and every column is defined above it.


def test_d4_engine_table_columns_named_and_defined():
    verdicts = tables.engine_verdicts(_needle())
    assert "n_batch_sizes" in verdicts and "batch_sizes" not in verdicts
    assert (verdicts["n_batch_sizes"] == _needle().groupby(["engine", "sampling"]).size().max()).any()
    md = _markdown("04_batch_invariance")
    defined = md.split("**The columns of the engine table**")[1].split("\n\n")[0]
    for column in verdicts.columns:
        assert f"`{column}`" in defined, column
    import json

    nb = json.load(open(NOTEBOOKS / "04_batch_invariance.ipynb"))
    sources = ["".join(c["source"]) for c in nb["cells"]]
    defined_at = next(i for i, s in enumerate(sources) if "**The columns of the engine table**" in s)
    assert defined_at < next(i for i, s in enumerate(sources) if "display(tables.engine_verdicts(needle))" in s)


# D5 (05): the band rule worked on the recorded cases, with the bounds as the table prints them.


def test_d5_the_band_rule_is_worked_on_recorded_cases():
    from flexfix.edition.narrative.cost_bands import band_example
    from flexfix.edition.tables.cost import bi_band_cases

    gpu = _gpu()
    said = str(band_example(gpu))
    off = bi_band_cases(gpu).iloc[0]
    assert f"`bi_overhead` is {off['bi_overhead']}, its band {off['bi_overhead_lo']} to {off['bi_overhead_hi']}" in said
    assert "told apart from one" in said and "not told apart from one" in said
    # printed once, right after the rule, from the recorded run (r17 D8: it was printed a second time here)
    assert "cost_bands.band_example_recorded(DATA_DIR)" in _code("05_cost")
    assert "cost_bands.band_example(gpu)" not in _code("05_cost")
    no_quartiles = gpu.drop(columns=["q25_ms", "q75_ms"])
    try:
        assert str(band_example(no_quartiles)).strip() == ""
    except Exception:  # a table without quartiles may be refused upstream; either way nothing is claimed
        pass


# D6 (05): the In short line says what the replay's speed-up came to with the L2 flushed.


def test_d6_in_short_states_the_flushed_speedup():
    from flexfix.edition.narrative import cost as story5
    from flexfix.edition.narrative.cost_l2 import HELD, flushed_clause

    gpu = _gpu()
    assert flushed_clause(gpu) == ""  # no flushed rows: nothing said
    graph = gpu[gpu["impl"] == "flex vllm graph"].set_index(["batch", "context"])["median_ms"]
    flushed = gpu.assign(l2="flushed")
    eager = flushed["impl"] == "flex vllm eager"
    flushed.loc[eager, "median_ms"] = [
        graph[(b, c)] for b, c in zip(flushed.loc[eager, "batch"], flushed["context"][eager])
    ]
    both = pd.concat([gpu.assign(l2="warm"), flushed], ignore_index=True)
    said = flushed_clause(both)
    warm = tables.timing_ratios(gpu)["graph_speedup"].max()
    assert "1.00x over all cases" in said and f"the {warm:.1f}x is a figure for calls issued back to back" in said
    assert warm > HELD
    lead = str(story5.kernel_timing(both, tables.timing_ratios(both), "x"))
    assert said.strip() in " ".join(lead.split())
    md = " ".join(_markdown("05_cost").split())
    assert "its *In short* line says what the factor came to then" in md


# D7 (05): the rule behind "supported" vs "a hint" is stated, and each verdict names the ratio it compares.


def test_d7_the_spread_rule_is_stated_and_the_compared_ratio_named():
    from flexfix.edition.narrative import cost as story5

    speed = _speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    said = str(story5.engine_ratios(summary, spread))
    for (model, _), row in summary.iterrows():
        if int(row["below_1"]) in (0, int(row["ratios"])):
            near = row["lowest"] if int(row["below_1"]) == 0 else row["highest"]
            most = float(spread.xs(model, level="model")["between_engines"].max())
            assert f"nearest 1, {near:.2f}x, against up to {most:.2f}x between engines" in said
    if "A hint, not a result" in said:
        assert "supported when its ratio nearest 1 lies beyond the model's largest between-engine spread" in said


# D8 (03): the read-window labels say "block", not "row", which the storage figures use for a buffer row.


def test_d8_read_window_labels_name_query_blocks():
    from test_plots import notebook03_layouts, texts

    fig = plots.read_windows(notebook03_layouts(48))
    labels = [t.get_text() for t, _, _ in texts(fig)]
    assert any(t.startswith("block ") for t in labels)
    assert not any(t.startswith("row ") for t in labels)
    src = plots.read_sources(notebook03_layouts(48)[0])
    held = {f"block {int(r)}:" for r in src["holds_row"].dropna()}
    assert {t.split(" (")[0].rsplit(" ", 1)[0] for t in labels if t.startswith("block ")} <= held
    md = _markdown("03_stride_layouts")
    assert "`row 0: 32-47`" not in md and "`block 0: 32-47`" in md and "`block 2: 0-15 (capture step)`" in md
