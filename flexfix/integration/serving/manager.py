"""``vllm serve`` as a context manager: started in its own process group, healthy or a clear error, always stopped.

::

    with VllmServer(model_dir, args=["--max-num-seqs", "128"], env={"FLEXFIX_PATCH": "1"},
                    log_path="build/serve.log", startup_timeout=480) as server:
        server.base_url          # http://127.0.0.1:PORT (OpenAI API under /v1)
        server.alive(), server.log_tail(20), server.returncode

The server runs as ``python -m vllm.entrypoints.cli.main serve MODEL --attention-backend FLEX_ATTENTION
--host 127.0.0.1 --port PORT ARGS...`` (``vllm serve`` without needing the ``vllm`` script on PATH), in
a new session (``start_new_session=True``), so that its API-server, engine-core and worker processes
form one process group that nothing else shares.  Its stdout and stderr go to ``log_path``, which is
kept.  Start-up waits for ``GET /health`` to answer 200; if the process exits first, or
``startup_timeout`` passes, the group is stopped and :class:`ServerError` says which (exit code, or
"timed out after N s") with the log's last lines.  Leaving the block in any way (normally, by an
exception, by Ctrl-C) stops the whole group: SIGTERM, ``grace`` seconds, then SIGKILL; it returns once
no live process of the group is left.

``launcher`` replaces ``python -m vllm.entrypoints.cli.main`` (tests run ``tests/fake_vllm_server.py``
with the same arguments).

The serving experiment is the rest of :mod:`flexfix.integration.serving`; ``flexfix serve record`` runs it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["VLLM_LAUNCHER", "ServerError", "VllmServer", "free_port", "group_members"]

VLLM_LAUNCHER = (sys.executable, "-m", "vllm.entrypoints.cli.main")


class ServerError(RuntimeError):
    """The server did not become healthy: it exited, or start-up timed out."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: ask the kernel whether the group still has anyone (zombies included)
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


class VllmServer:
    """A ``vllm serve`` process group for the duration of a ``with`` block (see the module doc)."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 480.0,
        grace: float = 10.0,
        launcher: Sequence[str] = VLLM_LAUNCHER,
        poll: float = 0.5,
    ):
        from flexfix.measure.children import check_timeout

        check_timeout("startup_timeout", startup_timeout)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 600:  # also NaN
            raise ValueError(f"grace must be a number of seconds in 0..600, got {grace!r}")
        check_timeout("poll", poll, maximum=60)
        self.model_dir = str(model_dir)
        self.args = [str(a) for a in args]
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.log_path = Path(log_path)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = float(startup_timeout)
        self.grace = float(grace)
        self.launcher = [str(a) for a in launcher]
        self.poll = poll
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        # Its stop, as it started: the seconds that stop() took (SIGTERM, the grace period, SIGKILL; summed over the
        # calls), and whether the server had already exited when the first stop began (then no SIGTERM stopped it).
        self.stop_seconds: float = 0.0
        self.exited_before_stop: bool | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it has exited (negative: killed by that signal), else None."""
        return self.proc.poll() if self.proc is not None else None

    def command(self) -> list[str]:
        return [
            *self.launcher,
            "serve",
            self.model_dir,
            "--attention-backend",
            "FLEX_ATTENTION",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> list[str]:
        """The last ``n`` non-empty lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [ln for ln in text.splitlines() if ln.strip()][-n:]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def healthy(self, timeout: float = 5.0) -> bool:
        """``GET /health`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the server to exit on its own; its exit status, or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # start / stop

    def start(self) -> VllmServer:
        if self.proc is not None:
            raise RuntimeError("this server was already started")
        from flexfix.measure import children

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # its own session, registered: it dies with this process however that ends (flexfix.measure.children)
            self.proc = children.start(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        start = time.monotonic()
        deadline = start + self.startup_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(self._failure(f"server exited with status {code} before it was healthy"))
            if self.healthy(timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
                self.startup_seconds = round(time.monotonic() - start, 1)
                return
            if time.monotonic() >= deadline:
                raise ServerError(self._failure(f"server not healthy: timed out after {self.startup_timeout:g} s"))
            time.sleep(self.poll)

    def _failure(self, what: str) -> str:
        tail = "\n".join(f"    {ln}" for ln in self.log_tail(20)) or "    (empty)"
        return f"{what} ({' '.join(self.command())}); last lines of {self.log_path}:\n{tail}"

    def stop(self) -> int | None:
        """Stop the whole process group (SIGTERM, ``grace`` s, SIGKILL); the server's exit status.

        Returns once the leader is reaped and no live process of the group is left (a second Ctrl-C
        while waiting goes straight to SIGKILL)."""
        from flexfix.measure import children

        if self.proc is None:
            return None
        if self.exited_before_stop is None:  # the first stop decides: a later one finds the server gone anyway
            self.exited_before_stop = self.proc.poll() is not None
        begun = time.monotonic()
        pgid = self.proc.pid  # a session leader's process group id is its pid
        try:
            self._signal(pgid, signal.SIGTERM)
            if not self._wait_group(pgid, self.grace):
                self._signal(pgid, signal.SIGKILL)
                self._wait_group(pgid, 30.0)
        except KeyboardInterrupt:
            self._signal(pgid, signal.SIGKILL)
            self._wait_group(pgid, 30.0)
            raise
        finally:
            children.end(self.proc)  # reaped and forgotten (the group is gone, or SIGKILLed once more)
            self.stop_seconds += time.monotonic() - begun
        return self.proc.returncode

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_group(self, pgid: int, timeout: float) -> bool:
        """Whether, within ``timeout`` s, the leader exited and no live process of the group is left."""
        deadline = time.monotonic() + timeout
        while True:
            leader_done = self.proc.poll() is not None
            if leader_done and not group_members(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False
