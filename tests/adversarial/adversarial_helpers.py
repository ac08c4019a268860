"""Shared pieces of the adversarial suite: fake children, process checks, commands run as real processes.

The fake child is a plain ``python -c`` script (no torch, starts in ~30 ms): it marks its pid (and its
grandchild's) in a folder, optionally starts a grandchild in its process group, reports JSON lines to
``FLEXFIX_REPORT`` as :class:`flexfix.measure.outcomes.Reporter` does, and can hang at a chosen point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

FAKE_CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    spec = json.loads(sys.argv[1])
    def mark(pid):
        open(os.path.join(spec["pids"], str(pid)), "w").close()
    def report(obj):
        with open(os.environ["FLEXFIX_REPORT"], "a") as f:
            f.write(json.dumps(obj) + "\\n")
    mark(os.getpid())
    if spec.get("grandchild"):
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        mark(g.pid)
    if spec.get("ignore_term"):
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for i, r in enumerate(spec.get("records", [])):
        if i == spec.get("hang_at"):
            time.sleep(300)
        report({"record": r})
    time.sleep(spec.get("delay", 0))
    report({"status": spec.get("status", "ok"), "detail": "fake child", "extra": {}})
    """
)


def fake_argv(pids: Path, **spec) -> list[str]:
    """The argv (for :func:`flexfix.measure.outcomes.run_child`) of a fake child marking its pids in ``pids``."""
    return ["-c", FAKE_CHILD, json.dumps({"pids": str(pids), **spec})]


def marked(pids: Path) -> list[int]:
    return sorted(int(p.name) for p in Path(pids).iterdir())


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: this machine's PID 1 does not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def group_alive(pgid: int) -> bool:
    """Whether any running process is left in process group ``pgid``: ``os.killpg(pgid, 0)`` raising
    ProcessLookupError says none; otherwise only zombies (orphans PID 1 never reaped) may be left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def nothing_left(pids: Path, grace: float = 5.0) -> list[int]:
    """Marked pids still running, or whose process group still runs (should be empty).  SIGKILL takes
    effect asynchronously: a process killed a moment ago is given ``grace`` seconds to be gone."""
    deadline = time.monotonic() + grace
    while True:
        left = [pid for pid in marked(pids) if alive(pid) or group_alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_marked(pids: Path) -> None:
    """Clean up after a failed test: kill whatever it left."""
    for pid in marked(pids):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def child_folders(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in Path(tmpdir).iterdir() if p.name.startswith("flexfix-child-"))


STARTED: list[subprocess.Popen] = []


def stop_started() -> None:
    """After each test: a command a failed test left running gets SIGTERM (it kills its own children),
    then SIGKILL."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def start(code: str, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
    """``python -c code args...`` as a real process that takes SIGINT as Ctrl-C (even when the test
    runner was started in the background, where SIGINT is inherited as ignored)."""
    proc = subprocess.Popen(
        [PYTHON, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    STARTED.append(proc)
    return proc


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, signum: int, timeout: float = 20.0) -> tuple[float, str, str]:
    """Send ``signum`` to ``proc``; (seconds until it exited, stdout, stderr)."""
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {timeout} s after {signal.Signals(signum).name}:\n{err}") from None
    return time.monotonic() - t0, out, err


def records_in(path: Path) -> int:
    try:
        return len(json.loads(Path(path).read_text())["records"])
    except (OSError, ValueError, KeyError):
        return 0


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
