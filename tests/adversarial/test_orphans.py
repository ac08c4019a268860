"""Children die with their parent, however it dies: SIGKILL (no ``finally`` runs), SIGHUP (the terminal closed),
Ctrl-C or SIGTERM of ``flexfix notebooks`` while a notebook's sweep has children.  No child, grandchild or
``flexfix-child-*`` folder is left; a save that an interrupt lands in is finished first; every timeout is a
finite number of seconds.

The children are the suite's fakes (``adversarial_helpers.FAKE_CHILD``: they mark their pids and hang); the
parents are real processes."""

import json
import os
import signal
import textwrap
import threading
import time

import nbformat
import pytest
from adversarial_helpers import (
    child_folders,
    fake_argv,
    interrupt,
    kill_marked,
    last_line,
    marked,
    nothing_left,
    records_in,
    start,
    wait_for,
)
from test_interrupts import HELPERS, start_kernel_record

from flexfix.edition import results
from flexfix.measure import children, outcomes, watchdog
from flexfix.measure.record import cli as record_cli
from flexfix.measure.record import kernel as record_kernel


@pytest.fixture
def env(tmp_path):
    dirs = {name: tmp_path / name for name in ("pids", "tmp", "out")}
    for d in dirs.values():
        d.mkdir()
    yield dirs
    kill_marked(dirs["pids"])


def killed(proc, signum=signal.SIGKILL) -> None:
    proc.send_signal(signum)
    proc.communicate(timeout=20)


@pytest.mark.parametrize("grandchild", [False, True], ids=["child", "child and grandchild"])
def test_sigkill_of_record_leaves_no_child_and_no_folder(env, grandchild):
    """SIGKILL: no handler, no finally; the kernel kills the child (PR_SET_PDEATHSIG), the watchdog its group and
    its temporary folder."""
    proc = start_kernel_record(env, fast=1, grandchild=grandchild)
    wait_for(lambda: len(marked(env["pids"])) == (4 if grandchild else 2), what="a hanging second run")
    wait_for(lambda: child_folders(env["tmp"]) != [], what="the child's folder")
    killed(proc)
    assert nothing_left(env["pids"]) == []
    wait_for(lambda: child_folders(env["tmp"]) == [], timeout=5, what="the folder to be removed")


def test_sighup_of_record_is_an_interrupt_in_one_line(env):
    """A closed terminal: exit 129, one line, the finished run kept, nothing left."""
    partial = env["out"] / "ima_kernel-cpu.partial.json"
    proc = start_kernel_record(env, fast=2, grandchild=True)
    wait_for(lambda: records_in(partial) == 2 and len(marked(env["pids"])) == 6, what="a hanging third run")
    seconds, _, err = interrupt(proc, signal.SIGHUP)
    assert proc.returncode == 129 and seconds < 5, err
    assert last_line(err) == f"flexfix record kernel: interrupted by SIGHUP; the 2 finished runs are kept in {partial}"
    assert "Traceback" not in err
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_a_library_caller_killed_leaves_no_child(env):
    """A notebook kernel (here: a plain process running run_child) killed with SIGKILL."""
    code = "import json, sys; from flexfix.measure import outcomes; outcomes.run_child(json.loads(sys.argv[1]))"
    proc = start(code, [json.dumps(fake_argv(env["pids"], grandchild=True, delay=300))], {"TMPDIR": str(env["tmp"])})
    wait_for(lambda: len(marked(env["pids"])) == 2, what="the child and its grandchild")
    killed(proc)
    assert nothing_left(env["pids"]) == []
    wait_for(lambda: child_folders(env["tmp"]) == [], timeout=5, what="the folder to be removed")


def test_the_watchdog_forgets_what_ended_normally(env):
    """A group that ended is forgotten: the watchdog never kills a later process that took its number."""
    out = outcomes.run_child(fake_argv(env["pids"]))
    assert out.status == "ok" and watchdog.watchdog_pid() is not None
    assert children.live_groups() == []


# flexfix notebooks: the kernel killed at once, and with it (its watchdog) the sweep's children.

SWEEP_CELL = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {helpers!r})
    from adversarial_helpers import fake_argv
    from flexfix.measure import outcomes
    outcomes.run_child(fake_argv({pids!r}, grandchild=True, delay=300), timeout=600)
    """
)


def sweep_notebook(path, pids):
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell('DEVICE = "auto"')
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, nbformat.v4.new_code_cell(SWEEP_CELL.format(helpers=HELPERS, pids=str(pids)))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
@pytest.mark.parametrize(
    "signum, status",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGKILL, -9)],
    ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"],
)
def test_notebooks_interrupted_while_a_sweep_runs_leave_no_child_and_no_folder(env, tmp_path, signum, status):
    nb = sweep_notebook(tmp_path / "s" / "sweep.ipynb", env["pids"])
    proc = start(
        "from flexfix.measure import children; from flexfix.edition import run_notebooks as rn; "
        "children.run_main(rn.main, 'flexfix notebooks')",
        ["--out", str(tmp_path / "executed"), "--times", str(tmp_path / "times"), str(nb)],
        {"TMPDIR": str(env["tmp"]), "JUPYTER_RUNTIME_DIR": str(env["tmp"])},
    )
    wait_for(lambda: len(marked(env["pids"])) == 2, timeout=90, what="the sweep's child and grandchild")
    wait_for(lambda: child_folders(env["tmp"]) != [], what="the child's folder")
    seconds, _, err = interrupt(proc, signum)
    assert proc.returncode == status and seconds < 10, err
    if signum != signal.SIGKILL:
        name = signal.Signals(signum).name
        assert last_line(err).startswith(f"flexfix notebooks: interrupted by {name} while executing sweep.ipynb")
        assert "Traceback" not in err
    assert nothing_left(env["pids"]) == []
    wait_for(lambda: child_folders(env["tmp"]) == [], timeout=5, what="the child's folder to be removed")


# A save that an interrupt lands in is finished, and counted, before the interrupt takes effect.


def test_ctrl_c_while_a_finished_run_is_saved_keeps_it(tmp_path, monkeypatch, capsys):
    """Seen once in `record invariance`: 42 of 84 finished cells lost, "no runs had finished"."""
    out = tmp_path / "out"
    monkeypatch.setattr(
        record_kernel,
        "run_kernel_in_child",
        lambda copy, device, batch, seed, **kw: outcomes.Outcome("ok", records=[{"step": "capture"}]),
    )
    write = results.write_results

    def interrupted_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the partial file is written
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(results, "write_results", interrupted_while_writing)
    code = record_cli.main(["kernel", "--device", "cpu", "--seeds", "3", "--batches", "16", "--out", str(out)])
    partial = out / "ima_kernel-cpu.partial.json"
    assert code == 130
    assert capsys.readouterr().err.strip() == (
        f"flexfix record kernel: interrupted by SIGINT; the 1 finished runs are kept in {partial}"
    )
    assert records_in(partial) == 1


def test_an_interrupt_while_a_pool_result_is_handled_lands_after_it():
    handled = []

    def on_result(i, result):
        if i == 0:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        handled.append(result)

    with pytest.raises(KeyboardInterrupt):
        children.run_pool([lambda ev: "a", lambda ev: "b"], 1, on_result)
    assert handled == ["a"]


# Timeouts that would never fire.


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1, True, "5"], ids=str)
def test_a_timeout_that_never_fires_is_refused_before_a_child_starts(env, value):
    with pytest.raises(ValueError, match=r"timeout must be a finite number of seconds > 0, got"):
        outcomes.run_child(fake_argv(env["pids"]), timeout=value)
    assert marked(env["pids"]) == []


def test_a_wait_without_end_is_refused():
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        children.wait(None, float("nan"))


def test_the_watchdog_runs_in_a_session_of_its_own():
    """A terminal's Ctrl-C or hang-up reaches the foreground process group, never the watchdog."""
    children.watch_folder("/nonexistent/flexfix-test")
    children.forget_folder("/nonexistent/flexfix-test")
    pid = watchdog.watchdog_pid()
    assert pid is not None and os.getsid(pid) == pid != os.getsid(0)


def test_a_child_started_from_a_thread_outlives_nothing(env):
    """PR_SET_PDEATHSIG follows the thread that started the child: a pool thread's child is ended by the pool."""
    done = []
    thread = threading.Thread(target=lambda: done.append(outcomes.run_child(fake_argv(env["pids"])).status))
    thread.start()
    thread.join(30)
    assert done == ["ok"] and nothing_left(env["pids"]) == []
