"""Round 20 (a reading of the published edition), notebooks 03-05: each fix tied to the data or the source that
generates the sentence or figure, and each conditional sentence tried with data where its condition goes each way."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from test_teaching_round4_03_05 import _code, _markdown, _recorded_timing  # noqa: E402

from flexfix.edition import plots, schemas, tables  # noqa: E402
from flexfix.measure import record  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


# B1 (04): "a crash kills the child, the cell records the outcome, and a new child carries on" was said as fact, yet
# the H100 recording stops with no outcome at the very cell where its batch-invariant as_strided configuration's
# first crash came (in the other recording). The notebook now says what the records hold, from them.


def _kernel_recordings():
    return schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)


def test_b1_the_crash_handling_is_said_from_the_records():
    from flexfix.edition.narrative.crash_records import crash_handling

    table, provs = _kernel_recordings()
    said = crash_handling(table, "the recorded runs", provs).data
    bi = "`flex, batch_invariant options, graph, as_strided` in `kernel_invariance` stops after 16 requests"
    assert bi in said and "whether a crash or a stop ended it there, the records do not say" in said
    assert "no outcome for those 21 cells" in said
    # round 22 D7: part2's own line says its crashes; this one says where the first recording stops, once
    assert (
        "`kernel_invariance_part2` recorded those cells apart (its line below), and the first of them crashed" in said
    )
    assert "neither a crash recorded nor the sweep carrying on" in said
    vllm = "`flex, vllm options, graph, as_strided` crashed in 21 cells of 42 in `kernel_invariance`"
    assert vllm in said and "20 cells after it hold an outcome of their own" in said
    # a run with no crash says that its records do not show the handling at work
    calm = crash_handling(table[table["outcome"] == "ok"].drop(columns="source"), "this run (cuda)").data
    assert "no cell of this sweep crashed" in calm and "do not show the crash handling at work" in calm  # round 22


def test_b1_notebook_04_no_longer_states_the_handling_as_fact():
    md, code = _markdown("04_batch_invariance"), _code("04_batch_invariance")
    assert "a new child carries on with the next cell" not in md
    assert "built so that a crash ends only the child" in md and "*Crash handling* lines" in md
    assert code.count("crash_records.crash_handling(") == 2
    assert "crash_records.crash_handling(gpu_kernel, tables.recorded_where(provs), provs)" in code


# B2, B3 (05): the engines' warm-up count and VLLM_ENABLE_V1_MULTIPROCESSING=0 were stated of the recorded engines,
# which keep neither. A line now says, from the records, what they keep and that these two are this code's settings.


def _engines():
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    return schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)[0]


def test_b2_b3_the_engine_setup_line_says_what_the_records_keep():
    from flexfix.edition.narrative.cost_setup import engine_setup

    table = _engines()
    said = engine_setup(table).data
    assert f"({len(table)} engines in 8 recordings)" in said
    assert f"`patched` ({len(table)} of {len(table)} true)" in said
    assert "no record holds how many untimed warm-up batches ran or `VLLM_ENABLE_V1_MULTIPROCESSING`" in said
    assert "1 untimed warm-up batch before each case's timed repetitions" in said
    assert "`VLLM_ENABLE_V1_MULTIPROCESSING=0` in every engine's environment" in said
    assert "not something their records show" in said
    # where the records did keep the variable, the line says so, and no longer calls it this code's alone
    kept = table.assign(
        records=[
            [{**r, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if r.get("kind") == "startup" else r for r in rs]
            for rs in table["records"]
        ]
    )
    said = engine_setup(kept).data
    assert f"`VLLM_ENABLE_V1_MULTIPROCESSING` ({len(table)} of {len(table)})" in said
    assert "no record holds how many untimed warm-up batches ran." in said


def test_b2_b3_notebook_05_scopes_the_setup_to_this_code():
    from flexfix.edition.narrative.cost import _warmup_meaning

    md, code = _markdown("05_cost"), _code("05_cost")
    assert "`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so that the patch reaches it" not in md
    assert "one untimed warm-up, then" not in md and "one warm-up batch not being enough" not in md
    assert "(how, as far\nas the recordings keep it: the setup line above)" in md  # round 22 D15: said there once
    assert "display(cost_setup.engine_setup(engine_table))" in code
    for first in (1, 5, 9):
        assert "the recordings do not keep the count" in _warmup_meaning(first, 3.0, 1.5)


# C1 (05): the star of a band that misses 1 sat on the ratio axis, 1-2% beyond its bar, where it read as a value.
# It now sits in a strip above the panel, outside the axes, over its point.


def test_c1_the_stars_sit_off_the_value_axis_over_their_points():
    timing = _recorded_timing()[0]
    bands = tables.timing_ratios(timing, spread=True)
    cases = tables.cost.bi_band_cases(timing)
    args = ("batch", "bi_overhead", "context", "t", "y")
    fig = plots.ratio_lines(bands, *args, reference_label="1", min_span=0.1, panels=True, bars=True)
    fig.draw_without_rendering()
    stars = set()
    for ax, (context, _) in zip(fig.axes, bands.groupby("context", sort=True)):
        top = ax.get_window_extent().y1
        for line in ax.get_lines():
            if line.get_marker() != "*":
                continue
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            shown = line.get_transform().transform(xy)
            assert (shown[:, 1] - line.get_markersize() / 2 * fig.dpi / 72 > top).all()  # wholly above the axes
            assert not line.get_clip_on()
            # over its point: the same x on the figure as the point it flags
            assert np.allclose(shown[:, 0], ax.transData.transform(np.column_stack([xy[:, 0], np.ones(len(xy))]))[:, 0])
            title = ax.title.get_window_extent()
            assert (shown[:, 1] + line.get_markersize() / 2 * fig.dpi / 72 < title.y0).all()  # under the title
            stars |= {(int(x), int(context)) for x in xy[:, 0]}
    assert stars == {(int(b), int(c)) for b, c in zip(cases["batch"], cases["context"])}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("filled star, in the strip above a panel (off its value axis)") for t in legend)
    import matplotlib.pyplot as plt

    plt.close(fig)


# C2 (05): batch 16 was drawn in pale sand, barely apart on white from the grey lines of batches 1 and 8 under it.


def _luminance(colour: str) -> float:
    from matplotlib.colors import to_rgb

    c = np.array(to_rgb(colour))
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def test_c2_batch_16_stands_apart_from_batches_1_and_8_and_the_grey_lines():
    from matplotlib.colors import to_hex
    from test_teaching_round7_03_05 import _delta

    bands = tables.timing_ratios(_recorded_timing()[0], spread=True)
    fig = plots.ratio_lines(bands, "context", "flex_bw_fraction", "batch", "t", "f", reference=0.5, panels=True)
    drawn = {}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        own = [ln for ln in ax.get_lines() if to_hex(ln.get_color()) == to_hex(ax.title.get_color())]
        drawn[ax.get_title()] = (to_hex(own[0].get_color()), own[0].get_marker())
    sixteen, one, eight = drawn["batch 16"], drawn["batch 1"], drawn["batch 8"]
    assert (1.05 / (_luminance(sixteen[0]) + 0.05)) >= 3  # on white, as dark as a line must be to read
    assert _delta(sixteen[0], "#999999") >= 20  # apart from the grey lines of the other batch sizes
    for other in (one, eight):
        assert _delta(sixteen[0], other[0]) >= 20 and sixteen[1] != other[1]
    import matplotlib.pyplot as plt

    plt.close(fig)


# D2 (03): the sentence at the key step had no verb. D9 (05): the whole disclaimer stood above three figures in a row.


def test_d2_d9_the_key_step_has_its_verb_and_the_disclaimer_is_said_once():
    from flexfix.edition.narrative.cost_bands import recorded_figure

    md = " ".join(_markdown("03_stride_layouts").split())
    assert "query block 1's entries start at storage cell `K_REPLAY`" in md and "block 1's start at" not in md
    code = _code("05_cost")
    assert code.count("recorded_figure(tables.recorded_where(prov), this_run, again=True)") == 0  # round 22 D13
    assert str(recorded_figure("X", "Y", again=True)) == "*The figure below draws the same recorded run* (X)."


def test_d8_the_takeaways_carry_no_cpu_run_aside():
    takeaways = " ".join(_markdown("05_cost").split()).split("## Takeaways")[1]
    assert "a CPU run has no L2 flush" not in takeaways and "which run of this edition, if any" not in takeaways
    assert "the line right under these takeaways says which run did" in takeaways


# D7 (04): two configurations with the same pair of verdicts were said one after the other, in full, each.


def test_d7_configurations_with_the_same_two_verdicts_are_said_once():
    from flexfix.edition.narrative.invariance_lead import shared_configs
    from flexfix.measure.outcomes import CRASHES

    recorded, _ = _kernel_recordings()
    here = recorded.drop(columns="source").copy()
    crashed = here["outcome"].isin(CRASHES)
    here.loc[crashed, "outcome"] = "wrong_result"
    here.loc[crashed, "bitwise_equal"] = False
    said = " ".join(str(shared_configs(here, recorded, "this run (H200)", "the recording")).split())
    pair = "`wrong results` in this run (H200), `crashes` in the recording"
    assert said.count(pair) == 1
    both = "`flex, vllm options, graph, as_strided` and `flex, batch_invariant options, graph, as_strided`: " + pair
    assert both in said and "(the other 10 shared came to the same verdict)" in said
