"""Notebooks 03-05 as a newcomer read their CPU edition: a generated sentence says "no kernel built" only where no
cell produced a result, defines the reference it measures against, and a verdict row with no result shows no number;
series never take an outcome's colour; 03 and 04 agree on the width a graph is captured at."""

import json
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.colors import to_hex

from flexfix.edition import plots, schemas
from flexfix.edition.narrative import invariance as story
from flexfix.edition.tables.invariance import NO_RESULT, kernel_verdicts
from flexfix.measure import record, timing

ROOT = Path(__file__).resolve().parent.parent


def _cell(config, batch, position, outcome, equal=None, diff=None, ref=None):
    return dict(
        config=config,
        batch=batch,
        position=position,
        outcome=outcome,
        bitwise_equal=equal,
        max_abs_diff=diff,
        max_error_vs_reference=ref,
        detail="LoweringException: NoValidChoicesError: x" if outcome == "error" else "",
    )


def _mixed() -> pd.DataFrame:
    """A kernel built at 15 and 16 requests for some positions and errors there for others, none built from 17."""
    c = "flex, pytorch options, graph, sliced"
    rows = [_cell(c, 1, p, "ok", True, 0.0, 6e-4) for p in ("first", "middle", "last")]
    rows += [_cell(c, 15, "first", "ok", False, 1e-3, 7e-4), _cell(c, 15, "middle", "error")]
    rows += [_cell(c, 15, "last", "ok", True, 0.0, 6e-4)]
    rows += [_cell(c, 16, "first", "ok", False, 1e-3, 7e-4), _cell(c, 16, "middle", "error")]
    rows += [_cell(c, 16, "last", "error")]
    rows += [_cell(c, b, p, "error") for b in (17, 32) for p in ("first", "middle", "last")]
    return pd.DataFrame(rows)


def test_no_kernel_built_is_said_only_from_the_size_where_no_cell_ran():
    """3: "no kernel built from 15 requests on" stood next to "3 cells moved (at 15 and 16 requests)"."""
    text = str(story.kernel_sweep(_mixed(), "t"))
    assert "no kernel built from 15" not in text
    assert "kernel errors at 15 and 16 requests" in text and "no kernel built from 17 requests on" in text


def test_the_recorded_h100_headlines_never_say_no_kernel_where_a_cell_moved():
    table, _ = schemas.recorded(ROOT / "data", record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    text = str(story.kernel_sweep(table, "H100"))
    for config, cells in table.groupby("config"):
        line = next(ln for ln in text.splitlines() if f"`{config}`" in ln)
        head = line.split("**")[1]
        if "no kernel built from" in head:
            start = int(head.split("no kernel built from ")[1].split(" ")[0])
            assert not (cells[cells["batch"] >= start]["outcome"] == "ok").any(), line


def test_the_two_distances_are_named_and_the_reference_defined():
    """5: "moved by up to X, still within Y of the fp32 reference" did not say what either number measures."""
    text = str(story.kernel_sweep(_mixed(), "t"))
    assert "differs from its output alone by up to" in text and "to the fp32 reference is at most" in text
    assert story.REFERENCE in text and "the needle alone:" in text


def test_a_sweep_without_wrong_results_says_so():
    c = "analog, page-by-page softmax, frozen, as_strided"
    table = pd.DataFrame([_cell(c, 1, "first", "ok", True, 0.0, 1e-7), _cell(c, 17, "first", "index_error")])
    text = str(story.kernel_sweep(table, "t"))
    assert "`first`: 1 crashed." in text and "wrong result" not in text


def test_a_verdict_row_with_no_result_shows_no_number():
    """14: a recording whose every cell crashed showed NaN, and the CPU table 0.0, as if measured."""
    table, _ = schemas.recorded(ROOT / "data", record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    verdicts = kernel_verdicts(table)
    crashed = verdicts[verdicts["ran"] == 0]
    assert len(crashed) and (crashed["max_abs_diff"] == NO_RESULT).all()
    ran = verdicts[verdicts["ran"] > 0]
    assert all(isinstance(float(v), float) for v in ran["max_abs_diff"])


def test_the_verdict_table_shows_the_largest_move_and_counts_the_moved_cells():
    """A4: ``analog, row softmax, eager, sliced`` showed max_abs_diff 0.0 and wrong 0 next to "varies with the batch"
    while its paragraph said it moved by up to 3e-08."""
    c = "analog, row softmax, eager, sliced"
    table = pd.DataFrame(
        [_cell(c, 1, "first", "ok", True, 0.0, 1e-7), _cell(c, 8, "last", "ok", False, 3e-8, 2e-7)]
        + [_cell(c, 8, "first", "ok", True, 0.0, 1e-7)]
    )
    row = kernel_verdicts(table).loc[c]
    assert row["max_abs_diff"] == "3e-08" and row["moved"] == 1 and row["wrong"] == 0
    assert "3e-08" in kernel_verdicts(table).to_string()
    c = "x, y, frozen, as_strided"
    cpu = kernel_verdicts(pd.DataFrame([_cell(c, 17, p, "index_error") for p in ("first", "last")]))
    assert cpu.loc[c, "max_abs_diff"] == NO_RESULT and cpu.loc[c, "ran"] == 0


def test_no_series_of_notebooks_03_to_05_takes_an_outcome_colour_or_sky_blue():
    """4: sky blue meant query block 0, then "eager, sliced"; orange a context, a batch size and a run in 05."""
    from flexfix.edition.plots.invariance import LAUNCH_COPY_STYLES
    from flexfix.edition.plots.style import OUTCOME_COLOURS, PALETTE, SERIES_COLOURS

    series = {to_hex(h) for _, h in SERIES_COLOURS} | {to_hex(h) for _, h, _ in LAUNCH_COPY_STYLES.values()}
    series |= {to_hex(h) for k, (_, h) in plots.STORAGE_OWNER_COLOURS.items() if k.startswith("query block")}
    assert not series & {to_hex(h) for h in OUTCOME_COLOURS.values()}
    assert PALETTE["sky blue"] not in series and PALETTE["blue"] not in series


def test_the_heatmap_hatches_errors_so_they_never_read_as_a_crash():
    """13: error (dark grey) and crash (black) looked alike."""
    grid = pd.DataFrame([["error", "crash"]], index=["c"], columns=[15, 17])
    fig = plots.category_heatmap(grid, "t")
    ax = fig.axes[0]
    assert any(p.get_hatch() for p in ax.patches)
    assert any(h.get_hatch() for h in ax.get_legend().get_patches())


def test_the_kv_bytes_use_the_runs_own_element_size():
    """7: the text said bf16 where the CPU run times fp32; the bytes and the printed line use the run's dtype."""
    import torch

    assert timing.kv_dtype("cpu") == torch.float32 and timing.kv_dtype("cuda") == torch.bfloat16
    assert timing.kv_bytes(1, 16, 2, 64, torch.float32) == 2 * timing.kv_bytes(1, 16, 2, 64, torch.bfloat16)
    assert "float32 (4 bytes" in timing.method_line("cpu")


def _markdown(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_03_and_04_agree_on_the_capture_width():
    """2: 04 captured wider than it replays yet said it did so "as vLLM replays its captured decode graphs"."""
    nb04 = _markdown("04_batch_invariance")
    assert "as vLLM replays its captured decode graphs" not in nb04
    assert "narrower than its capture" in nb04 and "vLLM's own decode capture is the narrowest" in nb04
    md03 = " ".join(_markdown("03_stride_layouts").split())
    assert "notebook 04's kernel sweep also replays narrower than its capture" in md03


def test_04_no_longer_says_block_0_is_read_right_when_the_step_crashes():
    """1: every cell past 16 requests crashed, position `first` included -- on the H100; on the H200 query block 0's
    needle came out bitwise equal where the step did not crash (A2): the markdown says both can happen, the generated
    paragraph which one did, and no markdown says which outcome the bug gives."""
    nb04 = " ".join(_markdown("04_batch_invariance").split())
    assert "A needle in query block 0 is read right even then" not in nb04
    # round 22 D6: said once, in The `graph` launch
    assert (
        "Query block 0 is read right" in nb04
        and "unless the misread of a later query block ends the whole step" in nb04
    )
    assert "every position crashed" not in nb04 and "crash rather than answer wrongly" not in nb04
    assert "story.crash_or_wrong(sweeps, sizes)" in json.dumps(
        json.load(open(ROOT / "notebooks/04_batch_invariance.ipynb"))
    )


@pytest.mark.parametrize("name", ["03_stride_layouts", "04_batch_invariance"])
def test_the_two_copies_are_named_by_whose_they_are(name):
    """11: vLLM's copy_to_persistent is the bug, flexfix's the fix; 03 labels them so."""
    if name == "03_stride_layouts":
        text = _markdown(name)
        assert (
            "vLLM 0.20.0's copy_to_persistent\n(as_strided)" in text and "flexfix's copy_to_persistent (sliced)" in text
        )
    assert "PR #40842" in _markdown(name)


def _h200_like() -> pd.DataFrame:
    """The H200 live run's misread rows (data/notebooks/04_batch_invariance.ipynb): past 16 requests the positions in
    query block 0 bitwise equal, the others wrong, no crash; and the H100 recording's kind: every position crashed."""
    rows = []
    for c in ("flex, vllm options, graph, as_strided", "flex, batch_invariant options, graph, as_strided"):
        for b in (1, 16, 17, 24, 32, 48, 64, 96, 128):
            for p in ("first", "middle", "last"):
                block0 = b <= 16 or invariance_index(b, p) < 16
                rows.append(
                    _cell(c, b, p, "ok", True, 0.0, 1e-3) if block0 else _cell(c, b, p, "wrong_result", False, 0.99)
                )
    return pd.DataFrame(rows)


def invariance_index(batch, position):
    from flexfix.measure.invariance import needle_index

    return needle_index(batch, position)


def test_past_16_requests_each_position_is_counted_with_its_equal_cells():
    """A2: "past 16 requests every position crashed" was asserted; the H200 run had wrong results and 9 bitwise-equal
    cells per configuration at query block 0."""
    text = str(story.kernel_sweep(_h200_like(), "this run (cuda)"))
    assert "every position crashed" not in text and "crashed" not in text.split("Past 16 requests")[1].split(".")[0]
    assert "`first`: 14 bitwise equal" in text and "wrong results" in text
    assert "query block 0's needle, read right" in text
    c = "x, y, frozen, as_strided"
    crashed = pd.DataFrame([_cell(c, 17, p, "index_error") for p in ("first", "middle", "last")])
    text = str(story.kernel_sweep(crashed, "t"))
    assert "`first`: 1 crashed" in text and "ending the whole step" in text and "read right, in a step" not in text


def test_crash_or_wrong_is_said_per_sweep_from_its_cells():
    """A1: "which makes the graph crash rather than answer wrongly" held for the H100 recording only."""
    c = "flex, vllm options, graph, as_strided"
    h100 = pd.DataFrame([_cell(c, b, p, "illegal_memory_access") for b in (17, 24) for p in ("first", "last")])
    text = str(story.crash_or_wrong({"this run (cuda)": _h200_like(), "recorded on H100": h100}))
    assert "this run (cuda): 42 cells exposed to the misread, 24 wrong results and 18 bitwise equal" in text
    assert "recorded on H100: 4 cells exposed to the misread, 4 crashed" in text and "depends on what" in text
    only = str(story.crash_or_wrong({"recorded on H100": h100}))
    assert "depends on what" not in only


# Newcomer round on the published 03-05 figures: one test per fixed figure defect, each failing on the figure as it was.


def _test_plots():
    import importlib.util

    spec = importlib.util.spec_from_file_location("figures_of_test_plots", ROOT / "tests" / "test_plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_error_cells_text_is_dark_on_a_light_box_not_white_on_the_white_hatch():
    """F1: "3/3 E" was white on the white hatching of an error cell."""
    from matplotlib.colors import to_rgb

    grid = pd.DataFrame([["error", "crash"]], index=["c"], columns=[15, 17])
    notes = pd.DataFrame([["3/3 E", "3/3 X"]], index=["c"], columns=[15, 17])
    texts = {t.get_text(): t for t in plots.category_heatmap(grid, "t", notes).axes[0].texts}
    error = texts["3/3 E"]
    assert sum(to_rgb(error.get_color())) < 0.5 and error.get_bbox_patch() is not None
    assert sum(to_rgb(error.get_bbox_patch().get_facecolor())) > 2.5  # a light box under dark text
    assert texts["3/3 X"].get_color() == "white" and texts["3/3 X"].get_bbox_patch() is None  # on black, as before


def test_each_stacked_count_line_is_named_by_its_series_under_the_panel():
    """F2: the count labels stacked at 15/16 requests were told apart by close colours (olive, purple, pink) alone;
    round 4 (C1): they started with the series' marker glyph inside the data area and read as data points.  Now each
    series whose positions did not all end alike has a line of its own under the panel, named on the left."""
    from flexfix.edition.plots.invariance import LAUNCH_COPY_STYLES

    table = _mixed()
    table = pd.concat([table, table.assign(config="flex, pytorch options, graph, as_strided")])
    fig = plots.max_diff_vs_batch(table, "t")
    labels = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "mixed cell"]
    names = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "mixed row"]
    assert len(labels) == 4 and sorted(t.get_text() for t in names) == ["graph, as_strided", "graph, sliced"]
    for name in names:
        hex_ = to_hex(name.get_color())
        assert hex_ == to_hex(LAUNCH_COPY_STYLES[name.get_text()][1])
        row = [t for t in labels if t.get_position()[1] == name.get_position()[1]]
        assert len(row) == 2 and all(to_hex(t.get_color()) == hex_ for t in row)


def test_two_consecutive_misread_runs_of_one_kind_are_parted_by_a_line():
    """F3: query block 2's "row 0: 32-47" and "row 1: 0-31" shared one colour with no boundary between them."""
    from flexfix.edition.plots.layouts import _runs

    lays = _test_plots().notebook03_layouts(48, k_capture=16)  # notebook 03's K_CAPTURE and K_REPLAY
    fig = plots.read_windows(lays)
    for ax, lay in zip(fig.axes, lays):
        src = plots.read_sources(lay)
        want = set()
        for g, part in src.groupby("g"):
            runs = list(_runs(part))
            want |= {(g, a["j"] - 0.5) for (_, b), (a, _) in zip(runs, runs[1:]) if a["code"] == b["code"]}
        drawn = {(g, x) for line in ax.lines if line.get_gid() == "run boundary" for g, x in [_at(line)]}
        assert drawn == want
    as_strided = next(ax for ax in fig.axes if "as_strided" in ax.get_title())
    assert [_at(line) for line in as_strided.lines if line.get_gid() == "run boundary"] == [(2, 15.5)]


def _at(line) -> tuple[int, float]:
    return round(float(line.get_ydata()[0]) + 0.5), float(line.get_xdata()[0])


def test_the_throughput_legend_says_how_many_repetitions_each_marker_rests_on():
    """F4: nothing said that run 2's markers rest on 5 repetitions and the others' on 3."""
    fig = _test_plots().FIGURES["throughput_points"]()
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert [t.split("\n")[0] for t in labels] == ["run 1 (n=3)", "run 2 (n=5)", "run 3 (n=3)", "run 4 (n=3)"]
    assert "repetitions" in fig.axes[-1].get_legend().get_title().get_text()


def test_05_names_the_gpu_in_its_titles_never_the_device_kind():
    """F5: 05's live GPU titles said "cuda" where the recorded ones said "H100"; all now come from device_title."""
    nb = json.loads((ROOT / "notebooks" / "05_cost.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert 'f"{device}:' not in code and "({device})" not in code and '"H100' not in code
    assert code.count("tables.device_title(device)") == 4 and code.count("tables.device_title(device, prov") == 4
