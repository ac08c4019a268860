"""Round 21 (report 9b, a reading of the published GPU edition), notebooks 03-05: each fix tied to the source that
generates the sentence or the figure, and each figure fix checked on its drawn artists."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from test_teaching_round4_03_05 import _code, _markdown  # noqa: E402

from flexfix.edition import plots, schemas, tables  # noqa: E402
from flexfix.measure import engine_sweep, record  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"


def _flat(text: str) -> str:
    return " ".join(text.split())


# A1 (04): "its stand-in (notebook 01's torch-only section runs it too)" held for a CPU edition only: on a GPU, 01's
# torch-only section runs a CUDA graph. The sentence now says where it holds.


def test_a1_the_stand_in_in_notebook_01_is_said_of_a_cpu_run():
    md = _flat(_markdown("04_batch_invariance"))
    assert "its stand-in (notebook 01's torch-only section runs it too)" not in md
    assert "its stand-in (on a CPU run, notebook 01's torch-only section runs it too)" in md


# A2 (04, 05; 03 too): the 16 x 16 tile was said as a property of the runs, which record only the requested kernel
# options (notebook 01's glossary: the launch tile is not recorded); a query block was "what the kernel handles
# together". Both now say what was requested.


def test_a2_tiles_are_said_as_requested_not_as_launched():
    for stem in ("03_stride_layouts", "04_batch_invariance", "05_cost"):
        md = _flat(_markdown(stem))
        assert "the kernel handles together" not in md and "the kernel handles together" not in md.replace("\n", " ")
        assert "kernel that handles together" not in md
        for said in ("flex with 16 x 16 tiles", "fixed 16 x 16 tiles", "both use 16 x 16 tiles", "with 16 x 16 tiles"):
            assert said not in md, (stem, said)
    four, five = _flat(_markdown("04_batch_invariance")), _flat(_markdown("05_cost"))
    assert "flex with requested 16 x 16 tiles was bitwise invariant" in four
    assert "Flex attention with requested 16 x 16 tiles" in four
    assert "The kernel options *request* the kernel's tiles" in four and "these runs do not record" in four
    assert "both request 16 x 16 tiles (the launch tile these runs do not record" in five
    assert "if it launches the requested 16-row tiles: these runs do not record it" in five
    assert "not the kernel's launch tile" in _flat(_markdown("03_stride_layouts"))


# B1 (04): the printed kernel options, bf16, the Llama configs, prompt lengths and "every engine in its own process"
# are this code's settings, which the recordings do not keep. A line computed from the recording now says what it
# keeps, and the text says the rest is this code's.


def _kernel_recordings():
    return schemas.recorded(DATA, record.RECORDED_KERNEL_INVARIANCE, schemas.KERNEL_CELLS)


def test_b1_the_kernel_settings_line_says_what_the_recording_keeps():
    from flexfix.edition.narrative.kept_settings import kernel_settings

    table, provs = _kernel_recordings()
    said = kernel_settings(table, provs)
    assert "each cell's option set by name (`pytorch`, `vllm` and `batch_invariant`)" in said
    assert "`needle_len`" in said and "`capture_len`" in said
    assert "no record holds the option sets' values (`BLOCK_M`, `BLOCK_N`, ...) or the dtype" in said
    assert "this code's settings" in said and "not something its records show" in said
    # a recording that kept both would be said to keep them, and nothing called this code's alone
    kept = [{**p, "parameters": {**p["parameters"], "kernel_options": {}, "dtype": "bf16"}} for p in provs]
    said = kernel_settings(table, kept)
    assert "it also holds `kernel_options` and `dtype`" in said and "no record holds" not in said


def test_b1_notebook_04_says_the_settings_are_this_codes():
    md, code = _flat(_markdown("04_batch_invariance")), _code("04_batch_invariance")
    assert "display(kept_settings.kernel_settings(gpu_kernel, provs))" in code
    assert "as vLLM 0.20.0 sets them" not in code and "as this code sets them" in code
    assert "printed above with the recording" not in md and "the recording keeps only each option set's name" in md
    assert "`flex_attention` compiled, in bf16." not in md and "in bf16, as this code runs it" in md
    assert "this code's configs and prompt lengths, printed below: the recordings keep each model's name only" in md
    assert "this code starts every engine in its own process, which the recordings do not keep" in md
    assert "this code's config; the recordings keep the name only" in code


# B2 (05): the options cell claimed to print what the H100 recording compiled with; the workload line mixed records
# and settings; "each engine in its own child process" was not among the settings the records do not keep.


def _speed():
    names = record.RECORDED_THROUGHPUT_TABLES + record.RECORDED_SWEEP_TABLES
    engines = schemas.recorded(DATA, names, schemas.ENGINE_SWEEPS)[0]
    speed = engine_sweep.throughput_rows(engines)
    return engines, speed.assign(setting=[tables.engine_label(r) for _, r in speed.iterrows()])


def test_b2_the_workload_and_setup_lines_part_records_from_settings():
    from flexfix.edition.narrative.cost_runs import engine_workload  # round 22: moved from cost_devices
    from flexfix.edition.narrative.cost_setup import engine_setup

    engines, speed = _speed()
    said = engine_workload(speed)
    records, code = said.split("This code's settings")
    assert "from these records" in records and "concurrent requests" in records and "output tokens each" in records
    assert "greedy" not in records and "prompts" not in records and "child process" not in records
    # round 22 A2: greedy is the timed requests' sampling; round 22 D15: the child process is said once, below
    assert "which the records do not keep: the timed requests sampled greedily" in code
    assert "random token ids (seeded)" in code
    assert "starts each engine in its own child process, which no record keeps either" in engine_setup(engines).data


def test_b2_notebook_05_says_the_options_are_this_codes():
    md, code = _flat(_markdown("05_cost")), _code("05_cost")
    assert "the kernel options each flex variant above was compiled with" not in code
    assert "this code's kernel options of each flex variant (the recording keeps none)" in code
    assert "as this code sets them, both request 16 x 16 tiles" in md
    assert "nor does the H100 recording keep its options" in md
    assert "so is starting each engine in its own child process" not in md  # round 22 D15: the setup line says it


# C1 (04): the engine heatmap's N = 1 column (the needle alone again, a run-to-run control) was drawn as one more
# batch size. It is now boxed, its tick says it is the control, and the legend names the box.


def test_c1_the_control_column_is_boxed_and_named():
    from flexfix.edition.plots.invariance_marks import CONTROL_GID

    engines = schemas.recorded(DATA, record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)[0]
    grid, notes = tables.engine_grid(engine_sweep.invariance_rows(engines))
    fig = plots.category_heatmap(grid, "t", notes, control=1, what="the needle alone again")
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if p.get_gid() == CONTROL_GID]
    assert len(boxes) == 1
    j = list(grid.columns).index(1)
    box = boxes[0]
    assert (box.get_x(), box.get_width(), box.get_height()) == (j - 0.5, 1, grid.shape[0])
    assert box.get_linestyle() == "--" and box.get_linewidth() >= 2 and not box.get_fill()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[j] == "1\n(control)" and all("control" not in t for k, t in enumerate(ticks) if k != j)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(
        "the needle alone again" in t and "run-to-run control" in t and "not batch variance" in t for t in legend
    )
    plt.close(fig)
    # without a control (the kernel heatmaps), nothing is boxed
    fig = plots.category_heatmap(grid, "t", notes)
    assert not [p for p in fig.axes[0].patches if p.get_gid() == CONTROL_GID]
    plt.close(fig)
    code = _code("04_batch_invariance")
    assert 'plots.category_heatmap(grid, title, notes, control=1, what="the needle alone again")' in code
    assert "the figure's dashed column" in _markdown("04_batch_invariance")


# C2 (05): run 3's star was drawn hollow at 6 points, where it read as a filled blob, and under the bar's end ticks.


def test_c2_every_median_marker_is_hollow_large_and_over_the_ticks():
    _, speed = _speed()
    fig = plots.throughput_points(speed, "t")
    legend = fig.axes[-1].get_legend()
    assert "hollow marker: median" in legend.get_title().get_text()
    stars = 0
    for ax in fig.axes:
        ticks = [c for c in ax.collections if c.get_gid() == "spread tick"]
        assert ticks
        for line in ax.get_lines():
            if not line.get_label().startswith("run "):
                continue
            assert line.get_markerfacecolor() == "none", line.get_label()
            assert line.get_zorder() > max(c.get_zorder() for c in ticks)
            assert line.get_markersize() >= 8
            if line.get_marker() == "*":
                stars += 1
                assert line.get_markersize() / line.get_markeredgewidth() >= 9  # reads as hollow
    assert stars
    for handle in legend.legend_handles:
        assert handle.get_markerfacecolor() == "none"
    plt.close(fig)


# D11 (04): "With VLLM_BATCH_INVARIANT=0 the same model differs" followed "the tiny model's and the variance model's
# alike", yet every tiny BI=0 row is bitwise equal. The sentence names the variance model, which the table bears out.


def test_d11_the_model_that_differs_is_named():
    md = _flat(_markdown("04_batch_invariance"))
    assert "With `VLLM_BATCH_INVARIANT=0` the same model differs" not in md
    assert "With `VLLM_BATCH_INVARIANT=0` the variance model differs" in md
    engines = schemas.recorded(DATA, record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)[0]
    verdicts = tables.engine_verdicts(engine_sweep.invariance_rows(engines)).reset_index()
    text = verdicts.astype(str).agg(" ".join, axis=1)
    bi0 = verdicts[text.str.contains("BI=0")]
    bi0_text = text[bi0.index]
    assert bi0[bi0_text.str.contains("tiny")]["invariant"].astype(bool).all()
    assert not bi0[bi0_text.str.contains("variance")]["invariant"].astype(bool).all()


# D7 (04): the headline key's "the replay guard" was never introduced in 04; it is now pointed to notebook 07.


def test_d7_the_replay_guard_is_pointed_to():
    import pandas as pd

    from flexfix.edition.narrative.misread import headline_words

    said = headline_words(pd.DataFrame({"outcome": ["ok", "refused"], "bitwise_equal": [True, None]}))
    assert "the replay guard or vLLM refused" not in said
    assert "flexfix's replay guard (notebook 07: a check run before a replay)" in said
