"""Teaching round 16, notebooks 03-05 (newcomer reading of the published GPU edition, findings of r0305): each fix
tied to the data or the source that generates the sentence, table or figure, and each conditional sentence tried with
data where its condition goes each way."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_teaching_round4_03_05 import _code, _markdown  # noqa: E402

from flexfix.edition.narrative import cost_l2  # noqa: E402

# A1 (05): what became of the largest warm speed-up with the L2 flushed is decided from the factors the flushed
# paragraph prints, in the In short line and in that paragraph alike.


def _effect(eager_flushed: float) -> pd.DataFrame:
    """An L2 table whose largest warm speed-up is 0.170 / 0.0228 = 7.5x (1 request of 256 tokens); flushed, the replay
    takes 0.0199 ms and eager ``eager_flushed``."""
    rows = [("flex vllm eager", 1, 0.170, eager_flushed), ("flex vllm graph", 1, 0.0228, 0.0199)]
    rows += [("flex vllm eager", 8, 0.10, 0.09), ("flex vllm graph", 8, 0.08, 0.08)]
    return pd.DataFrame(
        [{"impl": i, "batch": b, "context": 256, "kv_MB": 1.0, "warm_ms": w, "flushed_ms": f} for i, b, w, f in rows]
    )


def _timing(effect: pd.DataFrame) -> pd.DataFrame:
    """The long timing table behind ``effect`` (one row per implementation, case and L2 state)."""
    long = effect.melt(id_vars=["impl", "batch", "context", "kv_MB"], value_vars=["warm_ms", "flushed_ms"])
    long = long.rename(columns={"value": "median_ms"}).assign(l2=lambda d: d["variable"].str.replace("_ms", ""))
    return long.drop(columns=["variable", "kv_MB"]).assign(kv_bytes=1_000_000)


@pytest.mark.parametrize(
    ("eager_flushed", "verdict"),
    [(0.112, "shrank"), (0.1493, "held"), (0.0199, "gone"), (0.05, "back to back")],
)
def test_a1_flushed_verdict_from_the_printed_factors(eager_flushed, verdict):
    effect = _effect(eager_flushed)
    w, f = 0.170 / 0.0228, eager_flushed / 0.0199
    assert cost_l2.verdict(w, f) == verdict
    paragraph = str(cost_l2.replay_flushed(effect))
    assert f"is {f:.1f}x, against {w:.1f}x warm" in paragraph
    assert ("held under the flushed timing too" in paragraph) == (verdict == "held")
    assert ("back to back, as the calls" in paragraph) == (verdict in ("gone", "back to back"))
    clause = cost_l2.flushed_clause(_timing(effect))
    assert ("held" in clause) == (verdict == "held")
    assert f"{f:.1f}x flushed" in clause and f"{w:.1f}x" in clause
    if verdict == "shrank":
        assert f"shrank from {w:.1f}x warm to {f:.1f}x flushed (a replay was still faster)" in clause
    assert "held" not in str(cost_l2.replay_flushed(_effect(0.112)))  # the published case: 5.6x against 7.4x


def test_a1_published_numbers_do_not_hold():
    assert cost_l2.verdict(7.44, 5.63) == "shrank"
    assert cost_l2.verdict(7.44, 7.41) == "held"
    assert cost_l2.verdict(7.44, 1.02) == "gone"


# B1 (04, 03): what the misread windows hold at notebook 04's own sweep widths, computed with flexfix's layouts.


def _sweep(needle_len: int = 120, capture_len: int = 200):
    from flexfix.measure import invariance
    from flexfix.mechanism import paged

    shape = paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048)
    return invariance.SweepShape(shape, needle_len=needle_len, capture_len=capture_len)


def test_b1_windows_at_the_sweeps_widths_from_the_layouts():
    from flexfix.edition.narrative.invariance_lead import sweep_windows, windows_hold
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    lay = layouts.stride_layout(
        copy_to_persistent_as_strided, "as_strided", g=2, g_max=8, w_max=256, k_capture=208, k_replay=128
    )
    owners = lay.owner_replay.reshape(-1)
    cells = lay.read_at[1]
    read = [int(owners[c]) if c < owners.size else -1 for c in cells]
    assert set(read) == {1, -1}  # two query blocks: its own row, then unwritten cells, no other row's entries
    assert windows_hold(_sweep(), [17, 24, 32]) == {"own", "unwritten"}
    assert "other" in windows_hold(_sweep(), [48])
    said = sweep_windows(_sweep(), [1, 16, 17, 24, 32, 48, 64])
    assert "17-32 requests (2 query blocks): block 1: its own row's entries 80-127" in said
    assert "with 2 query blocks the windows hold no other row's entries" in said
    assert "from 3 query blocks on, they hold other rows' entries too" in said
    assert "another row's entries" in sweep_windows(_sweep(), [17, 24]) and "no misread window" in sweep_windows(
        _sweep(), [17, 24]
    )
    wider = sweep_windows(_sweep(needle_len=200, capture_len=120), [17, 48])  # the other way: every window, other rows
    assert "every number of query blocks here has windows holding another row's entries" in wider
    assert "none" in sweep_windows(_sweep(), [1, 8, 16])
    code = _code("04_batch_invariance")
    assert "invariance_lead.sweep_windows(sweep, BATCHES)" in code
    md = " ".join(_markdown("04_batch_invariance").split())
    assert "reads other rows' entries of this step and, further along the buffer" not in md
    assert "*misread windows at these widths*" in md and code.index("sweep_windows") < code.index("kernel_sweep(")
    md3 = " ".join(_markdown("03_stride_layouts").split())
    assert "so its misreads read other rows' entries of the step" not in md3
    assert "at this notebook's widths" in md3


# D5 (04): first, middle and last defined where POSITIONS is introduced, with the query block each lands in.


def test_d5_positions_defined_with_their_query_blocks():
    from flexfix.edition.narrative.invariance_lead import positions_line
    from flexfix.measure.needle import needle_index

    said = positions_line([8, 17, 48], ["first", "middle", "last"])
    assert "middle = index B // 2" in said and "B = 8" not in said
    for b in (17, 48):
        for p in ("first", "middle", "last"):
            i = needle_index(b, p)
            assert f"{p} at index {i} (query block {i // 16})" in said
    assert "invariance_lead.positions_line(BATCHES, POSITIONS)" in _code("04_batch_invariance")
    assert "B // 2" in _code("04_batch_invariance").split("POSITIONS = ")[1].split("\n")[0]


# C1 (05): every run's marker in the throughput figure is a closed shape drawn hollow, in a hue far from the others.


def test_c1_every_run_marker_is_closed_and_hollow_and_the_hues_far_apart():
    import itertools

    from matplotlib.markers import MarkerStyle
    from test_teaching_round4_03_05 import _speed
    from test_teaching_round7_03_05 import _delta

    from flexfix.edition import plots
    from flexfix.edition.plots.cost import FAMILIES, family_style

    for marker in FAMILIES["run"][1]:
        assert MarkerStyle(marker).is_filled(), marker  # a closed shape, not a line marker
    others = {str(m) for kind, (_, ms) in FAMILIES.items() if kind != "run" for m in ms}
    assert not {str(m) for m in FAMILIES["run"][1]} & others
    colours = [family_style("run", k)[0] for k in range(4)]
    for a, b in itertools.combinations(colours, 2):
        assert _delta(a, b) >= 40, (a, b)
    assert min(_delta(colours[3], c) for c in colours[:3]) >= 45  # the fourth run's hue, near wine before
    fig = plots.throughput_points(_speed(), "t")
    drawn = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_marker() not in ("None", None, "")]
    assert drawn
    for line in drawn:
        assert line.get_markerfacecolor() == "none" and MarkerStyle(line.get_marker()).is_filled()


# D4 (04): the crash-or-wrong section ends with one generated takeaway line, both ways.


def _cells(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [{"config": c, "batch": b, "outcome": o, "bitwise_equal": o == "ok" and eq} for c, b, o, eq in rows]
    )


def test_d4_takeaway_from_the_cells_both_ways():
    from flexfix.edition.narrative.misread import misread_cells
    from flexfix.edition.narrative.misread_lead import takeaway as _takeaway

    def takeaway(sweeps):
        return _takeaway(sweeps, misread_cells)

    bad = ("flex, vllm options, graph, as_strided", 17, "illegal_memory_access", False)
    good = ("flex, vllm options, graph, sliced", 17, "ok", True)
    said = takeaway({"a": _cells([bad, good]), "b": _cells([(*bad[:2], "wrong_result", False), good])})
    assert "in every sweep shown here, the bug showed" in said and "had no crash and no wrong result" in said
    said = takeaway({"a": _cells([bad, (*good[:2], "wrong_result", False)])})
    assert "the sliced copy with the same launch crashed or answered wrong too in a" in said
    said = takeaway({"a": _cells([(*bad[:2], "ok", True), good])})
    assert "no sweep shown here got a crash or a wrong result" in said
    said = takeaway({"a": _cells([bad, good]), "b": _cells([(*bad[:2], "ok", True), good])})
    assert "in a, the bug showed" in said
    from flexfix.edition.narrative import invariance as story

    assert "**Takeaway**" in str(story.crash_or_wrong({"a": _cells([bad, good])}))


# D6 (05): a caption directly above each recorded kernel figure says which run it draws.


def test_d6_caption_above_each_recorded_figure():
    from flexfix.edition.narrative.cost_bands import recorded_figure

    said = str(recorded_figure("the recorded run on X", "this run (Y)"))
    assert said.startswith("*The figure below, and the two after it, draw the recorded run on X, not this run (Y)*")
    code = _code("05_cost")
    cell = code[: code.index('"graph_speedup"')].rsplit("plots.ratio_lines(", 1)[0].rstrip().splitlines()[-1]
    assert cell.startswith("display(cost_bands.recorded_figure(tables.recorded_where(prov), this_run))")
    assert code.count("recorded_figure(") == 1  # round 22 D13: above the first of the three only


# D7 (05): the worked band example right after the rule, from the recorded timings.


def test_d7_band_example_right_after_the_rule():
    import nbformat
    from test_teaching_round4_03_05 import DATA, NOTEBOOKS

    from flexfix.edition.narrative.cost_bands import band_example, band_example_recorded

    said = str(band_example_recorded(DATA))
    assert said.startswith("*The band rule at work*, on the recorded run on ")
    assert str(band_example(_gpu())).split(": ", 1)[1] in said
    nb = nbformat.read(NOTEBOOKS / "05_cost.ipynb", as_version=4)
    rule = next(i for i, c in enumerate(nb.cells) if "**The spread band**" in c.source)
    assert "is printed right after this paragraph" in nb.cells[rule].source
    assert nb.cells[rule].source.rstrip().endswith("which were not timed.")
    assert "cost_bands.band_example_recorded(DATA_DIR)" in nb.cells[rule + 1].source
    assert any("The kernel timings recorded on an H100" in c.source for c in nb.cells[rule + 2 :])


def _gpu():
    from test_teaching_round4_03_05 import DATA

    from flexfix.edition import schemas

    return schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)[0]


# D8 (05): a plain first sentence in the engine-level answer, from the same rule, each way.


def _summary(rows):
    idx = pd.MultiIndex.from_tuples([(m, r) for m, r, *_ in rows], names=["model", "ratio"])
    return pd.DataFrame(
        [{"ratios": n, "below_1": b, "median": med, "lowest": lo, "highest": hi} for _, _, n, b, med, lo, hi in rows],
        index=idx,
    )


def test_d8_plain_answer_each_way():
    from test_teaching_round4_03_05 import _speed

    from flexfix.edition import tables
    from flexfix.edition.narrative import cost_answer

    speed = _speed()
    summary, spread = tables.ratio_summary(speed), tables.throughput_spread(speed)
    said = cost_answer.plain_answer(summary, spread)
    # round 22 D14: the plain answer leads the answer's one paragraph; the medians are the bullets' under it
    assert str(cost_answer.engine_answer(speed)).startswith(f"**The answer first.** {said}")
    status = cost_answer._status(summary, "full/piecewise", spread)
    for model, (_, _, med) in status.items():
        assert f"{med:.2f}x ({model})" not in said and f"median {med:.2f}x" in str(cost_answer.engine_answer(speed))
    kinds = {k for k, _, _ in status.values()}
    if kinds == {"hint"}:
        assert "Probably yes" in said and "not proven" in said
    bi = cost_answer._status(summary, "BI1/BI0", spread)
    if {k for k, _, _ in bi.values()} == {"unresolved"}:
        assert "Not measurable here" in said
    # small frames, each way: every ratio above 1 and beyond the spread; below 1; both ways
    none = None
    up = _summary([("m", "full/piecewise", 4, 0, 1.2, 1.1, 1.3), ("m", "BI1/BI0", 4, 4, 0.8, 0.7, 0.9)])
    said = cost_answer.plain_answer(up, none)
    assert "piecewise ones? Yes" in said or "piecewise ones? Probably yes" in said
    assert "throughput? Yes, it was slower" in said or "throughput? Probably yes, it was slower" in said
    mixed = _summary([("m", "full/piecewise", 4, 2, 1.0, 0.9, 1.1)])
    said = cost_answer.plain_answer(mixed, none)
    assert "piecewise ones? Not measurable here" in said and "BI_" not in said
    assert "throughput? Not measured here." in said
