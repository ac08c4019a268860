"""The replay guard: catch a CUDA graph about to replay with metadata whose layout moved since capture.

A captured CUDA graph replays each kernel with the pointer and strides it saw at capture.  vLLM 0.20's
FlexAttention bug (``as_strided`` into a persistent buffer: the row stride of ``kv_indices`` followed the
step) and its 2026 twin in DeepSeek-V4's sparse-MLA metadata (#52448) are the same mistake: a replayed
kernel read a tensor whose strides had changed since capture.  The guard holds FULL graphs to one
invariant: every tensor a captured graph can read -- its tensor arguments and everything reachable from the
forward context's attention metadata -- has at replay the ``data_ptr()``, addressing strides, storage
offset, dtype and device it had at capture (:mod:`flexfix.guard.layout`, :mod:`flexfix.guard.snapshot`).

Use it on any vLLM from 0.20 to 0.26 (the V1 runner's ``CUDAGraphWrapper`` and model runner V2 both)::

    FLEXFIX_GUARD=error vllm serve MODEL ...    # refuse the replay, naming the field (no IMA, no wrong token)
    FLEXFIX_GUARD=eager vllm serve MODEL ...    # run such a step without the graph: the right answer
    FLEXFIX_GUARD=log   vllm serve MODEL ...    # replay anyway, count and log each (graph, field) once

The vLLM plugin (:mod:`flexfix.integration.vllm_plugin`, installed with flexfix) reads ``FLEXFIX_GUARD`` in
every vLLM process; unset, nothing is wrapped.  ``FLEXFIX_GUARD_STATS=DIR`` writes what each process's
guard saw to ``DIR/guard-<pid>.json`` at its first alarm and at exit.  In Python: :func:`install`,
:func:`uninstall`, :func:`active`, :func:`status`.
"""

from __future__ import annotations

import atexit
import os
import threading
from importlib import metadata
from typing import TYPE_CHECKING

from flexfix.guard.mode import ENV, MODES, requested_mode

if TYPE_CHECKING:  # torch is imported only when a guard is made: `flexfix status` runs without it
    from flexfix.guard.replay_guard import ReplayGuard, ReplayGuardError

__all__ = [
    "ENV",
    "MODES",
    "STATS_ENV",
    "ReplayGuard",
    "ReplayGuardError",
    "requested_mode",
    "install",
    "install_from_env",
    "check_settings",
    "uninstall",
    "active",
    "hooks",
    "status",
]

STATS_ENV = "FLEXFIX_GUARD_STATS"
_lock = threading.Lock()
_guard: ReplayGuard | None = None
_hooks: list[str] = []
_atexit_registered = False


def __getattr__(name: str):
    if name in ("ReplayGuard", "ReplayGuardError"):
        from flexfix.guard import replay_guard

        return getattr(replay_guard, name)
    raise AttributeError(f"module 'flexfix.guard' has no attribute {name!r}")


def active() -> ReplayGuard | None:
    """The guard of this process, or None."""
    return _guard


def install(mode: str) -> ReplayGuard:
    """Guard every FULL graph replay of this process's vLLM (both model runners); idempotent for one mode."""
    global _guard, _atexit_registered
    from flexfix.guard import vllm_v1, vllm_v2
    from flexfix.guard.replay_guard import ReplayGuard

    with _lock:
        if _guard is not None:
            if _guard.mode != mode:
                raise RuntimeError(f"the replay guard is installed in {_guard.mode!r} mode; uninstall() first")
            return _guard
        _guard = ReplayGuard(mode, {"vLLM": _vllm_version()})
        _guard.stats_folder = os.environ.get(STATS_ENV) or None
        for name, hook in (("CUDAGraphWrapper (V1 runner)", vllm_v1), ("CudaGraphManager (runner V2)", vllm_v2)):
            if hook.install(active):
                _hooks.append(name)
        if os.environ.get(STATS_ENV) and not _atexit_registered:
            atexit.register(_write_stats)
            _atexit_registered = True
        return _guard


def install_from_env() -> ReplayGuard | None:
    """:func:`install` in the mode ``FLEXFIX_GUARD`` asks for; None (and nothing wrapped) when unset.
    ValueError naming the setting, before anything is wrapped, where :func:`check_settings` finds one wrong."""
    mode = check_settings()
    return None if mode is None else install(mode)


def check_settings() -> str | None:
    """The mode ``FLEXFIX_GUARD`` asks for (None: off), once every guard setting of the environment holds:
    ValueError naming the first that does not -- ``FLEXFIX_GUARD`` (a typo), ``FLEXFIX_GUARD_NOT_READ`` (an entry
    that is not ``Class.field``) or, with a guard asked for, ``FLEXFIX_GUARD_STATS`` (a folder the process cannot
    write into: probed now, so that the statistics are not lost silently at exit)."""
    from flexfix.guard import vllm_metadata

    mode = requested_mode()
    if mode is None:
        return None
    vllm_metadata.not_read_fields()
    folder = os.environ.get(STATS_ENV)
    if folder:
        from flexfix.edition.params import writable_folder

        writable_folder(STATS_ENV, folder)
    return mode


def uninstall() -> bool:
    """Put vLLM's own replay paths back and drop this process's guard; False if none was installed."""
    global _guard
    from flexfix.guard import vllm_v1, vllm_v2

    with _lock:
        if _guard is None:
            return False
        vllm_v1.uninstall()
        vllm_v2.uninstall()
        _hooks.clear()
        _guard = None
        return True


def hooks() -> list[str]:
    """Where this process's guard is hooked in (empty without one)."""
    return list(_hooks)


def status() -> dict:
    """Mode, where the guard is hooked in, and what it has counted in this process; ``requested``: what
    ``FLEXFIX_GUARD`` asks of the vLLM processes started from this environment."""
    try:
        requested = check_settings() or "off"
    except ValueError as e:
        requested = f"invalid ({e})"
    if _guard is None:
        return {"mode": None, "requested": requested, "hooks": []}
    return {"mode": _guard.mode, "requested": requested, "hooks": list(_hooks), **_guard.summary()}


def _write_stats() -> None:
    folder = os.environ.get(STATS_ENV)
    if _guard is not None and folder:
        try:
            _guard.write_summary(folder)
        except OSError as e:  # at exit: say so, never raise over the process's own exit
            _guard.log.warning("flexfix replay guard: could not write %s=%s: %s", STATS_ENV, folder, e)


def _vllm_version() -> str:
    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return "not installed"
