"""`flexfix notebooks --times`: the wall-times file of a whole run is never replaced by a run of fewer notebooks (its
times go next to it, and the last line says so); ``--times`` is probed with a real write before any notebook runs;
a write that still fails at the end is one line and exit 1, after every notebook's own line."""

import errno

import pytest

from flexfix.edition import notebook_times, results
from flexfix.edition import run_notebooks as rn

SIX = ["01_reproduce_ima", "02_apply_flexfix", "03_stride_layouts", "04_batch_invariance", "05_cost", "06_serving"]


@pytest.fixture
def nb(tmp_path):
    import nbformat

    path = tmp_path / "src" / "01_reproduce_ima.ipynb"
    path.parent.mkdir()
    book = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell('DEVICE = "auto"')
    first.metadata["tags"] = ["parameters"]
    book.cells = [first]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, path)
    return path


def a_run(monkeypatch, ok=True):
    """run_all without a kernel: each notebook 'runs' in a moment."""

    def run_all(notebooks, out_dir, device, results_dir=None, overrides=None, *, declared=None, runs=None):
        for path in notebooks:
            run = rn.Run(path.name, device, 1.5, ok)
            print(run.line())
            runs.append(run)
        return runs

    monkeypatch.setattr(rn, "run_all", run_all)


def six_notebook_file(folder):
    rows = [{"notebook": n, "seconds": 60.0, "ok": True} for n in SIX]
    return results.write_results(folder, "notebook_times", rows, "cpu", {"total_seconds": 360.0})


def test_a_run_of_one_notebook_keeps_the_six_notebook_file(tmp_path, nb, monkeypatch, capsys):
    times = tmp_path / "times"
    kept = six_notebook_file(times)
    before = kept.read_bytes()
    a_run(monkeypatch)
    assert rn.main(["--out", str(tmp_path / "out"), "--times", str(times), str(nb)]) == 0
    partial = times / "notebook_times-cpu.partial.json"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wall times in {partial} ({kept} holds 02_apply_flexfix, 03_stride_layouts, 04_batch_invariance, 05_cost, "
        "06_serving, which this run did not execute: kept as it was)"
    )
    assert kept.read_bytes() == before
    assert results.read_results(partial)[0].notebook.tolist() == ["01_reproduce_ima"]


def test_a_run_of_every_notebook_the_file_holds_replaces_it(tmp_path, monkeypatch):
    times = tmp_path / "times"
    path = results.write_results(times, "notebook_times", [{"notebook": "a", "seconds": 1, "ok": True}], "cpu")
    rows = [{"notebook": "a", "seconds": 2.0, "ok": True}, {"notebook": "b", "seconds": 3.0, "ok": True}]
    assert notebook_times.record_times(times, rows, "cpu", {}) == (path, "")
    assert results.read_results(path)[0].seconds.tolist() == [2.0, 3.0]


def test_a_times_file_that_is_a_folder_is_refused_before_running(tmp_path, nb, monkeypatch, capsys):
    times = tmp_path / "times"
    (times / "notebook_times-cpu.json").mkdir(parents=True)
    monkeypatch.setattr(rn, "run_all", lambda *a, **k: pytest.fail("a notebook ran"))
    with pytest.raises(SystemExit) as exit_:
        rn.main(["--out", str(tmp_path / "out"), "--times", str(times), str(nb)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"--times: {times / 'notebook_times-cpu.json'} is not a file" in err


def test_a_full_disk_is_found_before_running(tmp_path, nb, monkeypatch, capsys):
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(rn, "run_all", lambda *a, **k: pytest.fail("a notebook ran"))
    with pytest.raises(SystemExit) as exit_:
        rn.main(["--out", str(tmp_path / "out"), "--times", str(tmp_path / "times"), str(nb)])
    assert exit_.value.code == 2 and "--times" in capsys.readouterr().err


def test_a_write_failing_at_the_end_is_one_line_after_the_notebooks(tmp_path, nb, monkeypatch, capsys):
    a_run(monkeypatch)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "write_results", full)
    assert rn.main(["--out", str(tmp_path / "out"), "--times", str(tmp_path / "times"), str(nb)]) == 1
    captured = capsys.readouterr()
    assert "01_reproduce_ima.ipynb" in captured.out and "1 of 1 notebooks ok" in captured.out
    assert captured.err.strip() == (
        "flexfix notebooks: the wall times were not written: [Errno 28] No space left on device"
    )
