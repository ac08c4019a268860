"""flexfix as a vLLM general plugin: patch the backend, and guard CUDA-graph replays, in every vLLM process.

vLLM loads the entry points of the ``vllm.general_plugins`` group in every engine-core
and worker process (``vllm.plugins.load_general_plugins``), which is what an in-notebook
``apply()`` cannot reach.  The plugin does nothing unless asked, so that installing flexfix changes
nothing by itself; two switches, independent of each other::

    FLEXFIX_PATCH=1 vllm serve <model> --attention-backend FLEX_ATTENTION   # the fix (vLLM 0.20.x)
    FLEXFIX_GUARD=error vllm serve <model> ...                             # the replay guard (any vLLM 0.20-0.26)

``FLEXFIX_PATCH``: ``1``/``true``/``yes``/``on`` patch, ``0``/``false``/``no``/``off`` or unset do not
(case and surrounding spaces ignored).  ``FLEXFIX_GUARD``: ``error``, ``eager`` or ``log`` install the
replay guard (:mod:`flexfix.guard`) in that mode; unset or ``0``: nothing is wrapped.  Any other value of
either stops vLLM's start with a ``ValueError`` naming it, since an operator who asked for the fix or the
guard must not run without it by a typo.  Once asked for, the patch never stops vLLM: on a release with
nothing to patch (0.19 and older, 0.21 and newer) or a layout flexfix does not know, it says so in one line
and vLLM starts as it is.

It logs through the logger ``vllm.flexfix``, a child of vLLM's own: vLLM's handler formats its lines like vLLM's
(level, time, file and line; on stdout by default) and ``VLLM_LOGGING_LEVEL`` / ``VLLM_CONFIGURE_LOGGING`` apply.
Each line starts with ``flexfix:``, so a server's log can be searched for it.
"""

from __future__ import annotations

import logging
import os

ENV = "FLEXFIX_PATCH"
logger = logging.getLogger("vllm.flexfix")
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def patch_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether ``FLEXFIX_PATCH`` asks for the patch; ValueError naming an unknown value."""
    raw = (os.environ if environ is None else environ).get(ENV, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{ENV}={raw!r} is not understood: use 1 to patch vLLM's FlexAttention backend, 0 not to")


def register() -> None:
    from flexfix import guard

    # A typo in FLEXFIX_GUARD, a FLEXFIX_GUARD_NOT_READ entry that is not Class.field, or a FLEXFIX_GUARD_STATS
    # folder this process cannot write into stops vLLM's start, before anything is patched.
    mode = guard.check_settings()
    if patch_requested():
        _patch()
    if mode is not None and guard.active() is None:  # vLLM may load its plugins more than once in a process
        guard.install(mode)
        # (not status(): it checks the settings again, probing FLEXFIX_GUARD_STATS's folder a second time)
        hooks = ", ".join(guard.hooks()) or "no graph runner found to hook"
        logger.info("flexfix: replay guard in %s mode in process %d (%s)", mode, os.getpid(), hooks)


def _patch() -> None:
    from flexfix.integration import vllm_patch

    if vllm_patch.is_patched():  # vLLM may load its plugins more than once in a process
        return
    try:
        kind = vllm_patch.release_class()
        if vllm_patch.apply(quiet=True):
            logger.info("flexfix: patched vLLM's FlexAttention backend in process %d", os.getpid())
        else:
            logger.info(
                "flexfix: %s is set, but %s: %s", ENV, vllm_patch._vllm_version(), vllm_patch.RELEASE_CLASSES[kind]
            )
    except Exception as e:  # noqa: BLE001 - the plugin never stops vLLM's start
        logger.warning("flexfix: %s is set, but vLLM was not patched (%s: %s)", ENV, type(e).__name__, e)
