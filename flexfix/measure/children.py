"""Child processes that never outlive their caller.

Every child (:func:`flexfix.measure.repro.run_child`) runs in its own session, so a Ctrl-C at the
terminal does not reach it and a crash cannot take the caller with it.  The price is that
nothing kills it but us; this module keeps that promise:

* :func:`start` starts a child as the leader of a new process group and records it in a
  registry of live groups; :func:`end` kills the whole group (grandchildren too) and reaps it.
* :func:`wait` waits in short polls, so an interrupt (``KeyboardInterrupt`` in the main
  thread: Ctrl-C, a notebook kernel's interrupt) reaches the caller within a fraction of a
  second, and a ``stop`` event set by another thread ends the wait with :class:`Stopped`.
* :func:`stop` sets such an event and kills the groups started under it: how a sweep running
  children from a thread pool stops them all; :func:`kill_all` kills every live group and
  refuses new children until the next :func:`interruptible` block.
* :func:`run_pool` runs independent jobs (each starting children under the pool's stop event) on
  threads, a few at a time, and stops them all at once on an interrupt or a failing job.
* :func:`interruptible` is for a command line's ``main``: SIGTERM and SIGHUP (the terminal closed) raise
  :class:`Terminated` (a ``KeyboardInterrupt``) as Ctrl-C raises ``KeyboardInterrupt``, so ``finally`` blocks
  and temporary folders are cleaned up either way; leaving it on an interrupt kills every
  child.  :func:`exit_status` gives 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP).

Whatever ends this process, its children die with it, even where no ``finally`` runs (SIGKILL, a crash):

* each child is started with ``PR_SET_PDEATHSIG`` = SIGKILL (Linux): the kernel kills it when its parent dies;
* a *watchdog* (:func:`watch_group`, :func:`watch_folder`), one small process per parent started with its first
  child, in a session of its own, reads the registrations of this process on a pipe; when the pipe closes (this
  process is gone, however it ended) it kills every process group still registered -- grandchildren included --
  and removes every temporary folder still registered.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flexfix.measure.watchdog import die_with_parent, forget_folder, forget_group, watch_folder, watch_group

__all__ = [
    "POLL_SECONDS",
    "Terminated",
    "Stopped",
    "start",
    "wait",
    "end",
    "stop",
    "kill_all",
    "live_groups",
    "deferred_signals",
    "interruptible",
    "exit_status",
    "signal_name",
    "run_main",
    "exit_code",
    "run_pool",
    "check_timeout",
    "die_with_parent",
    "watch_group",
    "forget_group",
    "watch_folder",
    "forget_folder",
    "INTERRUPTS",
]

POLL_SECONDS = 0.05

_lock = threading.Lock()
_live: dict[int, tuple[subprocess.Popen, threading.Event | None]] = {}
_closed = threading.Event()  # set by kill_all: no new child until the next interruptible()


# The signals that interrupt a command: Ctrl-C, `kill`, a closed terminal (SIGHUP).
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP, given as ``Terminated("SIGHUP")``), raised in the main thread inside
    :func:`interruptible`: an interrupt, like Ctrl-C."""

    @property
    def signum(self) -> int:
        name = self.args[0] if self.args else "SIGTERM"
        try:
            return int(signal.Signals[name])
        except (KeyError, TypeError):
            return int(signal.SIGTERM)


class Stopped(Exception):
    """The work a child belonged to was stopped (by :func:`stop` or :func:`kill_all`)."""


def _stopped(event: threading.Event | None) -> bool:
    return _closed.is_set() or (event is not None and event.is_set())


@contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside the block take effect when it ends (main thread only;
    elsewhere Python runs no signal handler anyway).  Used where an interrupt must not fall
    between two steps that belong together: starting a child and registering it, killing a
    child and reaping it, removing a temporary folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old: dict[int, Any] = {}
    for signum in INTERRUPTS:
        handler = signal.getsignal(signum)
        if handler is None or handler is signal.SIG_IGN:  # not ours to change, or ignored anyway
            continue
        old[signum] = handler
        signal.signal(signum, lambda s, frame: pending.append(s))
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            handler = old[signum]
            if handler is signal.SIG_DFL:
                signal.raise_signal(signum)
            elif callable(handler):
                handler(signum, None)


def check_timeout(name: str, value: object, *, maximum: float | None = None) -> float:
    """``value`` as a float if it is a finite number of seconds > 0 (and <= ``maximum``); otherwise ValueError
    naming ``name``: a timeout of NaN or infinity would never fire."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value!r} is larger than the maximum {maximum:g} seconds")
    return float(value)


def start(cmd: Sequence[str], *, stop: threading.Event | None = None, **popen_kwargs: Any) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new process group (its own session) and register it; it dies with this
    process (:func:`die_with_parent`, and the watchdog kills its whole group).

    Raises :class:`Stopped` (starting nothing, or killing what it started) when ``stop`` is set
    or :func:`kill_all` ran: a pool thread must not start new children once its sweep stops."""
    with deferred_signals():
        if _stopped(stop):
            raise Stopped("stopped: no new child process is started")
        popen_kwargs.setdefault("preexec_fn", die_with_parent())
        proc = subprocess.Popen(list(cmd), start_new_session=True, **popen_kwargs)
        watch_group(proc.pid)
        with _lock:
            _live[proc.pid] = (proc, stop)
            late = _stopped(stop)  # set after the first check: whoever set it may not have seen this child
    if late:
        end(proc)
        raise Stopped("stopped while a child process was starting")
    return proc


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it: while its zombie exists its process
    group id cannot be reused, so :func:`end` may still kill what is left of the group."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return proc.poll() is not None


def wait(proc: subprocess.Popen, timeout: float, *, stop: threading.Event | None = None) -> bool:
    """Wait for ``proc`` to exit, at most ``timeout`` seconds, in polls of :data:`POLL_SECONDS`
    (an interrupt of the calling thread is raised between them).  Returns True on a timeout;
    raises :class:`Stopped` once ``stop`` is set.  Does not reap: call :func:`end` after."""
    deadline = time.monotonic() + check_timeout("timeout", timeout)
    while True:
        if _stopped(stop):  # checked first: a child killed by stop() has exited, but not of itself
            raise Stopped("stopped while waiting for a child process")
        if _exited(proc):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(POLL_SECONDS)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def end(proc: subprocess.Popen) -> int:
    """Kill ``proc``'s process group (whatever of it is still running), reap ``proc`` and
    forget it; returns its exit status (negative: the signal that ended it)."""
    with deferred_signals():
        _kill_group(proc)
        proc.wait()
        with _lock:
            _live.pop(proc.pid, None)
        forget_group(proc.pid)
    return proc.returncode


def stop(event: threading.Event) -> int:
    """Set ``event`` and kill the process groups started under it (their waits raise
    :class:`Stopped`); returns how many groups were killed."""
    event.set()
    with _lock:
        targets = [proc for proc, ev in _live.values() if ev is event]
    for proc in targets:
        _kill_group(proc)
    return len(targets)


def kill_all() -> int:
    """Kill every live child process group and refuse new children (until the next
    :func:`interruptible` block): for a process on its way out.  Returns how many were killed."""
    _closed.set()
    with _lock:
        targets = [proc for proc, _ in _live.values()]
    for proc in targets:
        _kill_group(proc)
    return len(targets)


def live_groups() -> list[int]:
    """Process group ids of the children started here and not yet ended."""
    with _lock:
        return sorted(_live)


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal_name(signum))


@contextmanager
def interruptible() -> Iterator[None]:
    """For a command line's main: SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (Ctrl-C
    raises ``KeyboardInterrupt`` as usual); an interrupt leaving the block kills every child
    process group first.  Restores the previous handlers on exit; a SIGHUP ignored on entry (``nohup``) stays
    ignored."""
    _closed.clear()
    main = threading.current_thread() is threading.main_thread()
    old: dict[int, Any] = {}
    if main:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
                continue
            old[signum] = signal.signal(signum, _terminated)
    try:
        yield
    except KeyboardInterrupt:
        kill_all()
        raise
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def exit_status(exc: BaseException) -> int:
    """The conventional exit status of an interrupted command: 143 for SIGTERM, 129 for SIGHUP, 130 for SIGINT."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def signal_name(exc_or_signum: BaseException | int) -> str:
    """``"SIGTERM"``, ``"SIGHUP"`` or ``"SIGINT"`` for an interrupt (or the name of a signal number)."""
    if isinstance(exc_or_signum, BaseException):
        return signal.Signals(exc_or_signum.signum).name if isinstance(exc_or_signum, Terminated) else "SIGINT"
    return signal.Signals(exc_or_signum).name


def _ignore_interrupts() -> None:
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)


def run_main(main: Callable[[], int], prog: str) -> None:
    """``sys.exit(main())`` for a ``__main__`` block, through :func:`exit_code`."""
    sys.exit(exit_code(main, prog))


def exit_code(main: Callable[[], int], prog: str) -> int:
    """``main()``'s exit status, where an interrupt that escapes ``main`` (a second Ctrl-C while the first was
    being handled) still kills every child and ends in one line, exit 130/143, not a traceback; once interrupted,
    the process ignores further Ctrl-C / SIGTERM for the milliseconds it takes to exit."""
    try:
        code = main()
    except KeyboardInterrupt as exc:
        _ignore_interrupts()
        kill_all()
        print(f"{prog}: interrupted by {signal_name(exc)}", file=sys.stderr)
        code = exit_status(exc)
    if code in tuple(128 + s for s in INTERRUPTS):
        _ignore_interrupts()
    return code


# Each child's share of the machine when several run at once: torch's intra-op threads and Inductor's compile
# workers default to every core, so ten children of a 16-core machine would run 160 threads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")


@contextmanager
def threads_per_child(workers: int) -> Iterator[None]:
    """Inside the block, children started here get ``cpu_count // workers`` threads each (the variables of
    :data:`THREAD_VARIABLES`, which a child reads at start); a value the user set is left alone."""
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    added = [name for name in THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = share
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def run_pool(
    jobs: Sequence[Callable[[threading.Event], Any]],
    workers: int,
    on_result: Callable[[int, Any], None] = lambda index, result: None,
) -> list[Any]:
    """Run ``jobs`` on ``workers`` threads and return their results in job order (``workers <= 1``: one
    after another in the calling thread).

    Each job is called with the pool's stop event, to pass on to the children it starts
    (:func:`flexfix.measure.repro.run_child`'s ``stop``).  ``on_result(index, result)`` runs in the calling
    thread as each job finishes (progress, saving).  An interrupt (``KeyboardInterrupt``: Ctrl-C, a
    notebook's interrupt, SIGTERM under :func:`interruptible`) or a failing job stops the pool at
    once: the jobs not started are cancelled, every running child is killed, the jobs that finished
    meanwhile are still passed to ``on_result``, and the exception is re-raised.  Separate processes
    and CUDA contexts: a crash stays in its child, and what one child measures does not depend on
    what else runs (timings aside).  Side by side, each child gets its share of the cores
    (:func:`threads_per_child`).
    """
    if not jobs:
        return []
    event = threading.Event()
    if workers <= 1:  # one at a time, in the calling thread: each result is handled before the next job starts
        results_in_order = []
        for i, job in enumerate(jobs):
            result = job(event)
            with deferred_signals():  # an interrupt lands after the finished job is handled (saved), not during
                results_in_order.append(result)
                on_result(i, result)
        return results_in_order
    workers = min(workers, len(jobs))
    with threads_per_child(workers):
        return _run_threads(jobs, workers, on_result, event)


def _run_threads(jobs, workers: int, on_result, event: threading.Event) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: dict[int, Any] = {}
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(job, event): i for i, job in enumerate(jobs)}

    def collect(future) -> None:
        i = futures[future]
        with deferred_signals():  # an interrupt lands after the finished job is handled (saved), not during
            results[i] = future.result()
            on_result(i, results[i])

    try:
        for future in as_completed(futures):
            collect(future)
    except BaseException:
        with deferred_signals():  # a second Ctrl-C waits until the children are gone
            stop(event)  # the running children die, the pool's threads start no other
            pool.shutdown(wait=True, cancel_futures=True)
        for future, i in futures.items():
            if i not in results and future.done() and not future.cancelled() and future.exception() is None:
                try:
                    collect(future)
                except Exception:  # noqa: BLE001 - the exception that stopped the pool is the one to raise
                    pass
        raise
    finally:
        pool.shutdown(wait=True)
    return [results[i] for i in range(len(jobs))]
