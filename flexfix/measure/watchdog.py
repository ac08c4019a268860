"""Children that die with their parent, however it dies: ``PR_SET_PDEATHSIG`` and a watchdog process.

A child runs in its own session (:mod:`flexfix.measure.children`), so a terminal's Ctrl-C or hang-up does not reach
it, and a parent that dies without running its ``finally`` blocks (SIGKILL, a crash, a closed terminal without a
handler) would leave it running for ever.  Two things prevent that:

* :func:`die_with_parent` is a ``preexec_fn`` that sets ``PR_SET_PDEATHSIG`` = SIGKILL in the child (Linux): the
  kernel kills the child when the thread that started it ends;
* the *watchdog*, one small Python process per parent, started with its first registration, in a session of its own
  (a terminal's signals never reach it), reads registrations on a pipe: process groups (:func:`watch_group`) and
  temporary folders (:func:`watch_folder`), each forgotten again when the parent ends it normally.  When the pipe
  closes -- the parent is gone, however it ended -- it kills every group still registered (grandchildren
  included) and removes every folder still registered, then exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent", "watch_group", "forget_group", "watch_folder", "forget_folder", "watchdog_pid"]

# The watchdog's code: it ignores the interrupts (a terminal's Ctrl-C and hang-up never reach its session anyway),
# reads registrations until the pipe closes, then kills the groups and removes the folders still registered.
_WATCHDOG = r"""
import json, os, shutil, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups, folders = set(), set()
for line in sys.stdin.buffer:
    try:
        op, arg = json.loads(line)
    except ValueError:
        continue
    {"+g": groups.add, "-g": groups.discard, "+d": folders.add, "-d": folders.discard}.get(op, len)(arg)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
for d in folders:
    shutil.rmtree(d, ignore_errors=True)
"""
_watchdog: subprocess.Popen | None = None
_watchdog_owner: int | None = None  # the pid that started it (a forked copy of this process starts its own)
_watchdog_lock = threading.Lock()


def _tell_watchdog(op: str, arg: int | str) -> None:
    """Send one registration to this process's watchdog (started on first use); never raises."""
    global _watchdog, _watchdog_owner
    line = (json.dumps([op, arg]) + "\n").encode()
    with _watchdog_lock:
        try:
            if _watchdog is None or _watchdog_owner != os.getpid() or _watchdog.poll() is not None:
                if op.startswith("-"):
                    return  # nothing to forget in a watchdog that is not there
                _watchdog = subprocess.Popen(
                    [sys.executable, "-c", _WATCHDOG],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                _watchdog_owner = os.getpid()
            _watchdog.stdin.write(line)
            _watchdog.stdin.flush()
        except OSError:  # no watchdog could be started, or it died: PR_SET_PDEATHSIG still holds for children
            pass


def watch_group(pgid: int) -> None:
    """Have the watchdog kill process group ``pgid`` if this process ends before :func:`forget_group`."""
    _tell_watchdog("+g", int(pgid))


def forget_group(pgid: int) -> None:
    _tell_watchdog("-g", int(pgid))


def watch_folder(path: str | os.PathLike) -> None:
    """Have the watchdog remove folder ``path`` if this process ends before :func:`forget_folder`."""
    _tell_watchdog("+d", os.fspath(path))


def forget_folder(path: str | os.PathLike) -> None:
    _tell_watchdog("-d", os.fspath(path))


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when this process (the thread that
    starts it) dies, and does not start at all if this process died while it was being forked.  None where
    ``prctl`` is not available (then the watchdog alone keeps the promise)."""
    if _PRCTL is None:
        return None
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec: no imports, no locks
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


def watchdog_pid() -> int | None:
    """The pid of this process's watchdog, if one runs (for tests)."""
    with _watchdog_lock:
        if _watchdog is None or _watchdog_owner != os.getpid() or _watchdog.poll() is not None:
            return None
        return _watchdog.pid
