"""flexfix as a vLLM general plugin: patch the backend in every vLLM process.

vLLM loads the entry points of the ``vllm.general_plugins`` group in every engine-core
and worker process (``vllm.plugins.load_general_plugins``), which is what an in-notebook
``apply()`` cannot reach.  The plugin only patches when ``FLEXFIX_PATCH`` is on, so that
installing flexfix changes nothing by itself::

    FLEXFIX_PATCH=1 vllm serve <model> --attention-backend FLEX_ATTENTION
    FLEXFIX_PATCH=1 python my_script.py            # LLM(...) with the default multiprocessing

``FLEXFIX_PATCH``: ``1``/``true``/``yes``/``on`` patch, ``0``/``false``/``no``/``off`` or unset do not
(case and surrounding spaces ignored); any other value stops vLLM's start with a ``ValueError`` naming
it, since an operator who asked for the fix must not get the unpatched engine by a typo.  Once asked
for, the plugin never stops vLLM: on a release with nothing to patch (0.19 and older, 0.21 and newer)
or a layout flexfix does not know, it says so in one line on stderr and vLLM starts as it is.
"""

from __future__ import annotations

import os
import sys

ENV = "FLEXFIX_PATCH"
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
    if not patch_requested():
        return
    from flexfix.integration import vllm_patch

    if vllm_patch.is_patched():  # vLLM may load its plugins more than once in a process
        return
    try:
        kind = vllm_patch.release_class()
        if vllm_patch.apply(quiet=True):
            print(f"flexfix: patched vLLM's FlexAttention backend in process {os.getpid()}", file=sys.stderr)
        else:
            print(
                f"flexfix: {ENV} is set, but {vllm_patch._vllm_version()}: {vllm_patch.RELEASE_CLASSES[kind]}",
                file=sys.stderr,
            )
    except Exception as e:  # noqa: BLE001 - the plugin never stops vLLM's start
        print(f"flexfix: {ENV} is set, but vLLM was not patched ({type(e).__name__}: {e})", file=sys.stderr)
