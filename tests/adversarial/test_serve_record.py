"""`flexfix serve record` against the FAKE server (tests/fake_vllm_server.py): every argument checked before a
server starts (finite timeouts, writable folders, no scenario or batch size twice, nothing replaced unasked); the
README's command run twice into one folder works and never overwrites a log a kept table points to; the
measurement survives a failing final write and an interrupt landing while it is saved; no server outlives the
command, however it ends; a run in which no server started does not exit 0."""

import os
import signal
import time
from pathlib import Path

import pytest
from adversarial_helpers import PYTHON, ROOT, interrupt, last_line, wait_for

from flexfix.edition import results
from flexfix.integration import serving
from flexfix.integration.serving import VllmServer, recording

FAKE = ROOT / "tests" / "fake_vllm_server.py"
PROG = "flexfix serve record"
QUICK = ["--scenarios", "patched_bi1", "--requests", "2", "--max-tokens", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    serving.prepare_model("tiny", root)
    return root


def record(out, models, *extra, fake=FAKE):
    argv = ["record", "--fake", str(fake), "--model", "tiny", "--models-dir", str(models), "--out", str(out)]
    return recording.main([*argv, *QUICK, *extra])


def log_folders(out) -> list[Path]:
    logs = Path(out) / "serve-logs"
    return sorted(logs.iterdir()) if logs.exists() else []


def test_the_same_command_twice_replaces_the_table_and_keeps_both_runs_logs(tmp_path, models, capsys):
    out = tmp_path / "out"
    assert record(out, models) == 0
    (first,) = log_folders(out)
    first_log = (first / "patched_bi1.log").read_bytes()
    assert record(out, models) == 0
    first_again, second = log_folders(out)
    assert first_again == first and (first / "patched_bi1.log").read_bytes() == first_log, "never overwritten"
    table, _ = results.read_results(out / "serve-cpu.json")
    assert table.log_file.tolist() == [str(second / "patched_bi1.log")] and table.status.tolist() == ["ok"]
    assert not (out / "serve-cpu.partial.json").exists()


def test_a_file_with_more_scenarios_is_not_replaced_unasked_and_nothing_starts(tmp_path, models, capsys):
    out = tmp_path / "out"
    rows = [{"scenario": s, "status": "ok"} for s in ("stock", "patched_bi1", "patched_bi0")]
    kept = results.write_results(out, "serve", rows, "cpu")
    before = kept.read_bytes()
    assert record(out, models) == 2
    assert capsys.readouterr().err.strip() == (
        f"{PROG}: error: --out: {kept} holds 3 scenarios and this run would write 1: pass --replace (replace=True) "
        "to replace it, or choose another output folder or name"
    )
    assert kept.read_bytes() == before and log_folders(out) == []
    assert record(out, models, "--replace") == 0
    assert len(results.read_results(kept)[0]) == 1


def test_a_partial_file_of_an_interrupted_run_is_not_overwritten_unasked(tmp_path, models, capsys):
    out = tmp_path / "out"
    partial = results.write_results(out, "serve", [{"scenario": "stock"}], "cpu", partial=True)
    assert record(out, models) == 2
    assert f"--out: {partial} holds the scenarios of an interrupted run" in capsys.readouterr().err
    assert log_folders(out) == []
    assert record(out, models, "--replace") == 0 and not partial.exists()


def test_a_failing_final_write_keeps_the_measurement_and_says_where(tmp_path, models, monkeypatch, capsys):
    out = tmp_path / "out"
    write = results.write_results

    def full_disk(*args, partial=False, **kwargs):
        if not partial:
            raise OSError(28, "No space left on device")
        return write(*args, partial=partial, **kwargs)

    monkeypatch.setattr(results, "write_results", full_disk)
    assert record(out, models) == 1
    partial = out / "serve-cpu.partial.json"
    assert capsys.readouterr().err.strip() == (
        f"{PROG}: [Errno 28] No space left on device; the 1 finished scenarios are kept in {partial}"
    )
    table, _ = results.read_results(partial)
    assert table.status.tolist() == ["ok"] and Path(table.log_file[0]).exists()


def test_no_server_started_is_not_a_success(tmp_path, models, capsys):
    broken = tmp_path / "broken_server.py"
    broken.write_text("import sys\nprint('planted start-up failure', file=sys.stderr)\nsys.exit(3)\n")
    out = tmp_path / "out"
    assert record(out, models, "--scenarios", "stock,patched_bi1", fake=broken) == 1
    err = capsys.readouterr().err
    assert last_line(err) == (
        f"{PROG}: the server did not start in 2 of 2 scenarios (stock, patched_bi1): nothing was measured there "
        "(see each scenario's detail and log)"
    )
    table, _ = results.read_results(out / "serve-cpu.json")
    assert table.status.tolist() == ["startup_failed"] * 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--startup-timeout", "nan"], "startup_timeout must be a finite number of seconds > 0, got nan"),
        (["--startup-timeout", "inf"], "startup_timeout must be a finite number of seconds > 0, got inf"),
        (["--startup-timeout", "0"], "startup_timeout must be a finite number of seconds > 0, got 0.0"),
        (["--startup-timeout", "-5"], "startup_timeout must be a finite number of seconds > 0, got -5.0"),
        (["--startup-timeout", "1e9"], "startup_timeout=1000000000.0 is larger than the maximum 7200 seconds"),
        (["--request-timeout", "nan"], "request_timeout must be a finite number of seconds > 0, got nan"),
        (["--scenarios", "stock,stock"], "scenario 'stock' is listed twice"),
        (["--scenarios", "stock,,patched_bi1"], "scenarios must be a non-empty list of names"),
        (["--requests", "17,17"], "--requests: 17 is listed twice"),
        (["--requests", "2,x"], "--requests: 'x' is not an integer (expected e.g. 1,8,16)"),
        (["--requests", "2000"], "--requests: 2000 is outside 1..1024"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_numbers_and_lists_are_refused_before_a_server_starts(tmp_path, models, capsys, extra, message):
    out = tmp_path / "out"
    assert record(out, models, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: ") and message in err and "Traceback" not in err
    assert log_folders(out) == []


def test_folders_are_checked_before_a_server_starts(tmp_path, models, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    long = tmp_path / ("d" * 300)
    for argv, message in [
        (["--out", str(blocker)], f"--out {str(blocker)!r} is a file, not a folder"),
        (["--out", str(blocker / "below")], "is not a writable folder: Not a directory"),
        (["--out", str(long)], "is not a writable folder: File name too long"),
    ]:
        assert recording.main(["record", "--fake", str(FAKE), "--models-dir", str(models), *QUICK, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    out = tmp_path / "out"
    assert recording.main(["record", "--fake", str(FAKE), "--models-dir", str(blocker), "--out", str(out)]) == 2
    assert f"--models-dir {str(blocker)!r} is a file, not a folder" in capsys.readouterr().err
    assert log_folders(out) == []


def test_the_library_call_refuses_a_timeout_that_never_fires_before_a_server_starts(tmp_path, models):
    scenarios = serving.plan("patched_bi1", model="tiny", requests=[2], fake_server=FAKE)
    with pytest.raises(ValueError, match="startup_timeout must be a finite number of seconds > 0, got nan"):
        serving.record(scenarios, tmp_path, fake_server=FAKE, models_dir=models, startup_timeout=float("nan"))
    assert log_folders(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(startup_timeout=float("nan")), "startup_timeout must be a finite number"),
        (dict(grace=float("nan")), "grace must be a number of seconds in 0..600, got nan"),
        (dict(grace=float("inf")), "grace must be a number of seconds in 0..600, got inf"),
        (dict(grace=-1), "grace must be a number of seconds in 0..600, got -1"),
        (dict(poll=0), "poll must be a finite number of seconds > 0, got 0"),
    ],
)
def test_the_server_manager_refuses_waits_that_never_end(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VllmServer(tmp_path, log_path=tmp_path / "log", launcher=(PYTHON, str(FAKE)), **kwargs)


def test_an_interrupt_landing_while_a_scenario_is_saved_keeps_it(tmp_path, models, monkeypatch):
    write = results.write_results

    def interrupted_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(results, "write_results", interrupted_while_writing)
    kept = recording.Kept()
    scenarios = serving.plan("patched_bi1,patched_bi0", model="tiny", requests=[2], max_tokens=2, fake_server=FAKE)
    with pytest.raises(KeyboardInterrupt):
        serving.record(scenarios, tmp_path, fake_server=FAKE, models_dir=models, max_tokens=2, kept=kept,
                       progress=lambda line: None)  # fmt: skip
    assert kept.count == 1 and kept.path == tmp_path / "serve-cpu.partial.json"
    assert results.read_results(kept.path)[0].scenario.tolist() == ["patched_bi1"]


# No server outlives the command: SIGHUP (a closed terminal), SIGKILL (nothing runs).


def servers_of(models) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if str(models) in cmdline and " --port " in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum, status", [(signal.SIGHUP, 129), (signal.SIGKILL, -9)], ids=["SIGHUP", "SIGKILL"])
def test_the_server_dies_with_the_command(tmp_path, models, signum, status):
    import subprocess

    own = tmp_path / "models"  # a models folder of its own, so that its fake servers can be told apart
    own.mkdir()
    (own / "serve-tiny").symlink_to(models / "serve-tiny")
    out = tmp_path / "out"
    argv = ["record", "--fake", str(FAKE), "--model", "tiny", "--models-dir", str(own), "--out", str(out)]
    proc = subprocess.Popen(
        [PYTHON, "-m", "flexfix", "serve", *argv, "--scenarios", "patched_bi1", "--requests", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_for(lambda: servers_of(own) != [], timeout=60, what="the fake server")
        seconds, _, err = interrupt(proc, signum)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status and seconds < 15, err
    if signum == signal.SIGHUP:
        assert last_line(err).startswith(f"{PROG}: interrupted by SIGHUP: the server was stopped; ")
    wait_for(lambda: servers_of(own) == [], timeout=10, what="the fake server to be gone")


def test_the_partial_file_names_where_the_finished_scenarios_are(tmp_path):
    kept = recording.Kept()
    assert kept.line() == "no scenario had finished: nothing written"
    kept.path, kept.count = tmp_path / "serve-cpu.partial.json", 2
    assert kept.line() == f"the 2 finished scenarios are kept in {tmp_path / 'serve-cpu.partial.json'}"
