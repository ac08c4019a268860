"""Teaching round 9b, notebooks 04-05 (r0305 D1, D4, D9, the second pass): the result first, conventions said once,
the "In short" paragraphs as short bullets with their conclusion first; each tied to the data it states."""

import nbformat
from test_teaching_round4_03_05 import DATA, NOTEBOOKS, _code, _markdown
from test_teaching_round7_03_05 import _speed

from flexfix.edition import schemas, tables
from flexfix.measure import record


def _recorded_kernel():
    return schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)[0]


def _lead_items(said: str) -> list[str]:
    """The lead's bullets: the lines after "In short:" up to the first blank line."""
    lead = said.split("In short:\n")[1].split("\n\n")[0]
    return lead.split("\n")


# D1: a result lead at the top of the kernel-level sweep, one bullet per outcome, generated from the cells.


def test_d1_the_kernel_lead_names_every_configuration_once_under_its_outcome():
    from flexfix.edition.narrative import invariance as story

    table = _recorded_kernel()
    said = str(story.kernel_lead(table, "the H100"))
    bullets = [line for line in said.split("\n") if line.startswith("* ")]
    n = table["config"].nunique()
    assert bullets[0].startswith("* **batch-invariant**: ")  # the good news first
    counted = sum(int(b.split("**: ")[1].split(" of ")[0]) for b in bullets)
    assert counted == n
    for config, cells in table.groupby("config"):
        head = story._kernel_headline(cells)
        prefix, launch, copy = config.rsplit(", ", 2)
        line = next(b for b in bullets if b.startswith(f"* **{head}**: "))
        assert f"`{prefix}`" in line and launch in line
    equal = table.groupby("config")["bitwise_equal"].apply(lambda s: bool(s.fillna(False).all()))
    assert bullets[0].startswith(f"* **batch-invariant**: {int(equal.sum())} of {n} configurations")
    # the recording crashed with the graph launch and the as_strided copy past one query block
    crash = next(b for b in bullets if "crashed" in b)
    assert "(graph, `as_strided` copy)" in crash


def test_d1_the_notebook_shows_the_lead_before_the_definitions_and_the_table():
    nb = nbformat.read(NOTEBOOKS / "04_batch_invariance.ipynb", as_version=4)
    sources = [c.source for c in nb.cells]
    at = next(i for i, s in enumerate(sources) if s.startswith("## The kernel-level sweep"))
    assert "story.kernel_lead(kernel" in sources[at + 1] and "kernel_verdicts" not in sources[at + 1]
    assert sources[at + 2].startswith("**The verdict tables**")  # the definitions, after the result
    assert "display(kernel_verdicts(kernel))" in sources[at + 3]
    figures = next(i for i, s in enumerate(sources) if "plots.max_diff_vs_batch(kernel" in s)
    assert "In the heatmap a cell's" in sources[figures + 1]  # the figures' conventions, under the figures
    assert "In the heatmap a cell's" not in sources[at + 2]


# D4: the distances and the headline words are said once in the notebook, not under every table.


def test_d4_conventions_are_said_once():
    from flexfix.edition.narrative import invariance as story

    table = _recorded_kernel()
    defined = str(story.kernel_sweep(table, "t", defined_under="the verdict tables' columns"))
    alone = str(story.kernel_sweep(table, "t"))
    assert "The word in parentheses after each headline" in alone  # a sweep said on its own keeps them
    assert "The word in parentheses after each headline" not in defined
    assert "Two distances per moved configuration" not in defined
    assert _code("04_batch_invariance").count("defined_under=distances") == 3
    md = " ".join(_markdown("04_batch_invariance").split())
    assert md.count("The word in parentheses after each headline") == 1
    for word in ("*crashed*", "*wrong*", "*no kernel built*", "*kernel errors*", "*varies with the batch*"):
        assert word in md  # every headline word the generated lines can use is defined in the notebook


# D9: the "In short" paragraphs of 05 are two or three short bullets, the conclusion first.


def test_d9_the_kernel_timing_lead_is_bullets_with_the_conclusion_first():
    from flexfix.edition.narrative import cost

    timing, _ = schemas.recorded(DATA, "decode_timing", schemas.DECODE_TIMING)
    ratios = tables.timing_ratios(timing)
    items = _lead_items(str(cost.kernel_timing(timing, ratios, "the H100")))
    assert 2 <= len(items) <= 3 and all(i.startswith("- **") for i in items)
    assert items[0].startswith("- **A CUDA-graph replay matters most where the kernel is short**")
    best = ratios.loc[ratios["graph_speedup"].idxmax()]
    assert f"the largest speed-up, {best['graph_speedup']:.1f}x" in items[0]
    bi = ratios["bi_overhead"]
    assert (bi <= 1.05).all()
    assert items[1].startswith("- **vLLM's batch-invariant kernel options were within 5% of its own in every case**")
    assert f"took {bi.min():.2f}–{bi.max():.2f}x the time of vLLM's options" in items[1]
    slow = ratios.assign(bi_overhead=bi.where(bi.index != bi.index[0], 1.091))
    items = _lead_items(str(cost.kernel_timing(timing, slow, "this run")))
    assert items[1].startswith(
        f"- **vLLM's batch-invariant kernel options were more than 5% slower than its own in 1 of {len(bi)} cases**"
    )


def test_d9_the_engine_leads_are_bullets_with_the_conclusion_first():
    from flexfix.edition.narrative import cost

    speed = _speed()
    spread, summary = tables.throughput_spread(speed), tables.ratio_summary(speed)
    items = _lead_items(str(cost.engine_noise(speed, spread, tables.throughput_runs(speed))))
    worst = spread[["between_engines", "within_engine"]].max()
    assert len(items) == 3 and items[0].startswith("- **A difference between configurations smaller than")
    assert f"up to {worst['between_engines']:.2f}x" in items[1] and f"up to {worst['within_engine']:.2f}x" in items[2]
    items = _lead_items(str(cost.engine_ratios(summary, spread)))
    assert 1 <= len(items) <= 3 and all(i.startswith("- **") for i in items)
    assert items[0] == "- **No direction held in every ratio across runs beyond the spread between engines.**"
    mixed = [(m, r) for (m, r), row in summary.iterrows() if 0 < row["below_1"] < row["ratios"]]
    assert all(f"{r} ({m}) median" in items[-1] for m, r in mixed) and "went both ways" in items[-1]
    held = str(cost.engine_ratios(summary))  # without the spread, a direction held in every ratio is supported
    assert _lead_items(held)[0].startswith("- **Supported by these runs**")
    assert all(len(i.split()) < 100 for i in _lead_items(held))
