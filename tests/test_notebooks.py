"""Every notebook executes with CPU parameters (papermill, the venv's kernel), then its recorded
values are checked: assertions on numbers the notebook wrote, not on pictures."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from flexfix.edition import results
from flexfix.edition.run_notebooks import execute, run_all

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def load(folder, name):
    table, prov = results.read_results(folder / f"{name}-cpu.json")
    assert prov["device_kind"] == "cpu"
    return table


def test_notebook_list_is_the_series():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_reproduce_ima",
        "02_apply_flexfix",
        "03_stride_layouts",
        "04_batch_invariance",
        "05_cost",
        "06_serving",
        "07_replay_guard",
    ]


@pytest.mark.notebook
def test_01_frozen_launch_reproduces_and_the_slice_does_not(executed):
    runs = load(executed("01_reproduce_ima"), "ima_kernel")
    big, small = runs[runs.batch == 48], runs[runs.batch == 16]
    assert len(big) == 6 and len(small) == 6  # 2 copies x 3 seeds each
    assert set(big[big["copy"] == "as_strided"].status) <= {"index_error", "wrong_result"}
    assert (big[big["copy"] == "sliced"].status == "ok").all()
    assert (small.status == "ok").all()
    for records in runs[runs["copy"] == "sliced"].records:
        assert all(r["max_error"] < 1e-4 for r in records)


@pytest.mark.notebook
def test_02_patch_checks_all_hold(executed):
    checks = load(executed("02_apply_flexfix"), "patch_checks").set_index("check")["value"]
    assert not checks["before: copy keeps the destination's strides"]
    assert checks.drop(["before: copy keeps the destination's strides", "before: supports_batch_invariance()"]).all(), (
        checks
    )


@pytest.mark.notebook
def test_03_misread_fractions(executed):
    folder = executed("03_stride_layouts")
    equivalence = load(folder, "copy_equivalence")
    assert len(equivalence) == 200 and equivalence[["strides_equal", "storage_maps_equal", "values_equal"]].all().all()
    table = load(folder, "stride_layouts")
    buggy = table[table["copy"].str.contains("(as_strided)", regex=False)]  # e.g. vLLM 0.20.0's copy (as_strided)
    fixed = table[table["copy"].str.contains("(sliced)", regex=False)]
    assert len(buggy) and len(fixed) and len(buggy) + len(fixed) == len(table), sorted(set(table["copy"]))
    assert (buggy[buggy.row == 0].misread_fraction == 0).all()
    assert (buggy[buggy.row >= 1].misread_fraction > 0).all()
    assert (fixed.misread_fraction == 0).all() and (fixed.never_written == 0).all()
    shrink = buggy[buggy.K_replay < buggy.K_capture]
    assert shrink[shrink.row == shrink.row.max()].never_written.item() > 0


@pytest.mark.notebook
def test_04_cpu_sweep_invariance_as_measured(executed):
    table = load(executed("04_batch_invariance"), "kernel_invariance")
    assert len(table) == 6 * 14 * 3  # every configuration x batch size x position, crashes included
    by = dict(tuple(table.groupby("config")))
    for name, cells in by.items():
        if name.startswith("analog, page-by-page") and name != "analog, page-by-page softmax, frozen, as_strided":
            assert (cells.outcome == "ok").all() and cells.bitwise_equal.all(), name
    for name in ("flex, pytorch options, eager, sliced", "analog, row softmax, eager, sliced"):
        cells = by[name]
        assert (cells.outcome == "ok").all() and not cells.bitwise_equal.all(), name
        assert cells[cells.batch == 1].bitwise_equal.all() and cells.max_abs_diff.max() < 1e-5, name
    broken = by["analog, page-by-page softmax, frozen, as_strided"]
    assert (broken[broken.batch <= 16].outcome == "ok").all()
    later = broken[broken.needle_query_block >= 1]
    assert len(later) == 12 and set(later.outcome) <= {"index_error", "wrong_result"}


@pytest.mark.notebook
def test_05_cpu_timing_table(executed):
    table = load(executed("05_cost"), "decode_timing")
    assert len(table) == 2 * 2 * 2 and set(table.impl) == {"sdpa dense", "flex pytorch eager"}
    assert (table.median_ms > 0).all() and (table.q25_ms <= table.q75_ms).all() and (table.reps == 5).all()
    assert ((table.fraction_of_copy_bw - table.kv_GBps / table.copy_GBps).abs() < 1e-9).all()


# Hygiene of the committed notebooks.


@pytest.mark.notebook
def test_07_the_guard_refuses_as_strided_and_lets_the_slice_replay(executed):
    steps = load(executed("07_replay_guard"), "guard_steps")
    stock, fixed = (steps[steps["copy"] == c].set_index("step") for c in ("as_strided", "sliced"))
    assert stock.loc["capture", "guard"] == fixed.loc["capture", "guard"] == "captured"
    # a step no wider than the capture's keeps its strides; every wider one is refused, naming kv_indices
    assert stock.loc["replay 1", "guard"] == "replayed" and stock.loc["replay 1", "kv_indices strides"][-2:] == [16, 1]
    assert list(stock.loc[["replay 2", "replay 3"], "guard"]) == ["refused", "refused"]
    assert all("block_mask.kv_indices: strides" in a for a in stock.loc[["replay 2", "replay 3"], "alarms"])
    assert set(fixed.guard) == {"captured", "replayed"} and set(fixed.alarms) == {"none"}
    assert len(set(stock.data_ptr)) == 1  # the pointer never moved: only the strides tell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "committed with outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    first, last = nb.cells[0], [c for c in nb.cells if c.cell_type == "markdown"][-1]
    assert first.cell_type == "markdown" and "What you will learn" in first.source
    assert "Takeaways" in last.source  # the last markdown cell; after it at most a generated takeaway (02's last)
    after = nb.cells[nb.cells.index(last) + 1 :]
    assert all("takeaway(" in c.source for c in after)


def nbstripout_hook() -> dict:
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = [r for r in config["repos"] if r["repo"].endswith("/nbstripout")]
    (hook,) = [h for h in repo["hooks"] if h["id"] == "nbstripout"]
    return {"rev": repo["rev"], "args": hook.get("args", [])}


def test_the_nbstripout_hook_leaves_the_committed_notebooks_as_they_are(tmp_path):
    """`pre-commit run --all-files` must not rewrite a source notebook: nbstripout with the hook's own arguments
    (its version pinned as the hook's) changes none of them, byte for byte."""
    from importlib import metadata

    hook = nbstripout_hook()
    assert hook["rev"] == metadata.version("nbstripout"), "the test extra pins the nbstripout the hook runs"
    copies = []
    for path in NOTEBOOKS:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    done = subprocess.run(
        [sys.executable, "-m", "nbstripout", *hook["args"], *map(str, copies)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    changed = [path.name for path, copy in zip(NOTEBOOKS, copies) if copy.read_bytes() != path.read_bytes()]
    assert changed == [], f"nbstripout (the pre-commit hook) would rewrite {changed}"


# The runner behind `make notebooks`.


def tiny_notebook(path, code):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('DEVICE = "auto"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_cell_progress_is_one_short_line_per_code_cell():
    """`flexfix notebooks` shows where each notebook is, as papermill's progress does, without a bar: one line per
    executed code cell (empty cells are not executed, markdown is not counted)."""
    import io

    from flexfix.edition.run_notebooks import CellProgress

    stream = io.StringIO()
    progress = CellProgress("01_x", stream=stream)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("  "),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    progress.on_notebook_start(notebook=nb)
    progress.on_cell_execute(cell=nb.cells[1], cell_index=1)
    progress.on_cell_execute(cell=nb.cells[3], cell_index=3)
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["  01_x: cell 1 of 2", "  01_x: cell 2 of 2"]
    assert all(line.endswith(" s)") for line in lines) and "\r" not in stream.getvalue()


@pytest.mark.notebook
def test_executing_a_notebook_says_each_cell_on_stderr(tmp_path, capsys):
    nb = tiny_notebook(tmp_path / "a_progress.ipynb", "x = 1")
    execute(nb, tmp_path / "out", {"DEVICE": "cpu"})
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if line.startswith("  a_progress: cell ")]
    assert [line.split(" (")[0] for line in said] == [f"  a_progress: cell {i} of 3" for i in (1, 2, 3)], err
    assert not any("%|" in line or "it/s" in line for line in err), err  # no progress bar in CI logs


@pytest.mark.notebook
def test_one_failing_notebook_does_not_stop_the_others(tmp_path, capsys):
    bad = tiny_notebook(tmp_path / "a_bad.ipynb", "raise ValueError('planted failure')")
    good = tiny_notebook(tmp_path / "b_good.ipynb", "x = 1")
    runs = run_all([bad, good], tmp_path / "out", "cpu")
    assert [(r.notebook, r.ok) for r in runs] == [("a_bad.ipynb", False), ("b_good.ipynb", True)]
    assert "planted failure" in runs[0].error and "cell" in runs[0].error
    out = capsys.readouterr().out
    assert "a_bad.ipynb" in out and "FAILED" in out and (tmp_path / "out" / "b_good.ipynb").exists()


@pytest.mark.notebook
def test_bad_device_parameter_fails_in_the_first_cell(tmp_path):
    nb = ROOT / "notebooks" / "03_stride_layouts.ipynb"
    with pytest.raises(Exception) as err:
        execute(nb, tmp_path, {"DEVICE": "gpu", "RESULTS_DIR": str(tmp_path)})
    assert "DEVICE must be one of" in str(err.value)


@pytest.mark.notebook
def test_the_command_names_the_failure_and_exits_non_zero(tmp_path, capsys):
    """`make notebooks` is `flexfix notebooks`: its exit status and summary."""
    from flexfix.edition.run_notebooks import main

    bad = tiny_notebook(tmp_path / "a_bad.ipynb", "raise ValueError('planted failure')")
    good = tiny_notebook(tmp_path / "b_good.ipynb", "x = 1")
    times = tmp_path / "times"
    assert main(["--out", str(tmp_path / "out"), "--times", str(times), str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 notebooks ok in " in out and out.splitlines()[-2].endswith("; failed: a_bad.ipynb")
    table, prov = results.read_results(times / "notebook_times-cpu.json", columns=["notebook", "seconds", "ok"])
    assert table.notebook.tolist() == ["a_bad", "b_good"] and table.ok.tolist() == [False, True]
    assert (table.seconds > 0).all() and prov["parameters"]["total_seconds"] >= table.seconds.sum() - 1
    assert main(["--out", str(tmp_path / "out"), "--times", str(times), str(good)]) == 0


def test_the_gpu_parameters_are_declared_by_their_notebooks_with_the_same_types():
    from flexfix.edition.run_notebooks import PARAMETERS, notebook_parameters

    for device, per_notebook in PARAMETERS.items():
        for stem, overrides in per_notebook.items():
            declared = notebook_parameters(ROOT / "notebooks" / f"{stem}.ipynb")
            for name, value in overrides.items():
                assert name in declared, (device, stem, name)
                assert type(value) is type(declared[name]), (device, stem, name, value, declared[name])


@pytest.mark.notebook
def test_a_headless_run_writes_no_progress_bars_or_widget_warnings(tmp_path, monkeypatch):
    """An executed notebook is read as a lesson: `make notebooks` turns off tqdm's bars and its IProgress warning."""
    import json

    from flexfix.edition.run_notebooks import HEADLESS_ENV, main

    for name in HEADLESS_ENV:
        monkeypatch.delenv(name, raising=False)  # restored after the test, whatever main() set
    code = "import warnings\nfrom tqdm.auto import tqdm\nwarnings.warn('IProgress not found. Please update')\n"
    code += "total = sum(tqdm(range(3), desc='planted bar'))\nprint('total', total)"
    nb = tiny_notebook(tmp_path / "bars.ipynb", code)
    assert main(["--out", str(tmp_path / "out"), "--times", str(tmp_path / "times"), str(nb)]) == 0
    outputs = [
        o for c in json.loads((tmp_path / "out" / "bars.ipynb").read_text())["cells"] for o in c.get("outputs", [])
    ]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "total 3" in text and "planted bar" not in text and "IProgress" not in text
