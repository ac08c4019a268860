"""Teaching round 17, notebooks 03-05 (newcomer reading of a CPU execution of the sources, findings of r0305): each
fix tied to the data or the source that generates the sentence, table or figure, and each conditional sentence tried
with data where its condition goes each way."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_teaching_round4_03_05 import _code, _markdown  # noqa: E402

from flexfix.edition import plots, tables  # noqa: E402


def _flat(text: str) -> str:
    return " ".join(text.split())


def _gpu():
    from test_teaching_round4_03_05 import DATA

    from flexfix.edition import schemas

    return schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)[0]


# A1 (04): vLLM's wider replay reads other rows' entries AND its own row's entries at the wrong position (as 03
# shows, at 03's widths, from flexfix.mechanism.layouts); 04's bullet says both.


def test_a1_wider_replay_windows_hold_own_row_entries_too():
    from flexfix.edition.narrative.invariance_lead import _block_reads
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    params = _code("03_stride_layouts")
    widths = {n: int(params.split(f"\n{n} = ")[1].split()[0]) for n in ("G", "G_MAX", "W_MAX", "K_CAPTURE", "K_REPLAY")}
    assert widths["K_REPLAY"] > widths["K_CAPTURE"]  # 03's wider replay, as vLLM's
    lay = layouts.stride_layout(
        copy_to_persistent_as_strided,
        "as_strided",
        g=widths["G"],
        g_max=widths["G_MAX"],
        w_max=widths["W_MAX"],
        k_capture=widths["K_CAPTURE"],
        k_replay=widths["K_REPLAY"],
    )
    held = {what for g in range(1, widths["G"]) for what, _, _ in _block_reads(lay, g)}
    assert "own" in held and any(w.startswith("row ") for w in held)  # both kinds, at 03's widths
    md = _flat(_markdown("04_batch_invariance"))
    bullet = md.split("**What vLLM does**")[1].split("**Crash or wrong answer**")[0]
    assert "other rows' entries of the same step" in bullet
    assert "that row's entries at the wrong position" in bullet and "shows both" in bullet


# C1 (05): the star that flags a band missing 1 is small and clear of its bar (r20 C1 moved it off the value axis,
# into a strip above its panel: tests/test_teaching_round20_03_05.py checks where it sits).


def test_c1_stars_sit_beside_their_bars_away_from_one():
    """r17 C1: clear of the bar, at most 9 points; r20 C1: above the panel, so away from every bar."""
    from flexfix.edition.plots.cost import STAR_PT

    bands = tables.timing_ratios(_gpu(), spread=True)
    args = ("batch", "bi_overhead", "context", "t", "y")
    fig = plots.ratio_lines(bands, *args, reference_label="1", min_span=0.1, panels=True, bars=True)
    fig.draw_without_rendering()
    stars = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() != "*":
                continue
            assert line.get_markersize() == STAR_PT <= 9
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            shown = line.get_transform().transform(xy)[:, 1]  # where the star's centre is drawn
            assert (shown - STAR_PT / 2 * fig.dpi / 72 > ax.get_window_extent().y1).all()  # above every bar
            stars += len(xy)
    cases = tables.cost.bi_band_cases(_gpu())
    assert stars == len(cases)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("filled star") and "misses 1" in t for t in legend)


# C2 (05): a band hidden under its series' markers (3 points tall under 6-point markers) is said to be so.


def _flex_over_sdpa(spread: float) -> pd.DataFrame:
    rows = [(1, 256, 450.0), (1, 1024, 200.0), (8, 256, 148.0), (8, 1024, 43.5)]
    return pd.DataFrame(
        [
            {
                "batch": b,
                "context": c,
                "flex_over_sdpa": v,
                "flex_over_sdpa_lo": v / spread,
                "flex_over_sdpa_hi": v * spread,
            }
            for b, c, v in rows
        ]
    )


@pytest.mark.parametrize(("spread", "hidden"), [(1.04, True), (1.5, False)])
def test_c2_the_note_says_a_band_hidden_under_its_markers(spread, hidden):
    from flexfix.edition.plots.cost_marks import THIN_PT, band_heights_pt, band_hidden

    args = ("batch", "flex_over_sdpa", "context", "t", "y")
    fig = plots.ratio_lines(_flex_over_sdpa(spread), *args, reference_label="1", logy=True, panels=True)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    heights = band_heights_pt(fig.axes)
    assert band_hidden(fig.axes) == [hidden] * 2
    if hidden:  # a band taller than its line, yet under the markers: the old rule said it showed
        assert all(h >= THIN_PT * 0.5 for h in heights)
        assert any(t.startswith("(no band shows here") and "line and markers" in t for t in legend)
    else:
        assert not any("narrower than its line" in t for t in legend)
    import matplotlib.pyplot as plt

    plt.close(fig)


# C3 (03, 01): the read-window colour of "another entry of its own row" is no query block's colour, nor near one in
# hue (the pink sat 1 degree of hue from query block 0's reddish purple), nor an outcome's.


def test_c3_own_row_colour_is_far_from_every_query_block_and_outcome():
    from test_teaching_round7_03_05 import _delta, _lab

    from flexfix.edition.plots.layouts import READ_WINDOW_COLOURS, STORAGE_OWNER_COLOURS
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    def hue(h: str) -> float:
        _, a, b = _lab(h)
        return float(np.degrees(np.arctan2(b, a)) % 360)

    def apart(x: str, y: str) -> bool:
        dh = abs((hue(x) - hue(y) + 180) % 360 - 180)
        return _delta(x, y) >= 50 or (_delta(x, y) >= 30 and dh >= 30)

    blocks = {k: h for k, (_, h) in STORAGE_OWNER_COLOURS.items() if k.startswith("query block")}
    outcomes = dict(OUTCOME_COLOURS)
    word, own_row = READ_WINDOW_COLOURS["another entry of its own row"]
    assert word != "pink"
    for name, other in blocks.items():  # in hue too: the storage figures beside it draw these
        assert apart(own_row, other), (word, name)
    for name, other in outcomes.items():  # the rule of round 7 (greys have no hue to compare)
        assert _delta(own_row, other) >= 20, (word, name)
    # the old pink fails the same rule against query block 0: the test can fail
    assert not apart("#ffbbdd", blocks["query block 0"])
    hexes = {h.lower() for h in list(blocks.values()) + list(outcomes.values())}
    assert own_row.lower() not in hexes


# D5 (04): the sliced copy's clean record is claimed for the option sets that built a kernel there, and the ones
# that built none are named.


def _cells(rows) -> pd.DataFrame:
    return pd.DataFrame([{"config": c, "batch": b, "outcome": o, "bitwise_equal": o == "ok"} for c, b, o in rows])


def test_d5_takeaway_names_option_sets_that_built_no_kernel():
    from flexfix.edition.narrative.misread import misread_cells
    from flexfix.edition.narrative.misread_lead import takeaway

    bad = ("flex, vllm options, graph, as_strided", 17, "illegal_memory_access")
    good = ("flex, vllm options, graph, sliced", 17, "ok")
    none = ("flex, pytorch options, graph, sliced", 17, "error")
    said = takeaway({"a": _cells([bad, good, none])}, misread_cells)
    assert "had no crash and no wrong result in any of them, with the options that built a kernel there" in said
    assert "(`flex, vllm options`)" in said and "no kernel was built there with `flex, pytorch options` in a" in said
    said = takeaway({"a": _cells([bad, good])}, misread_cells)
    assert "in any of them." in said and "built a kernel" not in said
    # the recorded H100 sweep: PyTorch's options built no kernel past one query block there
    from test_teaching_round4_03_05 import DATA

    from flexfix.edition import schemas
    from flexfix.measure import record

    gpu, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    past = gpu[(gpu["config"] == "flex, pytorch options, graph, sliced") & (gpu["batch"] > 16)]
    said = takeaway({"H100": gpu}, misread_cells)
    assert ("no kernel was built there with `flex, pytorch options`" in said) == bool(
        len(past) and (past["outcome"] == "error").all()
    )


# D6 (03): the query blocks with never-written cells are named from the table, not "the later query blocks".


def test_d6_blocks_with_never_written_cells_named_from_the_table():
    from flexfix.edition.narrative.layouts import misreads

    def table(never):
        return pd.DataFrame(
            [
                {
                    "copy": "as",
                    "K_capture": 32,
                    "K_replay": 16,
                    "row": r,
                    "misread": m,
                    "cells_read": 16,
                    "never_written": n,
                }
                for r, m, n in zip(range(3), (0, 16, 16), never)
            ]
        )

    assert "16 of them, in query block 2 only)" in str(misreads(table((0, 0, 16))))
    assert "24 of them, in query blocks 1 and 2 only)" in str(misreads(table((0, 8, 16))))
    assert "not written this step" not in str(misreads(table((0, 0, 0))))
    md = _flat(_markdown("03_stride_layouts"))
    assert "for the later query blocks" not in md
    assert "`never_written` how many of those nothing wrote at the replay step" in md  # round 22 D3: the table's


# D8 (05): the band example is printed once, right after the rule.


def test_d8_band_example_printed_once():
    code = _code("05_cost")
    assert code.count("cost_bands.band_example") == 1 and "cost_bands.band_example_recorded(DATA_DIR)" in code


# D3 (05): the takeaways' pointer to the flushed paragraph is a generated line, right after them, that says which
# run timed a flushed L2, if any.


def _flushed_timing() -> pd.DataFrame:
    rows = [("flex vllm eager", 0.170, 0.112), ("flex vllm graph", 0.0228, 0.0199)]
    return pd.DataFrame(
        [
            {"impl": i, "batch": 1, "context": 256, "kv_bytes": 1_000_000, "l2": l2, "median_ms": ms}
            for i, w, f in rows
            for l2, ms in (("warm", w), ("flushed", f))
        ]
    )


def test_d3_flush_takeaway_each_way():
    from flexfix.edition.narrative.cost_l2 import flush_takeaway

    warm = _gpu()
    flushed = _flushed_timing()
    neither = str(flush_takeaway("this run (CPU)", warm.head(0), "the recorded run", warm))
    assert "neither this run (CPU) nor the recorded run timed it" in neither and "does not show whether" in neither
    here = str(flush_takeaway("this run (H200)", flushed, "the recorded run", warm))
    assert "this run (H200) timed it" in here and "*The replay's speed-up, flushed*" in here
    there = str(flush_takeaway("this run (CPU)", warm.head(0), "the recorded run", flushed))
    assert "the recorded run did" in there and "*The replay's speed-up, flushed*" not in there
    import nbformat
    from test_teaching_round4_03_05 import NOTEBOOKS

    nb = nbformat.read(NOTEBOOKS / "05_cost.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Takeaways"))
    assert "(*The replay's speed-up, flushed*)" not in nb.cells[at].source
    assert "the line right under these takeaways" in _flat(nb.cells[at].source)
    assert nb.cells[at + 1].source.startswith("cost_l2.flush_takeaway(this_run, kernel, timed_where, gpu)")


# D2 (04): the misread window is an upper bound: kv_num_blocks of its cells are read, and pads lie past the pages.


def test_d2_windows_said_to_be_an_upper_bound():
    from flexfix.edition.narrative.invariance_lead import sweep_windows
    from flexfix.measure import invariance
    from flexfix.mechanism import paged

    shape = paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)
    said = sweep_windows(invariance.SweepShape(shape, needle_len=120, capture_len=200), [17, 48])
    head = said.splitlines()[0]
    assert "reads at most 128 cells from cell g x 208" in head
    assert "only the first kv_num_blocks of them" in head and "-1 pads" in head


# D9 (04): the key ranks the outcomes as the verdict does, from flexfix.measure.invariance.verdicts.


def test_d9_the_key_ranks_outcomes_as_the_verdict_does():
    from flexfix.edition.tables.invariance import outcome_key
    from flexfix.measure import invariance

    key = outcome_key()
    rank = key["rank in the verdict (1: worst)"]
    assert sorted(rank) == list(range(1, len(key) + 1))
    worst = key.index[rank.tolist().index(1)]
    assert worst == "crash"
    cells = pd.DataFrame(
        [
            {"config": "c", "batch": 1, "outcome": "error", "bitwise_equal": False, "max_abs_diff": 0.0},
            {"config": "c", "batch": 2, "outcome": "wrong_result", "bitwise_equal": False, "max_abs_diff": 1.0},
        ]
    )
    verdict = invariance.verdicts(cells)["verdict"].iloc[0]
    assert verdict == key.loc["error (no kernel built)", "verdict"]
    assert rank["error (no kernel built)"] < rank["wrong (silently)"]
    assert "the key below ranks the outcomes, in its column *rank in the verdict*" in _flat(
        _markdown("04_batch_invariance")
    )
