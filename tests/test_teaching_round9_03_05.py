"""Teaching round 9, notebooks 03-05 (newcomer reading of the published GPU edition, findings A/B/C/D of r0305):
each fix tied to the data or the source that generates the sentence, table or figure."""

import pandas as pd
from test_teaching_round4_03_05 import DATA, _code, _markdown

from flexfix.edition import schemas, tables


def _timing():
    return schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)


def _h200_like(bands: pd.DataFrame) -> pd.DataFrame:
    """The recording with one short case 9% slower, its band wholly above 1: the published H200 run's case."""
    out = bands.copy()
    at = out.index[(out["batch"] == out["batch"].min()) & (out["context"] == out["context"].min())][0]
    for column, value in (("bi_overhead", 1.091), ("bi_overhead_lo", 1.0724), ("bi_overhead_hi", 1.1234)):
        out[column] = out[column].astype(float)
        out.at[at, column] = value
    return out


def _speed():
    from test_teaching_round4_03_05 import _speed

    return _speed()


# A1: the kernel options' cost names its source and covers this run's result, from the data.


def test_a1_kernel_option_cost_names_each_run_and_its_cases():
    from flexfix.edition.narrative.cost import kernel_bi_cost, published

    timing, prov = _timing()
    bands = tables.timing_ratios(timing, spread=True)
    where = tables.recorded_where(prov)
    recorded = kernel_bi_cost(bands, where)
    assert ((bands["bi_overhead"] - 1).abs() <= 0.05).all()
    assert recorded.startswith(where) and "within 5% in every case" in recorded
    here = _h200_like(bands)
    said = kernel_bi_cost(here, "this run (NVIDIA H200)")
    assert "within 5% in every case" not in said
    assert f"more than 5% slower in 1 of {len(here)} cases" in said
    b, c = int(here["batch"].min()), int(here["context"].min())
    assert f"{b} request x {c} tokens, 9% slower" in said and "1.07–1.12x, wholly above 1" in said
    text = str(published(tables.ratio_summary(_speed()), bands, where, here=(here, "this run (NVIDIA H200)")))
    direction = text.split("**Direction.**")[1]
    assert f"in {where}: " in direction and "in this run (NVIDIA H200): " in direction
    assert "no graph replay" in kernel_bi_cost(pd.DataFrame({"flex_over_sdpa": [1.0]}), "this run (CPU)")
    md = _markdown("05_cost")
    assert "where\nthe price of batch invariance is *not*" not in md and "is *not*" not in md
    code = _code("05_cost")
    assert "here=here" in code and "tables.timing_ratios(kernel, spread=True)" in code
    assert "timed_where = tables.recorded_where(prov)" in code  # not the engine loop's last `prov`


# A2: the lead sentence names every published source the anchors list.


def test_a2_lead_names_every_anchor_source():
    from flexfix.edition import anchors

    md = _markdown("05_cost")
    lead = md.split("## Next to the published numbers")[1].split("*How to read it:*")[0]
    sources = anchors.anchor_table()["source"].unique()
    assert len(sources) == 2
    for source in sources:
        assert f"**{source}**" in lead
    assert "The published numbers compare flex with" not in lead


# B1: the host setting the pace is an expectation, not a measurement.


def test_b1_host_pace_is_hedged():
    md = _markdown("05_cost")
    assert "launches -- sets much of the pace" not in md
    assert "we expect the host" in md and "no output here measures host time against GPU time" in md


# C1: panels with their own y axes take their range from their own series, band and reference, not the grey lines.


def test_c1_own_axes_follow_their_own_series():
    from flexfix.edition import plots

    timing, _ = _timing()
    bands = tables.timing_ratios(timing, spread=True)
    fig = plots.ratio_lines(bands, "batch", "graph_speedup", "context", "t", "s", panels=True, sharey=False)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    for ax, (context, part) in zip(panels, bands.groupby("context", sort=True)):
        assert ax.get_title() == f"context {context}"
        lo, hi = ax.get_ylim()
        own = pd.concat([part["graph_speedup"], part["graph_speedup_lo"], part["graph_speedup_hi"]])
        assert lo <= min(own.min(), 1.0) and hi >= own.max()
        assert hi < own.max() * 1.2 + 0.1  # not stretched to the grey lines
    top = float(bands["graph_speedup"].max())
    last = bands[bands["context"] == bands["context"].max()]
    assert last["graph_speedup_hi"].max() < top / 2  # the case the reader saw flattened
    assert panels[-1].get_ylim()[1] < top / 2


# C2: the 'no number' strip keeps each series' own marker shape.


def test_c2_no_number_strip_keeps_series_shapes():
    from matplotlib.colors import to_hex

    from flexfix.edition import plots
    from flexfix.edition.plots.invariance import LAUNCH_COPY_STYLES
    from flexfix.measure import record

    kernel, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    fig = plots.max_diff_vs_batch(kernel, "t")
    shape = {to_hex(c): m for _, c, m in LAUNCH_COPY_STYLES.values()}
    strip = [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("no number")]
    assert strip
    for ln in strip:
        assert ln.get_marker() == shape[to_hex(ln.get_color())]  # the series' shape, not a shared star or cross
        filled = to_hex(ln.get_markerfacecolor()) == to_hex(ln.get_color())
        assert filled == (ln.get_gid() == "no number: error")
    errors = {to_hex(ln.get_color()) for ln in strip if ln.get_gid() == "no number: error"}
    assert len({shape[c] for c in errors}) == len(errors)
    crosses = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "crash cross"]
    crashed = sum(len(ln.get_xdata()) for ln in strip if ln.get_gid() == "no number: crash")
    assert sum(len(ln.get_xdata()) for ln in crosses) == crashed


# D3: the tolerances between moved and wrong are printed beside the verdict tables, as the sweep applies them.


def test_d3_tolerances_printed():
    import torch

    from flexfix.edition.tables.invariance import tolerance_line
    from flexfix.mechanism.kernel_repro import tolerance

    line = tolerance_line()
    assert f"past {tolerance(torch.bfloat16):g} for bf16" in line and f"{tolerance(torch.float32):g} for fp32" in line
    assert _code("04_batch_invariance").count("print(tables.invariance.tolerance_line())") == 2


# D5: what flexfix's patch contains, both parts named.


def test_d5_patch_parts_named():
    from flexfix.integration import vllm_patch

    md = _markdown("04_batch_invariance")
    assert "the sliced copy of notebook 03" in md and "declared to support batch invariance" in md
    assert "supports_batch_invariance" in vllm_patch.__doc__ and "copy_to_persistent" in vllm_patch.__doc__


# D7, D10, D11 (05): graph modes defined where the engine section starts; the two ratios' directions keyed; the
# band's formula, as timing_ratios computes it.


def test_d7_d10_d11_definitions():
    md = _markdown("05_cost")
    engine = md.split("## Engine level: output tokens per second")[1]
    assert engine.index("**piecewise** graphs capture") < engine.index("Piecewise graphs leave attention eager")
    assert "**Key: two ratios point opposite ways.**" in md
    assert "from (first quartile of `a`) / (third quartile of `b`) to (third quartile of `a`) / (first quartile" in md
    timing, _ = _timing()
    bands = tables.timing_ratios(timing, spread=True).iloc[0]
    warm = timing[(timing["batch"] == bands["batch"]) & (timing["context"] == bands["context"])]
    warm = warm[warm.get("l2", "warm") == "warm"] if "l2" in warm else warm
    a, b = (warm[warm["impl"] == i].iloc[0] for i in ("flex batch_invariant graph", "flex vllm graph"))
    assert abs(bands["bi_overhead_lo"] - a["q25_ms"] / b["q75_ms"]) < 1e-9
    assert abs(bands["bi_overhead_hi"] - a["q75_ms"] / b["q25_ms"]) < 1e-9


# D12 (03): the text's flat offsets located in the figure's buffer rows and columns, as the layout draws them.


def test_d12_flat_offsets_located_in_the_figure():
    from flexfix.edition.narrative.layouts import flat_cells
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent_as_strided

    w, k = 64, 48
    lay = layouts.stride_layout(copy_to_persistent_as_strided, "a", g=3, g_max=8, w_max=w, k_capture=16, k_replay=k)
    said = flat_cells({"K_REPLAY": k}, w)
    assert f"storage cell `K_REPLAY` = {k} is buffer row {k // w}, column {k % w}" in said
    assert lay.owner_replay[k // w][k % w] == 1 and lay.owner_replay[k // w][k % w - 1] == 0  # row 1 starts there
    assert 'story.flat_cells({"K_CAPTURE": K_CAPTURE, "K_REPLAY": K_REPLAY}, W_MAX)' in _code("03_stride_layouts")
