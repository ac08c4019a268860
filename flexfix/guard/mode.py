"""``FLEXFIX_GUARD``: which replay guard, if any, a process runs.

* ``error``: before a CUDA graph replays with metadata that moved since its capture, raise
  :class:`flexfix.guard.ReplayGuardError` naming the field: no replay, so no illegal memory access and no
  wrong token;
* ``eager``: run that step without the graph (the runnable the graph was captured from), so the answer is
  right; count it and log each (graph, field) once;
* ``log``: replay anyway; count and log.

Unset, empty, ``0``, ``off`` or ``no``: no guard, and nothing of vLLM is wrapped.  Any other value is
refused by name: an operator who asked for a guard must not run without one by a typo.  Independent of
``FLEXFIX_PATCH``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["ENV", "MODES", "requested_mode"]

ENV = "FLEXFIX_GUARD"
MODES = ("error", "eager", "log")
_OFF = ("", "0", "off", "no", "false", "none")


def requested_mode(environ: Mapping[str, str] | None = None) -> str | None:
    """The mode ``FLEXFIX_GUARD`` asks for, or None; ValueError naming an unknown value."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    value = raw.strip().lower()
    if value in MODES:
        return value
    if value in _OFF:
        return None
    raise ValueError(
        f"{ENV}={raw!r} is not understood: use error (refuse the replay), eager (run the step without the graph) "
        "or log (count and log only); unset or 0 for no guard"
    )
