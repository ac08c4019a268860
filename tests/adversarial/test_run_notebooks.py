"""`flexfix notebooks`: what would go wrong is refused before anything runs (exit 2, naming
it); what goes wrong while running is reported as it happened; no truncated notebook; Ctrl-C / SIGTERM
end the run in one line with the kernel gone.  Tiny notebooks (one parameters cell, a cell or two) run
with the venv's kernel in a few seconds each."""

import errno
import json
import re
import signal
from pathlib import Path

import nbformat
import pytest
from adversarial_helpers import interrupt, last_line, start, wait_for

from flexfix.edition import run_notebooks as rn

PROG = "flexfix notebooks"
PARAMS = 'DEVICE = "auto"\nRUN_ENGINE = True\nN = 3\nRATE = 0.5\nSEEDS = [0, 1]\nNAMES: list = ["a"]\nRESULTS_DIR = "r"'


def notebook(path: Path, *cells: str, params: str = PARAMS) -> Path:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def nb(tmp_path):
    return notebook(tmp_path / "src" / "a.ipynb", "x = N")


def refused(argv, capsys) -> list[str]:
    """Run the command, expect argparse's usage error (exit 2); the lines of its message."""
    with pytest.raises(SystemExit) as exit_:
        rn.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err
    lines = err.split(f"{PROG}: error: ", 1)[1].splitlines()
    return [ln.strip() for ln in lines]


def test_out_in_the_notebooks_folder_is_refused_and_the_source_kept(nb, capsys):
    before = nb.read_bytes()
    assert refused(["--out", str(nb.parent), str(nb)], capsys) == [
        f"--out {nb.parent} is (or holds) the folder of {nb}: its executed copy would overwrite the source "
        "notebook; choose another --out"
    ]
    assert nb.read_bytes() == before


def test_out_above_the_notebooks_folder_is_refused(nb, capsys):
    out = nb.parent.parent
    assert refused(["--out", str(out), str(nb)], capsys)[0].startswith(f"--out {out} is (or holds) the folder of")


def test_out_dot_from_the_notebooks_folder_is_refused(nb, capsys, monkeypatch):
    monkeypatch.chdir(nb.parent)
    assert refused(["--out", ".", "a.ipynb"], capsys)[0].startswith("--out . is (or holds) the folder of a.ipynb")


def test_the_repositorys_notebooks_cannot_be_run_into_their_own_folder(capsys):
    lines = refused(["--out", str(rn.NOTEBOOKS)], capsys)
    assert len(lines) == len(list(rn.NOTEBOOKS.glob("*.ipynb"))) and all("overwrite the source" in ln for ln in lines)


def test_two_notebooks_with_one_name_are_refused(tmp_path, capsys):
    one = notebook(tmp_path / "x" / "a.ipynb", "pass")
    two = notebook(tmp_path / "y" / "a.ipynb", "pass")
    out = tmp_path / "out"
    assert refused(["--out", str(out), str(one), str(two)], capsys) == [
        f"notebooks {one} and {two} would both be written to {out / 'a.ipynb'}: run them into separate --out folders"
    ]
    assert not out.exists() or not list(out.iterdir())


def test_a_notebook_listed_twice_is_refused(nb, tmp_path, capsys):
    assert refused(["--out", str(tmp_path / "out"), str(nb), str(nb)], capsys) == [f"notebook {nb} is listed twice"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.ipynb", "notebook {p!r} does not exist"),
        (lambda d: (d / "folder.ipynb").mkdir() or d / "folder.ipynb", "notebook {p!r} is not a file"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "notebook {p!r} is not an .ipynb file"),
        (
            lambda d: (d / "bad.ipynb").write_text("{not json") and d / "bad.ipynb",
            "notebook {p!r} cannot be read: Notebook does not appear to be JSON: '{{not json'",
        ),
    ],
    ids=["missing", "a folder", "not ipynb", "not json"],
)
def test_a_notebook_that_cannot_be_run_is_named(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert refused(["--out", str(tmp_path / "out"), str(path)], capsys) == [message.format(p=str(path))]


def test_a_parameters_cell_that_is_not_python_is_named(tmp_path, capsys):
    path = notebook(tmp_path / "b.ipynb", "pass", params="DEVICE = (")
    lines = refused(["--out", str(tmp_path / "out"), str(path)], capsys)
    assert lines == ["notebook b.ipynb: its parameters cell is not Python ('(' was never closed, line 1)"]


PARAM_ERRORS = [
    (
        ["-p", "SEDS=[0]"],
        "-p SEDS: no notebook being run has a parameter SEDS (known: a.ipynb: DEVICE, RUN_ENGINE, N, RATE, SEEDS, "
        "NAMES, RESULTS_DIR)",
    ),
    (
        ["-p", 'RUN_ENGINE="false"'],
        '-p RUN_ENGINE="false": a.ipynb has RUN_ENGINE = True (a bool), and the value given is a string',
    ),
    (["-p", "RUN_ENGINE=0"], "-p RUN_ENGINE=0: a.ipynb has RUN_ENGINE = True (a bool), and the value given is an int"),
    (["-p", "N=2.5"], "-p N=2.5: a.ipynb has N = 3 (an int), and the value given is a float"),
    (["-p", "N=true"], "-p N=true: a.ipynb has N = 3 (an int), and the value given is a bool"),
    (["-p", 'N="3"'], '-p N="3": a.ipynb has N = 3 (an int), and the value given is a string'),
    (["-p", "N=null"], "-p N=null: a.ipynb has N = 3 (an int), and the value given is a None"),
    (["-p", "RATE=true"], "-p RATE=true: a.ipynb has RATE = 0.5 (a float), and the value given is a bool"),
    (["-p", "SEEDS=3"], "-p SEEDS=3: a.ipynb has SEEDS = [0, 1] (a list of ints), and the value given is an int"),
    (
        ["-p", "SEEDS=[0, true]"],
        "-p SEEDS=[0, true]: a.ipynb has SEEDS = [0, 1] (a list of ints), and the value given is a list of bools "
        "and ints",
    ),
    (
        ["-p", 'SEEDS={"a": 1}'],
        '-p SEEDS={"a": 1}: a.ipynb has SEEDS = [0, 1] (a list of ints), and the value given is a dict',
    ),
    (["-p", "DEVICE=5"], "-p DEVICE=5: a.ipynb has DEVICE = 'auto' (a string), and the value given is an int"),
    (["-p", "N=three"], "--param N: 'three' is not JSON (strings need quotes: N='\"text\"')"),
    (["-p", "N"], "--param needs NAME=JSON, got 'N'"),
    (["-p", "1N=3"], "--param needs NAME=JSON, got '1N=3'"),
    (["-p", "N=1", "-p", "N=2"], "--param N is given twice"),
]


@pytest.mark.parametrize("argv, message", PARAM_ERRORS, ids=[" ".join(a) for a, _ in PARAM_ERRORS])
def test_bad_parameter_overrides_are_refused_by_name(nb, tmp_path, capsys, argv, message):
    assert refused([*argv, "--out", str(tmp_path / "out"), str(nb)], capsys) == [message]


def test_overrides_of_the_right_type_pass_the_checks(nb):
    declared = {nb: rn.notebook_parameters(nb)}
    good = {"RUN_ENGINE": False, "N": 7, "RATE": 2, "SEEDS": [4], "NAMES": ["b", "c"], "DEVICE": "cpu"}
    assert rn.check_overrides(declared, good) == []


def test_parameters_are_read_from_the_tagged_cell(tmp_path):
    path = notebook(
        tmp_path / "c.ipynb",
        "OTHER = 1",
        params='%matplotlib inline\nA: int = 4\nB = C = "x"\nD = 2 * 3\nE, F = 1, 2\nimport os',
    )
    found = rn.notebook_parameters(path)
    assert found == {"A": 4, "B": "x", "C": "x", "D": rn.UNKNOWN}
    assert rn.check_overrides({path: found}, {"D": "anything"}) == []  # an expression: not type-checked


def test_out_that_is_a_file_is_refused(nb, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert refused(["--out", str(out), str(nb)], capsys) == [f"--out {str(out)!r} is a file, not a folder"]


def test_out_below_a_file_is_refused(nb, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub"
    assert refused(["--out", str(out), str(nb)], capsys) == [
        f"--out {str(out)!r} is not a writable folder: Not a directory"
    ]


def test_results_below_a_file_is_refused(nb, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    res = tmp_path / "file" / "r"
    lines = refused(["--out", str(tmp_path / "out"), "--results", str(res), str(nb)], capsys)
    assert lines == [f"--results {str(res)!r} is not a writable folder: Not a directory"]


def test_results_for_notebooks_without_results_dir_is_refused(tmp_path, capsys):
    path = notebook(tmp_path / "d.ipynb", "pass", params='DEVICE = "auto"')
    lines = refused(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "r"), str(path)], capsys)
    assert lines == ["--results: none of the notebooks being run has a RESULTS_DIR parameter"]


def test_a_missing_kernel_is_refused_before_running(nb, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rn, "KERNEL", "no-such-kernel-flexfix")
    lines = refused(["--out", str(tmp_path / "out"), str(nb)], capsys)
    assert lines == ["the Jupyter kernel 'no-such-kernel-flexfix' is not installed (make install registers it)"]


def test_every_problem_is_listed_at_once(nb, tmp_path, capsys):
    lines = refused(
        ["--out", str(nb.parent), "-p", "SEDS=[0]", "-p", "N=1.5", str(tmp_path / "gone.ipynb"), str(nb)], capsys
    )
    assert [ln.split(":")[0] for ln in lines] == [
        f"notebook {str(tmp_path / 'gone.ipynb')!r} does not exist",
        f"--out {nb.parent} is (or holds) the folder of {nb}",
        "-p SEDS",
        "-p N=1.5",
    ]


def test_the_readme_example_passes_the_checks_for_the_repositorys_notebooks(tmp_path):
    notebooks = sorted(rn.NOTEBOOKS.glob("*.ipynb"))
    problems, declared = rn.check_plan(notebooks, tmp_path / "out", {"SEEDS": [0], "RUN_ENGINE": False}, None)
    assert problems == [] and {nb.name for nb, ps in declared.items() if "SEEDS" in ps} >= {"01_reproduce_ima.ipynb"}


def test_an_override_goes_only_to_the_notebooks_that_declare_it(tmp_path, monkeypatch):
    one = notebook(tmp_path / "s" / "a.ipynb", "pass")
    two = notebook(tmp_path / "s" / "b.ipynb", "pass", params='DEVICE = "auto"')
    seen = {}
    monkeypatch.setattr(rn, "execute", lambda nb, out, parameters, **kw: seen.setdefault(nb.name, parameters))
    problems, declared = rn.check_plan([one, two], tmp_path / "out", {"N": 9}, str(tmp_path / "r"))
    runs = rn.run_all([one, two], tmp_path / "out", "cpu", str(tmp_path / "r"), {"N": 9}, declared=declared)
    assert problems == [] and all(r.ok for r in runs)
    assert seen == {
        "a.ipynb": {"DEVICE": "cpu", "N": 9, "RESULTS_DIR": str((tmp_path / "r").resolve())},
        "b.ipynb": {"DEVICE": "cpu"},
    }


def test_failures_are_described_as_they_happened():
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    assert rn.describe_failure(DeadKernelError("Kernel died")) == "kernel died"
    timeout = CellTimeoutError("A cell timed out while it was being executed, after 5 seconds.")
    assert (
        rn.describe_failure(timeout)
        == "a cell timed out: A cell timed out while it was being executed, after 5 seconds."
    )
    assert rn.describe_failure(RuntimeError("boom\nmore")) == "RuntimeError: boom"
    assert rn.describe_failure(rn.WriteError(Path("/o/a.ipynb"), "Read-only file system")) == (
        "cannot write /o/a.ipynb: Read-only file system"
    )


# Real runs (papermill, the venv's kernel).


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.notebook
def test_a_dying_kernel_is_reported_as_such_and_the_others_run(tmp_path, capsys):
    dies = notebook(tmp_path / "s" / "a_dies.ipynb", "x = 1", "import os; os.kill(os.getpid(), 9)", "y = 2")
    fine = notebook(tmp_path / "s" / "b_fine.ipynb", "x = 1")
    fails = notebook(tmp_path / "s" / "c_fails.ipynb", "x = 1", "raise ValueError('planted failure')")
    out = tmp_path / "out"
    assert rn.main(["--out", str(out), "--times", str(tmp_path / "times"), str(dies), str(fine), str(fails)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("a_dies.ipynb") and lines[1].endswith(
        "FAILED: kernel died while running cell [4]: import os; os.kill(os.getpid(), 9)"
    )
    assert lines[2].startswith("b_fine.ipynb") and lines[2].endswith(" ok")
    assert lines[3].endswith("FAILED: cell [4]: ValueError: planted failure")  # [2]: papermill's injected cell
    assert re.fullmatch(r"1 of 3 notebooks ok in \d+ s; failed: a_dies.ipynb, c_fails.ipynb", lines[4]), lines[4]
    assert lines[5] == f"wall times in {tmp_path / 'times' / 'notebook_times-cpu.json'}"
    for name in ("a_dies.ipynb", "b_fine.ipynb", "c_fails.ipynb"):  # whole notebooks, the failures visible
        nbformat.validate(nbformat.read(out / name, as_version=4))
    assert temp_files(out) == []


@pytest.mark.notebook
def test_a_type_checked_override_reaches_the_notebook(tmp_path, capsys):
    path = notebook(tmp_path / "s" / "a.ipynb", "assert RUN_ENGINE is False and SEEDS == [7], (RUN_ENGINE, SEEDS)")
    argv = ["--out", str(tmp_path / "out"), "--times", str(tmp_path), "-p", "RUN_ENGINE=false", "-p", "SEEDS=[7]"]
    assert rn.main([*argv, str(path)]) == 0
    assert re.fullmatch(r"1 of 1 notebooks ok in \d+ s", capsys.readouterr().out.splitlines()[-2])


@pytest.mark.notebook
def test_an_output_that_cannot_be_written_is_named_and_the_others_run(tmp_path, capsys):
    blocked = notebook(tmp_path / "s" / "a.ipynb", "x = 1")
    fine = notebook(tmp_path / "s" / "b.ipynb", "x = 1")
    out = tmp_path / "out"
    (out / "a.ipynb").mkdir(parents=True)  # the output path is taken by a folder
    assert rn.main(["--out", str(out), "--times", str(tmp_path), str(blocked), str(fine)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith(f"FAILED: cannot write {out / 'a.ipynb'}: Is a directory")
    assert lines[2].endswith(" ok") and temp_files(out) == []


@pytest.mark.notebook
def test_a_full_disk_leaves_no_truncated_notebook(tmp_path, monkeypatch):
    """The disk fills while papermill writes: the previous executed copy stays whole, no temp file is left."""
    from papermill.iorw import LocalHandler

    path = notebook(tmp_path / "s" / "a.ipynb", "x = 1")
    out = tmp_path / "out"
    out.mkdir()
    previous = notebook(out / "a.ipynb", "previous = True")
    before = previous.read_bytes()

    def full(self, buf, path):
        with open(path, "w") as f:
            f.write(buf[: len(buf) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalHandler, "write", full)
    with pytest.raises(rn.WriteError) as err:
        rn.execute(path, out, {"DEVICE": "cpu"})
    assert rn.describe_failure(err.value) == f"cannot write {out / 'a.ipynb'}: No space left on device"
    assert previous.read_bytes() == before and temp_files(out) == []


def kernels_running(runtime: Path) -> list[int]:
    """Processes whose command line names a connection file in ``runtime`` (the kernels of one run: their
    connection files are temporary files, in TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if str(runtime) in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.notebook
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_ends_the_run_in_one_line_with_the_kernel_gone(tmp_path, signum, status):
    src = tmp_path / "s"
    fine = notebook(src / "a_fine.ipynb", "x = 1")
    slow = notebook(src / "b_slow.ipynb", "import time; time.sleep(300)")
    later = notebook(src / "c_later.ipynb", "x = 1")
    out, runtime = tmp_path / "out", tmp_path / "runtime"
    runtime.mkdir()
    previous = notebook(out / "b_slow.ipynb", "previous = True")
    before = previous.read_bytes()
    proc = start(
        "from flexfix.measure import children; from flexfix.edition import run_notebooks as rn; "
        f"children.run_main(rn.main, {PROG!r})",
        ["--out", str(out), str(fine), str(slow), str(later)],
        {"JUPYTER_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)},
    )
    wait_for(
        lambda: (out / "a_fine.ipynb").exists() and kernels_running(runtime), 30, what="the slow notebook's kernel"
    )
    wait_for(lambda: len(temp_files(out)) == 1, what="the slow notebook's temp file")
    seconds, stdout, err = interrupt(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == status and seconds < 10, (seconds, err)
    assert (
        last_line(err)
        == f"{PROG}: interrupted by {name} while executing b_slow.ipynb; finished before it: a_fine.ipynb ok"
    )
    assert "Traceback" not in err and "c_later" not in stdout
    wait_for(lambda: kernels_running(runtime) == [], timeout=5, what="the kernel to be gone")
    assert previous.read_bytes() == before and temp_files(out) == [] and not (out / "c_later.ipynb").exists()
    assert json.loads((out / "a_fine.ipynb").read_text())["cells"]


def test_a_times_folder_that_is_a_file_is_refused_before_running(nb, tmp_path, capsys):
    blocker = tmp_path / "times"
    blocker.write_text("not a folder")
    lines = refused(["--out", str(tmp_path / "out"), "--times", str(blocker), str(nb)], capsys)
    assert lines == [f"--times {str(blocker)!r} is a file, not a folder"]
    assert blocker.read_text() == "not a folder" and not list((tmp_path / "out").glob("*.ipynb"))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "[0, NaN]"])
def test_a_parameter_that_is_not_a_finite_number_is_refused(nb, tmp_path, capsys, value):
    """Python's json reads NaN and Infinity: a -p value holding one is refused by name."""
    lines = refused(["--out", str(tmp_path / "out"), "-p", f"RATE={value}", str(nb)], capsys)
    assert lines[0].startswith(f"--param RATE: {value!r} holds ") and lines[0].endswith("which is not a finite number")
