"""Teaching round 6, notebooks 03-05 (newcomer reading of the edition at cd643ab, findings A/B/C/D): each fix tied to
the data or the source that generates the sentence, table or figure."""

import pandas as pd
from test_teaching_round4_03_05 import DATA, _code, _markdown, _recorded_timing, _speed

from flexfix.edition import tables


def _layouts(k_capture: int, k_replay: int):
    from flexfix.mechanism import layouts
    from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

    copies = [(copy_to_persistent_as_strided, "as_strided"), (copy_to_persistent, "sliced")]
    return [
        layouts.stride_layout(c, n, g=3, g_max=4, w_max=64, k_capture=k_capture, k_replay=k_replay) for c, n in copies
    ]


# C10, C11: "its own entry" has a colour of its own (not the white of "not written", not an outcome's), and the
# legend says an entry of the own row is one of the query block's pages, of any of its requests.


def test_c10_c11_the_own_entry_is_not_white_and_the_own_row_is_the_query_blocks():
    from matplotlib.colors import to_hex

    from flexfix.edition import plots
    from flexfix.edition.plots.layouts import READ_WINDOW_NOTES
    from flexfix.edition.plots.style import OUTCOME_COLOURS

    own = to_hex(plots.READ_WINDOW_COLOURS["its own entry"][1])
    assert own != "#ffffff" and own != to_hex(plots.STORAGE_OWNER_COLOURS["not written"][1])
    assert own not in {to_hex(h) for h in OUTCOME_COLOURS.values()}
    assert plots.READ_WINDOW_COLOURS["its own entry"][0] != "white"
    notes = READ_WINDOW_NOTES["another entry of its own row"]
    assert "query block's pages" in notes and "request's own pages" not in notes
    fig = plots.read_windows(_layouts(16, 48))
    fig.draw_without_rendering()
    sliced = fig.axes[2] if len(fig.axes) > 2 else fig.axes[1]
    drawn = sliced.get_images()[0].get_array()
    assert (drawn == 0).all()  # the sliced panel: every cell its own entry, drawn in that (non-white) colour


# A5: notebook 03 says what DEVICE does (labels its results) and that the layouts are computed on CPU tensors.


def test_a5_03_says_device_only_labels_its_results():
    code, md = _code("03_stride_layouts"), _markdown("03_stride_layouts")
    assert "CPU is used either way" not in code and "(layouts are computed on CPU tensors; strides" not in code
    assert "device path: {device}, which only labels the results files" in code
    assert "`DEVICE` only labels the results it writes" in md


# D13: "every row is full" is said only because the table shows it: cells_read equals K_replay for every block.


def test_d13_03_says_every_row_is_full_as_its_table_shows():
    from flexfix.mechanism import layouts

    table = layouts.layout_table(_layouts(16, 48) + _layouts(32, 16))
    assert (table["cells_read"] == table["K_replay"]).all()
    md = _markdown("03_stride_layouts")
    assert "built with every row full" in md  # round 8 B4: the example's construction, not a table's evidence


# A4, A6, D15, D16, B9, D18: notebook 04's wording.


def test_04_child_processes_later_steps_definitions_prompts_and_header():
    md, code = _markdown("04_batch_invariance"), _code("04_batch_invariance")
    assert "each in its own child process" not in md and "replaced by a new one only after a crash" in md  # A4
    assert "every later step is wider" not in md  # A6; r12 D1: the condition said in the vLLM point
    assert "every later step whose longest request is longer than one page" in " ".join(md.split())
    assert "`wrong` (a silently wrong result: a misread)" not in md and "ran with no misread" not in md  # D15
    assert "a misread is the cause we infer" in md
    assert "in more than its size" not in md and "Besides being smaller, the tiny model gets shorter prompts" in md
    assert "engine_sweep.PROMPT_LENGTHS[model]" in code and "prompt lengths, printed below" in md  # B9; r21 B1
    assert "DISTANCES" not in code and "defined_under=distances" in code  # D18


def test_d18_the_run_header_holds_parameters_only():
    from flexfix.edition import results

    header = results.run_header("cpu", {"DEVICE": "cpu", "distances": "the verdict tables' columns"})
    assert "DEVICE='cpu'" in header and "verdict tables" not in header


# D17: the row length of the cells that moved, against rows as long that did not, from the sweep's own steps.


def test_d17_row_lengths_compare_moved_cells_with_calm_ones():
    from flexfix.edition.narrative import invariance as story
    from flexfix.edition.narrative.misread import _row_length
    from flexfix.measure import invariance
    from flexfix.mechanism import paged

    sweep = invariance.SweepShape(
        paged.PagedShape(max_num_seqs=128, max_model_len=256, num_pages=2048), needle_len=120, capture_len=200
    )
    cells = [("middle", 32, False), ("middle", 128, True), ("first", 1, True)]
    table = pd.DataFrame(
        [
            {"config": "analog, row softmax, eager, sliced", "batch": b, "position": p, "outcome": "ok"}
            | {"bitwise_equal": eq}
            for p, b, eq in cells
        ]
    )
    moved, calm = _row_length(sweep, 32, "middle"), _row_length(sweep, 128, "middle")
    assert calm >= moved
    said = str(story.row_lengths(table, sweep))
    assert f"moved at {moved} to {moved} pages" in said and f"with {calm} to {calm} pages (at 128 requests)" in said
    assert "**no** for" in said  # r12 D4: the question answered first
    assert story.row_lengths(table.assign(bitwise_equal=True), sweep) == ""
    assert "story.row_lengths(analog, sweep)" in _code("04_batch_invariance")


# C12: the H100 line figure marks the panel whose line joins two recordings, as the heatmap does.


def test_c12_the_line_figure_names_both_recordings():
    from flexfix.edition import plots, schemas
    from flexfix.measure import record

    table, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    fig = plots.max_diff_vs_batch(table, "t")
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    joined = [t for t in titles if "two recordings in one line" in t]
    assert len(joined) == 1 and "batch_invariant options" in joined[0]
    assert "from kernel_invariance," in joined[0] and "kernel_invariance_part2" in joined[0].replace("\n", "")


# D14: plain prose for the sizes/GPU caveat.


def test_d14_the_size_caveat_is_a_sentence():
    from test_teaching_round5_03_05 import _exposed

    from flexfix.edition.narrative import invariance as story

    sweeps = {"this run (H200)": _exposed("wrong_result"), "recorded (H100)": _exposed("illegal_memory_access")}
    sizes = {"this run (H200)": {"needle_len": 120}, "recorded (H100)": {"needle_len": 300}}
    text = str(story.crash_or_wrong(sweeps, sizes))
    assert " Because recorded (H100) also ran with other sizes than this run (H200)" in text
    assert "GPU decided" not in text


# A1: the L2 sentence names its exception.


def test_a1_the_l2_sentence_names_its_exception():
    from flexfix.edition.narrative.cost import l2_effect

    effect = pd.DataFrame(
        {
            "impl": ["a", "b", "c", "d"],
            "batch": [1, 8, 16, 32],
            "context": [256] * 4,
            "flushed_over_warm": [1.147, 0.5, 0.6, 1.0],
        }
    )
    said = str(l2_effect(effect))
    assert "With 1 exception (the slowest: `a`, 1 request of 256 tokens, 1.15x slower)" in said
    assert "1 more than 5% slower" in said
    assert str(l2_effect(effect.assign(flushed_over_warm=[1.0, 0.5, 0.6, 1.0]))).count("exception") == 0


# A2, A3, B7: next to the published numbers, which directions match, from the data; the kernel ratio named as it is
# defined; the takeaway points at it.


def test_a2_a3_b7_the_directions_are_said_from_the_data():
    _, ratios, prov = _recorded_timing()
    from flexfix.edition.narrative.cost import direction, published

    summary = tables.ratio_summary(_speed())
    said = str(published(summary, ratios, tables.recorded_where(prov)))
    assert "replay over eager" not in said and "eager launch time over replay time" in said
    line = direction(summary, ratios)
    for model in ("tiny", "variance"):
        row = summary.loc[(model, "BI1/BI0")]
        assert 0 < row["below_1"] < row["ratios"]  # went both ways: the cost is not established
        assert f"{model} model: {int(row['ratios'] - row['below_1'])} of {int(row['ratios'])} above 1" in line
        assert (summary.loc[(model, "full/piecewise")]["below_1"]) == 0
    assert "not established here" in line and "the engine-level cost is unresolved" in line
    assert ((ratios["bi_overhead"] - 1).abs() <= 0.05).all() and "within 5% in every case" in line  # r0305 A4 (r7)
    md = _markdown("05_cost")
    assert "same direction, different everything else" not in md and "they cost\n  different things" not in md
    assert "the **Direction** line under *Next to the published numbers*" in md


# B8: the SM comparison is marked as an untested reason.


def test_b8_the_sm_comparison_is_a_hypothesis():
    gpu, ratios, _ = _recorded_timing()
    from flexfix.edition.narrative.cost import kernel_timing

    said = str(kernel_timing(gpu, ratios, "t", heads=32, sms=100))
    assert "which is where a rise from more programs in flight would slow" not in said
    assert "one possible reason the rise slowed there, which we did not test" in said


# D19, D20: the engine recordings' commits, and the ratio and spread tables' conventions before them.


def test_d19_d20_commits_and_table_conventions():
    from flexfix.edition import schemas
    from flexfix.edition.narrative.cost import engine_commits
    from flexfix.measure import record

    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    _, provs = schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)
    said = str(engine_commits(names, provs))
    commits = {str(p["git_commit"])[:10] for p in provs}
    assert f"{len(commits)} commits" in said and all(c in said for c in commits)
    assert "story.engine_commits(names, provs)" in _code("05_cost")
    md = _markdown("05_cost")
    assert "an empty cell (`NaN`) is a ratio that run could not give" in md
    assert "`lowest` and `highest` their median output tokens per second" in md and "`within_engine`" in md
    assert md.index("an empty cell (`NaN`)") < md.index("## Next to the published numbers")
