"""The patched FlexAttention backend for vLLM 0.20.0: the two changes of PR #40842, at run time.

``apply()`` patches ``vllm.v1.attention.backends.flex_attention``:

1. the module-level ``copy_to_persistent`` becomes :func:`flexfix.persistent.copy_to_persistent`
   (copy into a slice of the persistent buffer: the strides never change);
2. ``FlexAttentionBackend.supports_batch_invariance()`` returns True.

``revert()`` puts the exact original objects back; ``patched()`` is a context manager
that restores the previous state on exit, like ``batch_invariant_ops.set_batch_invariant_mode``.
On a vLLM that already has the fix (0.21.0 and later) nothing is patched: the fix is
detected by behaviour (its copy returns a view with the destination's strides).

vLLM runs its engine core in another process by default; the ``vllm.general_plugins``
entry point (:mod:`flexfix.vllm_plugin`, active when ``FLEXFIX_PATCH=1``) applies the
patch there too.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from types import ModuleType
from typing import Any

from flexfix.persistent import copy_to_persistent

__all__ = ["MODULE", "apply", "revert", "patched", "is_patched", "status", "fixed_upstream"]

MODULE = "vllm.v1.attention.backends.flex_attention"
REQUIRED = ("copy_to_persistent", "FlexAttentionBackend")
INSTALL_HINT = "flexfix.vllm_patch needs vLLM: pip install vllm==0.20.0 (or run `make install`)"
_MISSING = object()

# The originals, saved by apply() and put back by revert(); None while unpatched.
_saved: dict[str, Any] | None = None


def _module(module: ModuleType | None = None) -> ModuleType:
    if module is not None:
        return module
    try:
        importlib.import_module("vllm")
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return importlib.import_module(MODULE)


def _check_layout(mod: ModuleType) -> None:
    missing = [name for name in REQUIRED if not hasattr(mod, name)]
    if not missing and not hasattr(mod.FlexAttentionBackend, "supports_batch_invariance"):
        missing.append("FlexAttentionBackend.supports_batch_invariance")
    if missing:
        raise RuntimeError(
            f"{mod.__name__} does not have {', '.join(missing)}: this is not the layout "
            "flexfix patches (vLLM 0.20.0); refusing to patch"
        )


def _probe_keeps_strides(copy) -> bool:
    import torch

    dst = torch.zeros(4, 8, dtype=torch.int32)
    src = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    return tuple(copy(dst, src).stride()) == tuple(dst.stride())


def fixed_upstream(module: ModuleType | None = None) -> bool:
    """Does this vLLM's own copy keep the destination's strides (the fix of PR #40842)?"""
    mod = _module(module)
    _check_layout(mod)
    original = _saved["copy_to_persistent"] if _saved is not None else mod.copy_to_persistent
    return _probe_keeps_strides(original)


def is_patched() -> bool:
    return _saved is not None


def apply(module: ModuleType | None = None) -> bool:
    """Patch the backend; True if this call patched, False if there was nothing to do."""
    global _saved
    mod = _module(module)
    _check_layout(mod)
    if _saved is not None:
        return False
    if fixed_upstream(mod):
        print(f"flexfix: {_vllm_version()} already has the fix of PR #40842; nothing to patch")
        return False
    backend = mod.FlexAttentionBackend
    _saved = {
        "module": mod,
        "copy_to_persistent": mod.copy_to_persistent,
        "supports_batch_invariance": backend.__dict__.get("supports_batch_invariance", _MISSING),
    }
    mod.copy_to_persistent = copy_to_persistent
    backend.supports_batch_invariance = classmethod(_supports_batch_invariance)
    return True


def _supports_batch_invariance(cls) -> bool:
    return True


def revert() -> bool:
    """Put the original objects back; True if this call reverted, False if unpatched."""
    global _saved
    if _saved is None:
        return False
    mod, saved = _saved["module"], _saved
    mod.copy_to_persistent = saved["copy_to_persistent"]
    if saved["supports_batch_invariance"] is _MISSING:
        del mod.FlexAttentionBackend.supports_batch_invariance
    else:
        mod.FlexAttentionBackend.supports_batch_invariance = saved["supports_batch_invariance"]
    _saved = None
    return True


@contextmanager
def patched(module: ModuleType | None = None) -> Iterator[None]:
    """Patch for the duration of the block, then restore the previous state."""
    did = apply(module)
    try:
        yield
    finally:
        if did:
            revert()


def _vllm_version() -> str:
    try:
        return f"vLLM {metadata.version('vllm')}"
    except metadata.PackageNotFoundError:
        return "vLLM (version unknown)"


def status(module: ModuleType | None = None) -> dict[str, Any]:
    """vLLM version, whether it is fixed upstream, whether flexfix's patch is on."""
    mod = _module(module)
    _check_layout(mod)
    return {
        "vllm": _vllm_version(),
        "fixed_upstream": fixed_upstream(mod),
        "patched": is_patched(),
        "copy_to_persistent": f"{mod.copy_to_persistent.__module__}.{mod.copy_to_persistent.__qualname__}",
        "supports_batch_invariance": bool(mod.FlexAttentionBackend.supports_batch_invariance()),
    }


def sources(module: ModuleType | None = None) -> tuple[str, str]:
    """The source of the installed vLLM's original copy and of flexfix's fixed one."""
    import inspect

    mod = _module(module)
    original = _saved["copy_to_persistent"] if _saved is not None else mod.copy_to_persistent
    return inspect.getsource(original), inspect.getsource(copy_to_persistent)


def check_cycle(module: ModuleType | None = None) -> list[dict[str, Any]]:
    """Apply, probe, revert, probe again: one row per check with its observed value."""
    mod = _module(module)
    was = is_patched()
    revert()
    original_copy = mod.copy_to_persistent
    original_bi = mod.FlexAttentionBackend.supports_batch_invariance()
    rows = [
        {
            "check": "before: copy keeps the destination's strides",
            "value": _probe_keeps_strides(mod.copy_to_persistent),
        },
        {"check": "before: supports_batch_invariance()", "value": bool(original_bi)},
    ]
    first, second = apply(mod), apply(mod)
    rows += [
        {"check": "apply() patched", "value": first},
        {"check": "second apply() did nothing", "value": not second},
        {"check": "after: copy keeps the destination's strides", "value": _probe_keeps_strides(mod.copy_to_persistent)},
        {
            "check": "after: supports_batch_invariance()",
            "value": bool(mod.FlexAttentionBackend.supports_batch_invariance()),
        },
    ]
    reverted, again = revert(), revert()
    rows += [
        {"check": "revert() reverted", "value": reverted},
        {"check": "second revert() did nothing", "value": not again},
        {"check": "reverted copy is the original object", "value": mod.copy_to_persistent is original_copy},
        {
            "check": "reverted supports_batch_invariance() is the original value",
            "value": mod.FlexAttentionBackend.supports_batch_invariance() == original_bi,
        },
    ]
    if was:
        apply(mod)
    return rows
