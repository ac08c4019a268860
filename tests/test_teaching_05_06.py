"""Notebooks 05 and 06 as a newcomer read the published edition: every series of a figure can be told apart, a table
and the figure beside it count the same thing the same way, and each generated paragraph says what it means before
its evidence.  Each test fails on the edition as it was."""

import json
import re
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from test_plots import drawn, legends_over_axes, off_figure, overlaps, texts

from flexfix.edition import plots, results, schemas, tables
from flexfix.edition.narrative import cost
from flexfix.edition.narrative import serving as serving_story
from flexfix.integration import serving
from flexfix.measure import engine_sweep, record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _ratios():
    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    return tables.timing_ratios(timing)


def _cells(stem: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


# Notebook 05: the ratio figures.


def _panel_figure():
    return plots.ratio_lines(
        _ratios(), "context", "flex_bw_fraction", "batch", "H100: flex KV read rate / copy bandwidth", "fraction",
        reference=0.5, reference_label="half the copy bandwidth (the target)", logy=True, panels=True,
    )  # fmt: skip


def test_05_the_bandwidth_figure_gives_each_batch_size_its_own_panel():
    """Batch 8 and batch 16 read at the same rate and hid each other in one axes: now each batch size has a panel
    titled with it, its series the only coloured line there (the others grey, behind), with its own colour."""
    ratios = _ratios()
    batches = sorted(ratios["batch"].unique())
    eight, sixteen = (ratios[ratios.batch == b].set_index("context")["flex_bw_fraction"] for b in (8, 16))
    assert ((eight - sixteen).abs() / eight < 0.1).all()  # the overlap the reader could not see through
    fig = _panel_figure()
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == [f"batch {b}" for b in batches]
    colours = []
    for ax, b in zip(shown, batches):
        coloured = [ln for ln in ax.get_lines() if ln.get_label() == f"batch {b}"]
        others = [ln for ln in ax.get_lines() if ln.get_label() == "the other batch values"]
        assert len(coloured) == 1 and len(others) == len(batches) - 1
        assert all(to_hex(ln.get_color()) == to_hex("grey") for ln in others)
        assert coloured[0].get_zorder() >= max(ln.get_zorder() for ln in others)
        colours.append(to_hex(coloured[0].get_color()))
        ref = [ln for ln in ax.get_lines() if ln.get_label() == "half the copy bandwidth (the target)"]
        assert len(ref) == 1 and ref[0].get_linestyle() == "--"
    assert len(set(colours)) == len(colours)
    assert len({ax.get_ylim() for ax in shown}) == 1  # shared axes: heights compare across panels
    assert overlaps(fig) == [] and off_figure(fig) == [] and legends_over_axes(fig) == []


def test_05_every_ratio_figure_of_the_notebook_is_drawn_in_panels_with_a_named_reference():
    calls = [_source(c) for c in _cells("05_cost") if "plots.ratio_lines(" in _source(c)]
    assert len(calls) == 4
    for call in calls:
        assert "panels=True" in call and "reference_label=" in call, call


def test_05_one_axes_series_differ_in_marker_and_line_style_and_are_named_where_they_end():
    fig = plots.ratio_lines(_ratios(), "batch", "graph_speedup", "context", "t", "speed-up")
    ax = fig.axes[0]
    series = [ln for ln in ax.get_lines() if ln.get_label().startswith("context ")]
    dashes = [str(ln._unscaled_dash_pattern) for ln in series]  # what is drawn (get_linestyle says "--" for any dashes)
    reference = next(ln for ln in ax.get_lines() if ln.get_label() == "reference: 1")
    assert len({ln.get_marker() for ln in series}) == len(set(dashes)) == len(series)
    assert str(reference._unscaled_dash_pattern) not in dashes  # plain dashes belong to the reference line
    drawn(fig)
    said = [t.get_text() for t, _, _ in texts(fig)]
    assert all(ln.get_label() in said for ln in series)  # a direct label at each line's end
    assert "reference: 1" in [t.get_text() for t in ax.get_legend().get_texts()]  # not a bare "1"
    assert overlaps(fig) == [] and off_figure(fig) == []


def test_05_the_timing_list_names_every_implementation_the_tables_show():
    """The L2 table showed `flex batch_invariant eager`, which the list of what was timed did not name."""
    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    text = next(_source(c) for c in _cells("05_cost") if _source(c).startswith("## How the kernel is timed"))
    for impl in sorted(set(timing["impl"])):
        assert f"`{impl}`" in text, impl
    # a CPU run's flex is named where a CPU run prints what it times (round 22 D11: no longer a static note)
    code = next(_source(c) for c in _cells("05_cost") if 'if device == "cpu":' in _source(c))
    assert "`flex pytorch eager`" in code.split('if device == "cpu":')[1]


# Notebook 05: the engine paragraphs.


def _speed():
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    table, _ = schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)
    speed = engine_sweep.throughput_rows(table)
    return speed.assign(setting=[tables.engine_label(r) for _, r in speed.iterrows()])


def test_05_the_warm_up_line_says_what_the_count_means_and_how_far_chance_scatters_it():
    speed = _speed()
    runs = tables.throughput_runs(speed)
    said = cost.engine_noise(speed, tables.throughput_spread(speed), runs)
    sd = sum((1 / len(s)) * (1 - 1 / len(s)) for s in speed["seconds"]) ** 0.5
    z = (runs["slowest_first"].sum() - runs["by_chance"].sum()) / sd
    line = next(x for x in said.splitlines() if x.startswith("* **Warm-up**: "))
    assert f"give or take about {sd:.1f} (one standard deviation" in line
    meaning = line.split(". The slowest")[0]
    assert ("a hint, not proof" in meaning) == (1 <= z < 2)  # 26 against 19.5 +- 3.7: between one and two


def test_05_the_ratio_lead_gives_the_median_of_each_comparison_that_went_both_ways():
    summary = tables.ratio_summary(_speed())
    lead = cost.engine_ratios(summary).split("\n\n")[1]
    mixed = lead.split("went both ways")[1]
    for (model, ratio), row in summary.iterrows():
        if 0 < row["below_1"] < row["ratios"]:
            assert f"{ratio} ({model}) median {row['median']:.2f}x" in mixed


def test_05_the_kernel_lead_says_flex_reads_at_a_small_fraction():
    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    said = cost.kernel_timing(timing, _ratios(), "the H100")
    assert "at a small fraction of the copy bandwidth" in said


# Notebook 06: the stage table, the figure and the sentences count alike.


def _recorded_serve():
    return serving.recorded_run(DATA)[0]


def _bar_texts(fig) -> dict[str, str]:
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    counts = [t.get_text() for t in ax.texts if t.get_position()[0] > 100]  # beside the bar, not a placeholder's words
    return dict(zip(labels, counts))


@pytest.mark.parametrize("which", ["recorded", "synthetic"])
def test_06_the_stage_table_and_the_figure_count_each_request_once_and_alike(which):
    """The recorded run: the table said 48 with other logprobs, the bar 41 (the 7 with other tokens counted in both
    by one, in one only by the other).  Now the three classes add up to `compared`, in the table as on the bars."""
    table = _recorded_serve() if which == "recorded" else _synthetic_serve()
    stages = tables.stage_table(table)
    fig = plots.serving_figure(table, "t")
    bars = _bar_texts(fig)
    model = table.set_index("scenario")["model"]
    for _, s in stages[stages.compared.fillna(0) > 0].iterrows():
        assert s.bitwise_equal + s.same_tokens_other_logprobs + s.tokens_differ == s.compared
        text = bars[f"{s.scenario} [{model[s.scenario]}]: {s.stage} {s.requests}"]  # round 7: brackets
        said = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) ([a-z ,]+?)(?:;| \(of)", text))
        assert said.get("same tokens, other logprobs", 0) == s.same_tokens_other_logprobs, text
        assert said.get("tokens differ", 0) == s.tokens_differ, text
        assert said.get("equal", 0) == s.bitwise_equal, text
    assert "logprobs_differ" not in stages  # the inclusive count is gone from the table


def _synthetic_serve():
    """A stage whose requests 0-1 are equal, 2-3 only moved logprobs and 4 has other tokens (and so logprobs)."""
    stage = {
        "stage": "together", "requests": 5, "ok": 5, "errored": 0, "errors": {}, "compared": 5, "bitwise_equal": 2,
        "tokens_differ": [4], "logprobs_differ": [2, 3, 4], "max_abs_logprob_diff": 0.5, "seconds": 1.0,
    }  # fmt: skip
    import pandas as pd

    return pd.DataFrame(
        [{"scenario": "patched_bi0", "model": "tiny", "records": [stage], "status": "differs", "ima_in_log": False,
          "plugin_lines": 0, "server_exited_with": None}]
    )  # fmt: skip


def test_06_the_sentences_count_as_the_table_and_the_figure():
    table = _recorded_serve()
    stages = tables.stage_table(table)
    said = serving_story.scenarios(table, stages, "the H100")
    # round 8: the sentence sums a scenario's stages (the counts stage by stage are the table's, not repeated)
    for scenario, mine in stages[stages.tokens_differ.fillna(0) > 0].groupby("scenario"):
        mine = stages[stages.scenario == scenario]
        batch = mine[mine.stage == "together"]  # round 13: the batched answers apart from the streamed one
        compared, equal = int(batch.compared.fillna(0).sum()), int(batch.bitwise_equal.fillna(0).sum())
        tokens = int(batch.tokens_differ.fillna(0).sum())
        differed = f"all {compared}" if equal == 0 else f"{compared - equal} of {compared}"
        assert f"{differed} batched answers differed from the same request alone ({tokens} with other tokens" in said
    assert "48 with other logprobs" not in said


def test_06_a_stage_that_did_not_run_is_an_outlined_placeholder_not_a_value():
    fig = plots.serving_figure(_recorded_serve(), "t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    row = labels.index("stock [tiny]: stream 1")  # round 7: square brackets
    bars = [b for b in ax.patches if abs(b.get_y() + b.get_height() / 2 - row) < 1e-6]
    assert len(bars) == 1 and not bars[0].get_hatch() and bars[0].get_linestyle() == ":"  # round 6: dotted outline
    valued = {to_hex(b.get_facecolor()) for b in ax.patches if b is not bars[0]}
    assert to_hex(bars[0].get_facecolor()) not in valued  # no colour that a measured bar uses
    inside = [t.get_text() for t in ax.texts if abs(t.get_position()[1] - row) < 1e-6 and t.get_position()[0] < 100]
    assert inside == ["not run: the server had stopped"]  # its words inside: a placeholder, not a share


def test_06_the_captions_say_what_the_counts_count():
    text = " ".join(_source(c) for c in _cells("06_serving") if c["cell_type"] == "markdown")
    text = re.sub(r"\s+", " ", text)
    assert "counted once, in exactly one of these columns: `bitwise_equal`; `same_tokens_other_logprobs`" in text
    assert "Together they add up to `compared`" in text
    assert "bars count each compared request once" in text


def test_06_the_recorded_run_is_read_through_the_stage_table_the_notebook_shows():
    table, prov = results.recorded(DATA, "serve")
    stages = tables.stage_table(table).set_index(["scenario", "stage", "requests"])
    bi0 = stages.loc[("patched_bi0", "together", 48)]
    assert (bi0.bitwise_equal, bi0.same_tokens_other_logprobs, bi0.tokens_differ) == (0, 41, 7)
