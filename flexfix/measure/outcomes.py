"""Run a scenario that may crash the CUDA context in a child process, and say what happened.

An illegal memory access poisons the CUDA context of the process it happens in, so
every crash scenario runs in a child (``python -m ...``) with a timeout; the caller, a
notebook kernel say, keeps running whatever the child does.  The child reports through
a JSON-lines file named by ``FLEXFIX_REPORT`` (one line per replay as soon as it
exists, then a final status), so a crash loses none of the earlier lines.

Outcomes: ``ok``, ``wrong_result``, ``illegal_memory_access``, ``index_error``,
``refused`` (vLLM rejected the configuration), ``guard_refused`` (flexfix's replay guard stopped a replay
that would have misread), ``error``, ``timeout``.

The torch-only reproduction's own command is :mod:`flexfix.measure.repro` (``flexfix repro``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexfix.measure import children

__all__ = [
    "STATUSES",
    "CRASHES",
    "IMA_TEXT",
    "Outcome",
    "Reporter",
    "classify",
    "status_from_error",
    "run_child",
    "run_reported",
    "json_child_argv",
    "json_child_main",
    "worst",
]

STATUSES = (
    "ok",
    "wrong_result",
    "illegal_memory_access",
    "index_error",
    "refused",
    "guard_refused",
    "error",
    "timeout",
)
# Outcomes in which the launch died (an index error is the CPU analog's stand-in for an illegal access).
CRASHES = ("illegal_memory_access", "index_error", "timeout")
IMA_TEXT = "an illegal memory access was encountered"
REFUSED_TEXT = "is not valid for this configuration"
GUARD_TEXT = "flexfix replay guard: refusing"  # flexfix.guard stopped a replay (FLEXFIX_GUARD=error)
_SANITIZER_ERRORS = re.compile(r"ERROR SUMMARY: (\d+) error")
_SANITIZER_READ = re.compile(r"Invalid __global__ (read|write)")


@dataclass
class Outcome:
    """What one child run did."""

    status: str
    detail: str = ""
    exit_code: int | None = None
    signal: str | None = None
    seconds: float = 0.0
    stderr_tail: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        how = f"exit {self.exit_code}" if self.signal is None else f"killed by {self.signal}"
        return f"{self.status} ({how}, {self.seconds:.1f} s){': ' + self.detail if self.detail else ''}"


def status_from_error(text: str) -> str:
    """The outcome an exception's text stands for."""
    if IMA_TEXT in text:
        return "illegal_memory_access"
    if REFUSED_TEXT in text or "batch invariance not supported" in text:
        return "refused"
    return "error"


def worst(statuses: Sequence[str]) -> str:
    """The outcome of a run from those of its steps: a crash beats a wrong answer beats ok."""
    order = (
        "illegal_memory_access",
        "index_error",
        "wrong_result",
        "refused",
        "guard_refused",
        "error",
        "timeout",
        "ok",
    )
    present = [s for s in order if s in statuses]
    return present[0] if present else "error"


class Reporter:
    """The child's side: append JSON lines to the file named by ``FLEXFIX_REPORT``."""

    def __init__(self, path: str | None = None):
        self.path = path or os.environ.get("FLEXFIX_REPORT")

    def _write(self, obj: dict) -> None:
        line = json.dumps(obj, default=str)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            print(line, flush=True)

    def record(self, record: dict) -> None:
        self._write({"record": record})

    def finish(self, status: str, detail: str = "", **extra: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        self._write({"status": status, "detail": detail, "extra": extra})

    def fail(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        status = "index_error" if isinstance(exc, IndexError) else status_from_error(text)
        self.finish(status, text.splitlines()[-1] if text else type(exc).__name__)


def _read_report(path: Path) -> tuple[list[dict], dict | None]:
    records, final = [], None
    if not path.exists():
        return records, final
    for line in path.read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "record" in obj:
            records.append(obj["record"])
        elif obj.get("status") in STATUSES:
            final = obj
    return records, final


def classify(returncode: int | None, output: str, final: dict | None, timed_out: bool) -> tuple[str, str, str | None]:
    """(status, detail, signal name) from what a child left behind."""
    sig = None
    if returncode is not None and returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
    if timed_out:
        return "timeout", "killed at its timeout", sig
    if IMA_TEXT in output or _SANITIZER_READ.search(output):
        line = next((ln for ln in output.splitlines() if IMA_TEXT in ln or _SANITIZER_READ.search(ln)), "")
        return "illegal_memory_access", line.strip(), sig
    guarded = next((ln for ln in output.splitlines() if GUARD_TEXT in ln), None)
    if guarded is not None:  # the guard refused a replay (in whichever process it ran)
        return "guard_refused", guarded[guarded.index(GUARD_TEXT) :].strip(), sig
    refusal = next((ln for ln in output.splitlines() if REFUSED_TEXT in ln), None)
    if refusal is not None:  # vLLM rejected the configuration (in whichever process it checked)
        return "refused", refusal.strip(), sig
    if final is not None:
        return final["status"], final.get("detail", ""), sig
    if sig is not None:
        return "error", f"killed by {sig} before reporting", sig
    if returncode:
        return "error", f"exited with status {returncode} before reporting", sig
    return "error", "exited without reporting an outcome", sig


def run_child(
    argv: Sequence[str],
    *,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    sanitizer: bool = False,
    tail: int = 15,
    stop: threading.Event | None = None,
) -> Outcome:
    """Run ``python <argv>`` in a child process and classify what it did.

    With ``sanitizer`` the child runs under ``compute-sanitizer --tool memcheck`` and
    ``PYTORCH_NO_CUDA_MEMORY_CACHING=1``; the number of errors it reports goes into
    ``extra["sanitizer_errors"]``.

    The child leads its own process group (:mod:`flexfix.measure.children`); whatever ends this call
    -- the child's exit, its timeout, an interrupt (``KeyboardInterrupt``, re-raised) or
    ``stop`` being set by another thread (:class:`flexfix.measure.children.Stopped`) -- kills the
    whole group, grandchildren included, and removes the child's temporary folder.  ``timeout`` must be a
    finite number of seconds > 0 (ValueError otherwise: NaN would never fire).
    """
    timeout = children.check_timeout("timeout", timeout)
    cmd = [sys.executable, *argv]
    if sanitizer:
        tool = shutil.which("compute-sanitizer")
        if tool is None:
            return Outcome("error", "compute-sanitizer is not on PATH", command=cmd)
        cmd = [tool, "--tool", "memcheck", "--print-limit", "10", *cmd]
    tmp = None
    try:
        # An interrupt deferred here is raised as the block ends: inside the try, so the finally removes the folder.
        with children.deferred_signals():
            tmp = tempfile.mkdtemp(prefix="flexfix-child-")
            children.watch_folder(tmp)  # removed by the watchdog if this process dies before the finally below
        report = Path(tmp) / "report.jsonl"
        child_env = {**os.environ, **(env or {}), "FLEXFIX_REPORT": str(report), "PYTHONUNBUFFERED": "1"}
        if sanitizer:
            child_env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
        start = time.monotonic()
        with open(Path(tmp) / "output.txt", "w+", errors="replace") as out:
            proc = children.start(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env, stop=stop)
            try:
                timed_out = children.wait(proc, timeout, stop=stop)
            finally:
                returncode = children.end(proc)
            out.seek(0)
            output = out.read()
        seconds = time.monotonic() - start
        records, final = _read_report(report)
    finally:
        if tmp is not None:
            with children.deferred_signals():
                shutil.rmtree(tmp, ignore_errors=True)
                children.forget_folder(tmp)
    status, detail, sig = classify(returncode, output, final, timed_out)
    extra = dict((final or {}).get("extra") or {})
    if sanitizer:
        m = _SANITIZER_ERRORS.search(output)
        extra["sanitizer_errors"] = int(m.group(1)) if m else None
        extra["sanitizer_lines"] = [ln for ln in output.splitlines() if ln.startswith("=========")][:30]
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return Outcome(
        status=status,
        detail=detail,
        exit_code=returncode,
        signal=sig,
        seconds=round(seconds, 2),
        stderr_tail=lines[-tail:],
        records=records,
        extra=extra,
        command=[str(c) for c in cmd],
    )


def run_reported(body: Callable[[Reporter], None]) -> int:
    """A child's main: run ``body`` with a :class:`Reporter`; an exception is printed and
    reported as the child's outcome.  Returns the exit status."""
    reporter = Reporter()
    try:
        body(reporter)
        return 0
    except BaseException as exc:  # noqa: BLE001 - the child reports every failure
        traceback.print_exc()
        reporter.fail(exc)
        return 1


def json_child_argv(prog: str, spec: dict) -> list[str]:
    """The argv of :func:`run_child` for a child whose main is :func:`json_child_main`."""
    return ["-m", prog, "--child", json.dumps(spec)]


def json_child_main(prog: str, body: Callable[[dict, Reporter], None], argv: Sequence[str] | None = None) -> int:
    """Main of a child started as ``python -m <prog> --child <JSON spec>``: ``body(spec, reporter)``
    under :func:`run_reported`."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}")
    p.add_argument("--child", required=True, help="JSON spec of the child's work (internal)")
    args = p.parse_args(argv)
    return run_reported(lambda reporter: body(json.loads(args.child), reporter))
