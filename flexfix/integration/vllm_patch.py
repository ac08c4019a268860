"""The patched FlexAttention backend for vLLM 0.20.x: the two changes of PR #40842, at run time.

``apply()`` patches ``vllm.v1.attention.backends.flex_attention``:

1. the module-level ``copy_to_persistent`` becomes :func:`flexfix.mechanism.persistent.copy_to_persistent`
   (copy into a slice of the persistent buffer: the strides never change);
2. ``FlexAttentionBackend.supports_batch_invariance()`` returns True.

``revert()`` puts the exact original objects back; ``patched()`` is a context manager
that restores the previous state on exit, like ``batch_invariant_ops.set_batch_invariant_mode``.
Both are safe to call from several threads at once (one lock), and the originals are kept on the
patched module itself, so what vLLM shipped is always known, whoever asks.

What a release needs (:func:`release_class`), judged from the module, never from flexfix's own code:

* ``"as_strided"``: vLLM 0.20.0, 0.20.1, 0.20.2 -- the bug; ``apply()`` patches;
* ``"sliced"``: 0.21.0-0.33.0 (the releases read) -- fixed upstream (its copy keeps the destination's strides);
  ``apply()`` does nothing;
* ``"no_persistent_buffers"``: 0.15.0-0.19.1 (the releases read) -- FlexAttention has no full-CUDA-graph buffers,
  nothing to misread; ``apply()`` does nothing;
* anything else is refused (``RuntimeError``): flexfix does not patch a layout it does not know.

vLLM runs its engine core in another process by default; the ``vllm.general_plugins``
entry point (:mod:`flexfix.integration.vllm_plugin`, active when ``FLEXFIX_PATCH=1``) applies the
patch there too.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from types import ModuleType
from typing import Any

from flexfix.mechanism.persistent import copy_to_persistent

__all__ = [
    "MODULE",
    "RELEASE_CLASSES",
    "apply",
    "revert",
    "patched",
    "is_patched",
    "status",
    "fixed_upstream",
    "release_class",
    "sources",
    "check_cycle",
]

MODULE = "vllm.v1.attention.backends.flex_attention"
INSTALL_HINT = "flexfix.integration.vllm_patch needs vLLM: pip install vllm==0.20.0 (or run `make install`)"
RELEASE_CLASSES = {
    "as_strided": "affected: copies with as_strided (vLLM 0.20.0-0.20.2); flexfix patches it",
    "sliced": "fixed upstream: copies into a slice (vLLM PR #40842, as in vLLM 0.21.0-0.33.0, read from their wheels); "
    "nothing to patch",
    "no_persistent_buffers": "not affected: no persistent FlexAttention buffers "
    "(as in vLLM 0.15.0-0.19.1, read from their wheels); nothing to patch",
}
_MISSING = object()
# Where apply() keeps vLLM's own objects, on the patched module itself.
_ORIGINALS = "_flexfix_originals"
_lock = threading.RLock()

# The module apply() patched; None while unpatched.
_patched_module: ModuleType | None = None


def _module(module: ModuleType | None = None) -> ModuleType:
    if module is not None:
        return module
    try:
        importlib.import_module("vllm")
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return importlib.import_module(MODULE)


def _is_flexfix(obj: Any) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] == "flexfix"


def _originals(mod: ModuleType) -> dict[str, Any]:
    """vLLM's own ``copy_to_persistent`` and ``supports_batch_invariance`` of ``mod``."""
    saved = mod.__dict__.get(_ORIGINALS)
    if saved is not None:
        return saved
    copy = mod.__dict__.get("copy_to_persistent", _MISSING)
    if copy is not _MISSING and _is_flexfix(copy):
        raise RuntimeError(
            f"{mod.__name__}.copy_to_persistent is flexfix's function, put there outside flexfix's vllm_patch "
            "(no record of vLLM's original): cannot tell what this vLLM ships; re-import vLLM"
        )
    backend = mod.__dict__.get("FlexAttentionBackend")
    return {
        "copy_to_persistent": copy,
        "supports_batch_invariance": _MISSING
        if backend is None
        else backend.__dict__.get("supports_batch_invariance", _MISSING),
    }


def _probe_keeps_strides(copy) -> bool:
    import torch

    dst = torch.zeros(4, 8, dtype=torch.int32)
    src = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    return tuple(copy(dst, src).stride()) == tuple(dst.stride())


def release_class(module: ModuleType | None = None) -> str:
    """``"as_strided"``, ``"sliced"`` or ``"no_persistent_buffers"`` (see the module docstring), from vLLM's
    own objects; ``RuntimeError`` for a layout flexfix does not know."""
    mod = _module(module)
    with _lock:
        if not hasattr(mod, "FlexAttentionBackend"):
            raise RuntimeError(
                f"{mod.__name__} has no FlexAttentionBackend: this is not a layout flexfix knows; refusing to patch"
            )
        copy = _originals(mod)["copy_to_persistent"]
        if copy is _MISSING:
            return "no_persistent_buffers"
        if not callable(copy):
            raise RuntimeError(f"{mod.__name__}.copy_to_persistent is not a function ({type(copy).__name__})")
        try:
            keeps = _probe_keeps_strides(copy)
        except Exception as e:  # noqa: BLE001 - an unknown copy is refused, with what it did
            raise RuntimeError(
                f"{mod.__name__}.copy_to_persistent failed flexfix's probe ({type(e).__name__}: {e}): "
                "not a layout flexfix knows; refusing to patch"
            ) from e
        return "sliced" if keeps else "as_strided"


def fixed_upstream(module: ModuleType | None = None) -> bool:
    """Does this vLLM's own copy keep the destination's strides (the fix of PR #40842)?"""
    return release_class(module) == "sliced"


def is_patched() -> bool:
    return _patched_module is not None


def apply(module: ModuleType | None = None, *, quiet: bool = False) -> bool:
    """Patch the backend; True if this call patched, False if there was nothing to do (already patched,
    fixed upstream, or a release without persistent buffers: each says so in one line unless ``quiet``)."""
    global _patched_module
    mod = _module(module)
    with _lock:
        kind = release_class(mod)
        if _patched_module is not None:
            if _patched_module is not mod:
                raise RuntimeError(
                    f"flexfix already patched another module ({_patched_module.__name__}); revert() it first"
                )
            return False
        if kind != "as_strided":
            if not quiet:
                print(f"flexfix: {_vllm_version()}: {RELEASE_CLASSES[kind]}")
            return False
        originals = _originals(mod)
        mod.__dict__[_ORIGINALS] = originals
        mod.copy_to_persistent = copy_to_persistent
        mod.FlexAttentionBackend.supports_batch_invariance = classmethod(_supports_batch_invariance)
        _patched_module = mod
        return True


def _supports_batch_invariance(cls) -> bool:
    return True


def revert() -> bool:
    """Put the original objects back; True if this call reverted, False if unpatched."""
    global _patched_module
    with _lock:
        mod = _patched_module
        if mod is None:
            return False
        originals = mod.__dict__.pop(_ORIGINALS)
        mod.copy_to_persistent = originals["copy_to_persistent"]
        backend = mod.FlexAttentionBackend
        if originals["supports_batch_invariance"] is _MISSING:
            if "supports_batch_invariance" in backend.__dict__:
                del backend.supports_batch_invariance
        else:
            backend.supports_batch_invariance = originals["supports_batch_invariance"]
        _patched_module = None
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
    """vLLM version, its release class, whether it is fixed upstream, whether flexfix's patch is on."""
    mod = _module(module)
    with _lock:
        kind = release_class(mod)
        copy = getattr(mod, "copy_to_persistent", None)
        supports_bi = getattr(mod.FlexAttentionBackend, "supports_batch_invariance", None)
        return {
            "vllm": _vllm_version(),
            "release_class": kind,
            "fixed_upstream": kind == "sliced",
            "patched": _patched_module is mod,
            "copy_to_persistent": None if copy is None else f"{copy.__module__}.{copy.__qualname__}",
            # None: this release's backend has no such method (0.15.0-0.19.1, the releases read)
            "supports_batch_invariance": bool(supports_bi()) if supports_bi is not None else None,
        }


def sources(module: ModuleType | None = None) -> tuple[str, str]:
    """The source of the installed vLLM's original copy and of flexfix's fixed one."""
    import inspect

    mod = _module(module)
    with _lock:
        original = _originals(mod)["copy_to_persistent"]
    if original is _MISSING:
        raise RuntimeError(f"{mod.__name__} has no copy_to_persistent ({RELEASE_CLASSES['no_persistent_buffers']})")
    return inspect.getsource(original), inspect.getsource(copy_to_persistent)


def batch_invariance_sources(module: ModuleType | None = None) -> tuple[str, str]:
    """The second change of the fix, as sources: the ``supports_batch_invariance`` that the installed
    ``FlexAttentionBackend`` has without the patch (its own, or the one it inherits), and flexfix's."""
    import inspect

    mod = _module(module)
    with _lock:
        original = _originals(mod)["supports_batch_invariance"]
    if original is _MISSING:  # not overridden: the backend inherits its base class's answer
        for base in mod.FlexAttentionBackend.__mro__[1:]:
            if "supports_batch_invariance" in base.__dict__:
                original = base.__dict__["supports_batch_invariance"]
                break
    func = getattr(original, "__func__", original)
    return (inspect.getsource(func) if callable(func) else repr(func)), inspect.getsource(_supports_batch_invariance)


def check_cycle(module: ModuleType | None = None) -> list[dict[str, Any]]:
    """Apply, probe, revert, probe again: one row per check with its observed value."""
    mod = _module(module)
    with _lock:
        kind = release_class(mod)
        if kind != "as_strided":  # nothing to patch: the check is that apply() leaves it alone
            copy = getattr(mod, "copy_to_persistent", None)
            return [
                {"check": f"release class: {kind}", "value": True},
                {"check": "apply() did nothing", "value": apply(mod, quiet=True) is False},
                {"check": "copy_to_persistent unchanged", "value": getattr(mod, "copy_to_persistent", None) is copy},
            ]
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
            {
                "check": "after: copy keeps the destination's strides",
                "value": _probe_keeps_strides(mod.copy_to_persistent),
            },
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
