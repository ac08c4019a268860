"""Teaching round 14, notebooks 03-05 (newcomer reading of the CPU execution of the current sources, findings of
r0305): each fix tied to the data or the source that generates the sentence, table or figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from test_teaching_round4_03_05 import DATA, _code, _markdown, _speed  # noqa: E402
from test_teaching_round11_03_05 import _sweep  # noqa: E402

from flexfix.edition import plots, schemas, tables  # noqa: E402
from flexfix.edition.narrative import invariance as story  # noqa: E402
from flexfix.edition.narrative import misread  # noqa: E402
from flexfix.measure import record  # noqa: E402

_CELL = {"batch": 32, "position": "middle", "bitwise_equal": False, "max_abs_diff": 1.0, "max_ref_diff": 1.0}
_GRAPH = "flex, vllm options, graph, as_strided"


def _cells(outcome: str, config: str = _GRAPH) -> pd.DataFrame:
    return pd.DataFrame([_CELL | {"config": config, "outcome": outcome}])


def _section(stem: str, heading: str) -> str:
    md = _markdown(stem)
    return md[md.index(heading) :]


# A1 (04): the narrower-replay sentence does not call a CPU run a GPU sweep: it names both devices' launches.


def test_a1_narrower_replay_said_for_any_device():
    section = " ".join(_section("04_batch_invariance", "## Crash or wrong answer, sweep by sweep").split())
    assert "All the GPU sweeps here" not in section and "whatever a GPU sweep here got" not in section
    said = section.split("**What these sweeps cannot say.**")[1].split("##")[0]
    assert "every sweep here replays **narrower** than its capture" in said and "GPU sweep" not in said  # round 22


# D1 (04): the section leads with what the sweeps shown got, generated from their exposed cells; "both outcomes"
# only where they got both, otherwise the one they got, and notebook 01 for the other.


def test_d1_crash_or_wrong_leads_with_what_the_sweeps_got():
    cpu = _cells("index_error", "analog, page by page, frozen, as_strided")
    crash, wrong, equal = _cells("illegal_memory_access"), _cells("wrong_result"), _cells("ok")
    only_crash = str(story.crash_or_wrong({"this run (CPU)": cpu, "recorded (H100)": crash}))
    assert only_crash.startswith("**Every cell exposed to the misread crashed, in every sweep shown here**")
    assert "no sweep shown here answered silently wrong" in only_crash.split("\n\n")[0]
    assert "The same misread can also answer silently wrong: notebook 01" in only_crash
    assert "the crash of this run (CPU) is the CPU analog's index error" in only_crash
    assert "Both outcomes happen" not in only_crash
    only_wrong = str(story.crash_or_wrong({"a": wrong}))
    assert only_wrong.startswith("**Every cell exposed to the misread answered silently wrong")
    assert "no sweep shown here crashed" in only_wrong and "analog" not in only_wrong
    some = str(story.crash_or_wrong({"a": pd.concat([crash, equal.assign(batch=48)])}))
    assert some.startswith("**The misread crashed in some exposed cells of a**")
    both = str(story.crash_or_wrong({"a": crash, "b": wrong}))
    assert both.startswith("**Both outcomes happen in this edition's sweeps**")
    neither = str(story.crash_or_wrong({"a": equal}))
    assert neither.startswith("**No sweep shown here crashed or answered silently wrong**")
    # the recorded H100 sweep: the lead states what its exposed cells came to
    gpu_kernel, _ = schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)
    kinds = set(misread.misread_cells(gpu_kernel)["kind"])
    lead = str(story.crash_or_wrong({"recorded (H100)": gpu_kernel})).split("\n\n")[0]
    if kinds == {"crashed"}:
        assert lead.startswith("**Every cell exposed to the misread crashed")
    section = " ".join(_section("04_batch_invariance", "## Crash or wrong answer, sweep by sweep").split())
    assert "**Both outcomes happen, and these data do not predict which.**" not in section


# C1 (04): the legend names each series of a kernel error apart (the names hold commas themselves).


def test_c1_kernel_error_legend_separates_its_series():
    rows = []
    for config in ("flex, pytorch options, eager, sliced", "flex, pytorch options, eager, as_strided"):
        for batch in (1, 8, 32):
            error = batch == 32
            rows.append(
                {"config": config, "batch": batch, "position": "middle", "outcome": "error" if error else "ok"}
                | {"bitwise_equal": not error, "max_abs_diff": None if error else 0.0, "max_ref_diff": 0.0}
            )
    fig = plots.max_diff_vs_batch(pd.DataFrame(rows), "t")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    labels += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    plt.close(fig)
    error = [label for label in labels if label.startswith("kernel error (")]
    assert error, labels
    inside = error[0].split("kernel error (")[1].split("):")[0]
    assert inside.count("; ") == 1, inside  # two series, one separator between them


# D3 (04): why the page count is asked comes before the answer; the table starts at the fewest pages that moved and
# the sentence counts the cells it leaves out.


def test_d3_page_count_why_first_and_table_from_the_fewest_moved_pages():
    sweep = _sweep()
    cells = [("middle", 32, False), ("middle", 128, True), ("first", 1, True)]
    table = pd.DataFrame(
        [
            {"config": "analog, row softmax, eager, sliced", "batch": b, "position": p, "outcome": "ok"}
            | {"bitwise_equal": eq}
            for p, b, eq in cells
        ]
    )
    said = str(story.row_lengths(table, sweep))
    assert said.index("Why ask") < said.index("**Answer:** **no**")
    shown = story.row_length_table(table, sweep)
    lo = int(shown.loc[shown["moved"] > 0, misread.PAGES].min())
    assert (shown[misread.PAGES] >= lo).all()
    every = misread.row_length_cells(table, sweep)
    left = int((every["pages"] < lo).sum())
    assert left == len(every) - int(shown["moved"].sum() + shown["bitwise equal"].sum())
    if left:
        assert f"it leaves out the {left} cell" in said


# B1 / D5 (05): the flushed timing is a GPU run's; the CPU note sits right under the heading.


def test_b1_d5_flushed_timing_said_as_a_gpu_runs_and_cpu_note_first():
    md = " ".join(_markdown("05_cost").split())
    timed = md.split("## How the kernel is timed")[1].split("**The ratio columns**")[0]
    assert timed.strip().startswith("On a GPU (a CPU run says under its first output what it times instead)")
    assert "The run also times every implementation with the L2 flushed" not in timed
    assert "A GPU run also times every implementation with the L2 flushed" in timed
    assert "a CPU run has no L2 flush" in timed
    takeaways = md.split("## Takeaways")[1]
    assert "gives both numbers" not in takeaways
    assert "its *In short* line says what the factor came to then" in takeaways
    code = _code("05_cost")  # the flushed section is printed on a GPU run only
    assert code.index("if gpu:\n    display(tables.l2_effect_summary") < code.index("cost_l2.replay_flushed(")


# D4 (05): "program" defined where the bandwidth bullet uses it.


def test_d4_program_defined():
    md = " ".join(_markdown("05_cost").split())
    # round 22 D12: defined under *How the kernel is timed*, before the first timing table's sentence uses it
    assert "one program is one instance of the compiled Triton kernel, run as one thread block" in md


# D6 (05): the ratio tables' run columns name the files as the runs table does, with their `engine_` prefix.


def test_d6_run_columns_name_files_as_the_runs_table():
    speed = _speed()
    runs = tables.throughput_runs(speed)
    headers = " ".join(
        " ".join(tables.cost.with_run_files(table, runs).columns.get_level_values("run"))
        for table in tables.throughput_table(speed)
    )
    for source in runs["source"].unique():
        assert source.startswith("engine_") and f": {source}" in headers


# D7 (05): the answer first, directly under the engine section's heading.


def test_d7_engine_answer_directly_under_the_heading():
    import json

    from test_teaching_round4_03_05 import NOTEBOOKS

    cells = json.loads((NOTEBOOKS / "05_cost.ipynb").read_text())["cells"]
    at = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Engine level"))
    code = "".join(cells[at + 1]["source"])
    assert cells[at + 1]["cell_type"] == "code"
    answer = code.index("display(cost_answer.engine_answer(speed))")
    assert answer < code.index("display(runs)") and answer < code.index("provenance_line")
    assert "**The answer first**" in "".join(cells[at]["source"])
