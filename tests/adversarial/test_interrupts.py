"""One Ctrl-C or SIGTERM stops a run within seconds, kills every child process group, keeps what finished,
removes the children's temporary folders, and exits 130 / 143 with one line; library calls (what a notebook
kernel runs) stop on KeyboardInterrupt and leave no child behind.

The children are fakes (``adversarial_helpers.FAKE_CHILD``) that mark their pids and hang where told; the
commands are real processes (``python -c`` wrappers that swap in the fake children and call the CLI's main)."""

import contextlib
import json
import os
import signal
import textwrap
import threading
import time

import pandas as pd
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

from flexfix.edition import results
from flexfix.measure import children, invariance, outcomes, record, repro
from flexfix.measure.record import engines as record_engines
from flexfix.mechanism import paged

PROG = "flexfix record"


@pytest.fixture
def env(tmp_path):
    """Folders of one run: pid marks, TMPDIR (to find leftover flexfix-child-* folders), results."""
    dirs = {name: tmp_path / name for name in ("pids", "tmp", "out")}
    for d in dirs.values():
        d.mkdir()
    yield dirs
    kill_marked(dirs["pids"])


# `record kernel` with fake children: the first `fast` runs take 0.1 s, the others hang (300 s).
KERNEL_WRAPPER = textwrap.dedent(
    """
    import itertools, json, os, sys
    from flexfix.measure import children, repro
    from flexfix.measure.record import cli as record_cli
    sys.path.insert(0, os.environ["HELPERS"])
    from adversarial_helpers import fake_argv
    count = itertools.count()
    fast = int(os.environ["FAKE_FAST"])
    def fake_args(copy, device, batch, seed, launch):
        i = next(count)
        return fake_argv(os.environ["FAKE_PIDS"], delay=0.1 if i < fast else 300,
                         grandchild=bool(os.environ.get("FAKE_GRANDCHILD")),
                         ignore_term=bool(os.environ.get("FAKE_IGNORE_TERM")),
                         records=[{"step": "capture", "run": i}])
    repro._kernel_args = fake_args
    children.run_main(lambda: record_cli.main(sys.argv[1:]), "flexfix record")
    """
)
HELPERS = os.path.dirname(os.path.abspath(__file__))


def start_kernel_record(env, fast, **flags):
    extra = {"FAKE_GRANDCHILD": "1"} if flags.get("grandchild") else {}
    extra.update({"FAKE_IGNORE_TERM": "1"} if flags.get("ignore_term") else {})
    return start(
        KERNEL_WRAPPER,
        ["kernel", "--device", "cpu", "--seeds", "6", "--batches", "16", "--out", str(env["out"])],
        {
            "HELPERS": HELPERS,
            "FAKE_PIDS": str(env["pids"]),
            "FAKE_FAST": str(fast),
            "TMPDIR": str(env["tmp"]),
            **extra,
        },
    )


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_record_kernel_stops_at_once_and_keeps_the_finished_runs(env, signum, status):
    """3 of 6 runs finished, the 4th hangs: the signal ends it all within seconds."""
    partial = env["out"] / "ima_kernel-cpu.partial.json"
    proc = start_kernel_record(env, fast=3, grandchild=True)
    wait_for(lambda: records_in(partial) == 3 and len(marked(env["pids"])) == 8, what="3 runs and a hanging 4th")
    seconds, out, err = interrupt(proc, signum)
    name = signal.Signals(signum).name
    assert proc.returncode == status and seconds < 5, (seconds, err)
    assert last_line(err) == f"{PROG} kernel: interrupted by {name}; the 3 finished runs are kept in {partial}"
    assert "Traceback" not in err
    table, _ = results.read_results(partial)
    assert [r[0]["run"] for r in table.records] == [0, 1, 2]
    assert not (env["out"] / "ima_kernel-cpu.json").exists()
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_a_child_that_ignores_sigterm_and_sigint_is_killed_too(env):
    partial = env["out"] / "ima_kernel-cpu.partial.json"
    proc = start_kernel_record(env, fast=1, ignore_term=True)
    wait_for(lambda: records_in(partial) == 1 and len(marked(env["pids"])) == 2, what="a hanging 2nd run")
    seconds, _, err = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 143 and seconds < 5
    assert last_line(err) == f"{PROG} kernel: interrupted by SIGTERM; the 1 finished runs are kept in {partial}"
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_the_complete_file_of_an_earlier_run_is_not_replaced_by_an_interrupted_one(env):
    earlier = results.write_results(env["out"], "ima_kernel", [{"seed": i, "earlier": True} for i in range(6)], "cpu")
    before = earlier.read_bytes()
    partial = env["out"] / "ima_kernel-cpu.partial.json"
    proc = start_kernel_record(env, fast=2)
    wait_for(lambda: records_in(partial) == 2 and len(marked(env["pids"])) == 3, what="a hanging 3rd run")
    _, _, err = interrupt(proc, signal.SIGINT)
    assert proc.returncode == 130 and earlier.read_bytes() == before
    assert last_line(err) == f"{PROG} kernel: interrupted by SIGINT; the 2 finished runs are kept in {partial}"


def test_three_quick_ctrl_c_still_end_in_one_line(env):
    partial = env["out"] / "ima_kernel-cpu.partial.json"
    proc = start_kernel_record(env, fast=1)
    wait_for(lambda: records_in(partial) == 1 and len(marked(env["pids"])) == 2, what="a hanging 2nd run")
    t0 = time.monotonic()
    for _ in range(2):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    seconds, _, err = interrupt(proc, signal.SIGINT)
    assert proc.returncode == 130 and time.monotonic() - t0 < 5
    assert "Traceback" not in err and "interrupted by SIGINT" in last_line(err)
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


# `record invariance` with fake children: the cells of the batch sizes in FAKE_SLOW hang.
SW = invariance.SweepShape()
CONFIGS = "analog_page:vllm:eager:sliced,analog_page:vllm:frozen:sliced"
INVARIANCE_WRAPPER = textwrap.dedent(
    """
    import json, os, sys
    from flexfix.measure import children, invariance
    from flexfix.measure.record import cli as record_cli
    sys.path.insert(0, os.environ["HELPERS"])
    from adversarial_helpers import fake_argv
    slow = {int(b) for b in os.environ["FAKE_SLOW"].split(",")}
    def fake_child_argv(cfg, sw, device, cells):
        rows = [{**invariance.cell_keys(cfg, sw, device, b, p), "outcome": "ok", "bitwise_equal": True,
                 "max_abs_diff": 0.0, "max_error_vs_reference": 0.0, "detail": ""} for b, p in cells]
        hang = next((i + 1 for i, (b, p) in enumerate(cells) if b in slow), None)
        if os.environ.get("FAKE_SLOW_CONFIG", "") not in cfg.name:
            hang = None
        return fake_argv(os.environ["FAKE_PIDS"], records=[{"ready": cfg.name}, *rows], hang_at=hang)
    invariance._child_argv = fake_child_argv
    children.run_main(lambda: record_cli.main(sys.argv[1:]), "flexfix record")
    """
)


# Three configurations, one unit (child) each in a parallel sweep; only the "frozen" one hangs.
PARALLEL_CONFIGS = "analog_page:vllm:eager:sliced,analog_page:vllm:frozen:sliced,analog_page:vllm:eager:as_strided"


def start_invariance_record(env, workers, slow, configs=CONFIGS, slow_config=""):
    return start(
        INVARIANCE_WRAPPER,
        [
            "invariance",
            "--device",
            "cpu",
            "--configs",
            configs,
            "--batches",
            "1,2,3,4",
            "--workers",
            str(workers),
            "--out",
            str(env["out"]),
        ],
        {
            "HELPERS": HELPERS,
            "FAKE_PIDS": str(env["pids"]),
            "FAKE_SLOW": slow,
            "FAKE_SLOW_CONFIG": slow_config,
            "TMPDIR": str(env["tmp"]),
        },
    )


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_parallel_invariance_sweep_stops_on_one_signal_and_starts_no_other_child(env, signum, status):
    """--workers 2, one unit (child) per configuration: A and B start, A finishes its 12 cells, C starts and finishes,
    B (frozen) hangs at batch 2.  One signal ends it all, keeping A's and C's cells."""
    partial = env["out"] / "kernel_invariance-cpu.partial.json"
    proc = start_invariance_record(env, 2, "2", PARALLEL_CONFIGS, slow_config="frozen")
    wait_for(lambda: records_in(partial) == 24 and len(marked(env["pids"])) == 3, what="A and C done, B hanging")
    time.sleep(0.3)
    started = len(marked(env["pids"]))
    seconds, _, err = interrupt(proc, signum)
    assert proc.returncode == status and seconds < 5, (seconds, err)
    name = signal.Signals(signum).name
    assert last_line(err) == f"{PROG} invariance: interrupted by {name}; the 24 finished cells are kept in {partial}"
    assert "Traceback" not in err
    assert len(marked(env["pids"])) == started  # nothing was started after the signal
    table, _ = results.read_results(partial, columns=invariance.KERNEL_COLUMNS)
    assert not table.config.str.contains("frozen").any() and len(table) == 24
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


@pytest.mark.parametrize("slow_config", ["", "frozen"], ids=["first hangs", "second hangs"])
def test_one_worker_sweep_stops_at_once_instead_of_running_the_rest(env, slow_config):
    """--workers 1: one unit (child) per configuration, hanging at batch 3: either the first configuration's
    (nothing has finished) or the second's (the first configuration's 12 cells have)."""
    partial = env["out"] / "kernel_invariance-cpu.partial.json"
    proc = start(
        INVARIANCE_WRAPPER,
        ["invariance", "--device", "cpu", "--configs", CONFIGS, "--batches", "1,2,3,4", "--out", str(env["out"])],
        {
            "HELPERS": HELPERS,
            "FAKE_PIDS": str(env["pids"]),
            "FAKE_SLOW": "3",
            "FAKE_SLOW_CONFIG": slow_config,
            "TMPDIR": str(env["tmp"]),
        },
    )
    children_started = 2 if slow_config else 1
    wait_for(lambda: len(marked(env["pids"])) == children_started, what="the hanging child")
    time.sleep(0.3)
    seconds, _, err = interrupt(proc, signal.SIGINT)
    assert proc.returncode == 130 and seconds < 5
    if slow_config:
        assert (
            last_line(err) == f"{PROG} invariance: interrupted by SIGINT; the 12 finished cells are kept in {partial}"
        )
        table, _ = results.read_results(partial)
        assert set(table.config) == {"analog, page-by-page softmax, eager, sliced"} and len(table) == 12
    else:
        assert last_line(err) == f"{PROG} invariance: interrupted by SIGINT; no cells had finished: nothing written"
        assert not partial.exists()
    assert len(marked(env["pids"])) == children_started
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_repro_command_line_interrupted_while_its_real_child_runs(env):
    """The real torch-only repro on CPU (no fakes): Ctrl-C while the child computes."""
    proc = start(
        "from flexfix.measure import children, repro; children.run_main(repro.main, 'flexfix repro')",
        ["--copy", "as_strided", "--device", "cpu", "--batch", "48"],
        {"TMPDIR": str(env["tmp"])},
    )
    wait_for(lambda: child_folders(env["tmp"]) != [], what="the child's folder")
    folder = env["tmp"] / child_folders(env["tmp"])[0]
    seconds, _, err = interrupt(proc, signal.SIGINT)
    assert proc.returncode == 130 and seconds < 5
    assert err.strip() == "flexfix repro: interrupted by SIGINT; the child was killed"
    assert not folder.exists()


# Library calls, as a notebook kernel runs them: KeyboardInterrupt in the main thread (ipykernel's
# interrupt is a SIGINT to the kernel process).


def test_an_interrupt_while_the_childs_folder_is_made_still_removes_it(monkeypatch, tmp_path):
    """Ctrl-C landing between mkdtemp and the watchdog's registration (deferred to the end of that block) used to be
    raised before the try whose finally removes the folder: the folder stayed behind (a flaky CI failure)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(outcomes.tempfile, "tempdir", None)  # tempfile reads TMPDIR afresh
    real = children.watch_folder

    def watch_then_ctrl_c(folder):
        real(folder)
        os.kill(os.getpid(), signal.SIGINT)  # deferred: raised as the block ends

    monkeypatch.setattr(children, "watch_folder", watch_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        outcomes.run_child(["-c", "pass"], timeout=30)
    assert list(tmp_path.glob("flexfix-child-*")) == []


@contextlib.contextmanager
def interrupt_main_when(predicate):
    """Inside the block, a SIGINT to this process (as ipykernel interrupts a cell) once ``predicate()``
    holds; never after the block, where it would stop the test session."""
    inside = threading.Event()
    inside.set()

    def watch():
        deadline = time.monotonic() + 60
        while inside.is_set() and not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        if inside.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        inside.clear()
        thread.join()


SMALL = invariance.SweepShape(
    paged.PagedShape(max_num_seqs=48, max_model_len=256, num_pages=1024), needle_len=120, capture_len=40
)


def fake_cells(pids, slow, only=""):
    """Fake children for kernel_sweep: every cell ok, hanging at the first cell of a batch in ``slow`` (in the
    configurations whose name contains ``only``)."""

    def child_argv(cfg, sw, device, cells):
        rows = [
            {
                **invariance.cell_keys(cfg, sw, device, b, p),
                "outcome": "ok",
                "bitwise_equal": True,
                "max_abs_diff": 0.0,
                "max_error_vs_reference": 0.0,
                "detail": "",
            }
            for b, p in cells
        ]
        hang = next((i + 1 for i, (b, _) in enumerate(cells) if b in slow), None) if only in cfg.name else None
        return fake_argv(pids, records=[{"ready": cfg.name}, *rows], hang_at=hang)

    return child_argv


@pytest.mark.parametrize("workers", [1, 3])
def test_kernel_sweep_in_a_notebook_stops_on_keyboard_interrupt(env, monkeypatch, workers):
    monkeypatch.setattr(invariance, "_child_argv", fake_cells(env["pids"], slow={17}))
    monkeypatch.setattr(outcomes.tempfile, "tempdir", str(env["tmp"]))
    saved = []
    configs = invariance.cpu_configs()[2:4]
    # One unit (child) per configuration, both hang at batch 17 after their batch-1 cells: none finishes.
    expect = 0
    t0 = time.monotonic()
    with (
        interrupt_main_when(lambda: len(marked(env["pids"])) >= (1 if workers == 1 else 2)),
        pytest.raises(KeyboardInterrupt),
    ):
        invariance.kernel_sweep(
            configs, SMALL, "cpu", batches=[1, 17], workers=workers, progress=False, save=saved.append
        )
    assert time.monotonic() - t0 < 10
    assert (len(saved[-1]) if saved else 0) == expect
    assert children.live_groups() == [] and nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_kernel_sweep_stops_other_units_when_one_fails(env, monkeypatch):
    """A unit that fails (here: its child finishes without measuring its cells) stops the sweep at once."""
    pids = env["pids"]

    def child_argv(cfg, sw, device, cells):
        if cells[0][0] == 1:
            return fake_argv(pids, records=[{"ready": cfg.name}])  # 'ok' with no cells: a bug in the child
        return fake_argv(pids, delay=300)

    monkeypatch.setattr(invariance, "_child_argv", child_argv)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="the child stopped after 0 cells without an error"):
        invariance.kernel_sweep(invariance.cpu_configs()[2:3], SMALL, "cpu", batches=[1, 17], workers=2, progress=False)
    assert time.monotonic() - t0 < 10 and nothing_left(pids) == []


def test_record_kernel_outcomes_in_a_notebook_stops_on_keyboard_interrupt(env, monkeypatch):
    calls = []

    def fake_args(copy, device, batch, seed, launch):
        calls.append(seed)
        return fake_argv(env["pids"], delay=0.05 if len(calls) <= 2 else 300, records=[{"step": "capture"}])

    monkeypatch.setattr(repro, "_kernel_args", fake_args)
    saved = []
    with interrupt_main_when(lambda: len(marked(env["pids"])) == 3), pytest.raises(KeyboardInterrupt):
        record.kernel_outcomes("cpu", [0, 1, 2, 3], [16], progress=lambda s: None, save=saved.append)
    assert len(saved[-1]) == 2 and calls == [0, 1, 2]
    assert children.live_groups() == [] and nothing_left(env["pids"]) == []


def test_record_engine_sweep_in_a_notebook_stops_on_keyboard_interrupt(env, monkeypatch, tmp_path):
    from flexfix.measure import engine_sweep as es

    started = []

    def fake_json_argv(prog, spec):
        started.append(spec["run"]["graphs"])
        return fake_argv(env["pids"], delay=0.05 if len(started) == 1 else 300, records=[{"kind": "startup"}])

    monkeypatch.setattr(es, "json_child_argv", fake_json_argv)
    monkeypatch.setattr(record_engines, "model_dir", lambda config: tmp_path / "model")
    saved = []
    runs = es.parse_runs("tiny:bi1:full,tiny:bi1:eager,tiny:bi0:eager")
    with interrupt_main_when(lambda: len(marked(env["pids"])) == 2), pytest.raises(KeyboardInterrupt):
        record.engine_sweep(runs, progress=lambda s: None, save=saved.append)
    assert started == ["full", "eager"] and len(saved) == 1 and saved[0].engine.tolist() == [runs[0].name]
    assert children.live_groups() == [] and nothing_left(env["pids"]) == []


def test_decode_sweep_in_a_notebook_stops_and_keeps_what_it_saved():
    from flexfix.measure import timing

    saved = []

    def save(table):
        saved.append(table)
        if len(saved) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the interrupt arrives while the first timing is saved

    with pytest.raises(KeyboardInterrupt):
        timing.decode_sweep([1, 2], [64, 128], "cpu", case=timing.DecodeCase(4, 2, 32), warmup=0, reps=1,
                            progress=False, save=save)  # fmt: skip
    assert len(saved) == 1 and set(saved[0].batch) == {1} and set(saved[0].context) == {64}


def test_run_child_interrupted_kills_the_group_and_removes_its_folder(env, monkeypatch):
    monkeypatch.setattr(outcomes.tempfile, "tempdir", str(env["tmp"]))
    t0 = time.monotonic()
    with interrupt_main_when(lambda: len(marked(env["pids"])) == 2), pytest.raises(KeyboardInterrupt):
        outcomes.run_child(fake_argv(env["pids"], grandchild=True, delay=300), timeout=600)
    assert time.monotonic() - t0 < 10
    assert len(marked(env["pids"])) == 2 and nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_run_child_timeout_kills_the_whole_group(env, monkeypatch):
    monkeypatch.setattr(outcomes.tempfile, "tempdir", str(env["tmp"]))
    out = outcomes.run_child(fake_argv(env["pids"], grandchild=True, delay=300), timeout=1.5)
    assert (out.status, out.signal) == ("timeout", "SIGKILL") and out.seconds < 10
    assert nothing_left(env["pids"]) == [] and child_folders(env["tmp"]) == []


def test_run_child_kills_what_a_finished_child_left_running(env):
    """A child that exits but leaves a grandchild in its group: the grandchild does not outlive the call."""
    out = outcomes.run_child(fake_argv(env["pids"], grandchild=True))
    assert out.status == "ok"
    assert nothing_left(env["pids"]) == []


def test_run_child_stopped_from_another_thread(env):
    stop = threading.Event()
    threading.Timer(0.5, lambda: children.stop(stop)).start()
    t0 = time.monotonic()
    with pytest.raises(children.Stopped):
        outcomes.run_child(fake_argv(env["pids"], delay=300), stop=stop)
    assert time.monotonic() - t0 < 5 and nothing_left(env["pids"]) == []


def test_a_stopped_event_starts_no_child(env):
    stop = threading.Event()
    stop.set()
    with pytest.raises(children.Stopped, match="no new child process is started"):
        outcomes.run_child(fake_argv(env["pids"]), stop=stop)
    assert marked(env["pids"]) == []


def test_after_kill_all_no_child_starts_until_the_next_command(env):
    children.kill_all()
    with pytest.raises(children.Stopped):
        outcomes.run_child(fake_argv(env["pids"]))
    with children.interruptible():
        assert outcomes.run_child(fake_argv(env["pids"])).status == "ok"
    assert len(marked(env["pids"])) == 1


def test_sigterm_inside_interruptible_is_terminated_and_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(children.Terminated) as exc, children.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert children.exit_status(exc.value) == 143 and children.signal_name(exc.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert children.exit_status(KeyboardInterrupt()) == 130


def test_deferred_signals_take_effect_when_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with children.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            done.append("the block finished first")
    assert done == ["the block finished first"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_report_line_that_is_not_an_object_or_names_an_unknown_status_is_ignored(env):
    code = (
        "import os, json; f = open(os.environ['FLEXFIX_REPORT'], 'a'); "
        "f.write('5\\n[1]\\nnot json\\n' + json.dumps({'status': 'exploded'}) + '\\n'); "
        "f.write(json.dumps({'record': {'x': 1}}) + '\\n'); f.close(); raise SystemExit(3)"
    )
    out = outcomes.run_child(["-c", code])
    assert (out.status, out.exit_code, out.records) == ("error", 3, [{"x": 1}])
    assert out.detail == "exited with status 3 before reporting"


def test_undecodable_child_output_is_read_not_raised():
    out = outcomes.run_child(["-c", "import sys; sys.stdout.buffer.write(b'\\xff\\xfe bad bytes\\n'); sys.exit(2)"])
    assert (out.status, out.exit_code) == ("error", 2) and "bad bytes" in out.stderr_tail[-1]


def test_the_sweep_table_of_an_interrupted_notebook_run_is_a_table(env, monkeypatch):
    """What `save` got last is the table a notebook can still show: the schema, in sweep order."""
    monkeypatch.setattr(invariance, "_child_argv", fake_cells(env["pids"], slow={17}))
    saved = []
    configs = invariance.cpu_configs()[2:5]  # three units (children); only the frozen one hangs, at batch 17
    monkeypatch.setattr(invariance, "_child_argv", fake_cells(env["pids"], slow={17}, only="frozen"))
    with interrupt_main_when(lambda: len(marked(env["pids"])) >= 3), pytest.raises(KeyboardInterrupt):
        invariance.kernel_sweep(configs, SMALL, "cpu", batches=[1, 17], workers=3, progress=False, save=saved.append)
    table = saved[-1]
    assert isinstance(table, pd.DataFrame) and list(table.columns) == invariance.KERNEL_COLUMNS
    assert table.batch.tolist() == [1, 1, 1, 17, 17, 17] * 2 and json.loads(table.to_json())  # serialisable
