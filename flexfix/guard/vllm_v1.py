"""The guard on vLLM's ``CUDAGraphWrapper`` (the V1 model runner: vLLM 0.20's default, 0.26 with
``VLLM_USE_V2_MODEL_RUNNER=0``).

The V1 runner wraps the whole model in one ``CUDAGraphWrapper(runtime_mode=FULL)``; its ``__call__``
captures a graph the first time it sees a batch descriptor and replays it afterwards
(``vllm/compilation/cuda_graph.py``, the same in 0.20.0 and 0.26.0).  :func:`install` replaces that method
on the class (every wrapper, made before or after, looks it up there) by one that, for FULL wrappers only,

* at capture: snapshots the model's keyword arguments and the forward context's ``attn_metadata`` and
  ``slot_mapping`` *before* the capture runs (the forward may rebuild a block mask);
* at replay: compares the step's snapshot with the capture's, then replays, refuses
  (:class:`flexfix.guard.ReplayGuardError`) or runs ``self.runnable`` -- the model without the graph, its
  inner PIECEWISE wrappers passing through because the context says FULL -- as the guard decides.

PIECEWISE wrappers are passed through untouched: attention runs outside their graphs.  vLLM's own DEBUG
check (``VLLM_LOGGING_LEVEL=DEBUG``) compares the ``data_ptr()`` of *positional* tensor arguments only; the
runner calls the FULL wrapper with keyword arguments, so that check compares two empty lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flexfix.guard import vllm_metadata
from flexfix.guard.replay_guard import ReplayGuard

__all__ = ["GraphKey", "install", "uninstall", "installed"]

_ORIGINAL = "_flexfix_guard_original_call"


@dataclass(frozen=True)
class GraphKey:
    """One captured graph: its wrapper (by id), runtime mode and vLLM's batch descriptor."""

    owner: int
    mode: str
    descriptor: object

    def __str__(self) -> str:
        return f"{self.mode} {self.descriptor}"


def install(guard_of) -> bool:
    """Wrap ``CUDAGraphWrapper.__call__``; ``guard_of()`` returns the active guard (or None).  False if vLLM
    has no ``CUDAGraphWrapper`` or it is wrapped already."""
    try:
        from vllm.compilation.cuda_graph import CUDAGraphWrapper
        from vllm.config import CUDAGraphMode
        from vllm.forward_context import get_forward_context, is_forward_context_available
    except ImportError:
        return False
    if _ORIGINAL in CUDAGraphWrapper.__dict__:
        return False
    original = CUDAGraphWrapper.__call__
    full = CUDAGraphMode.FULL

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Every wrapper passes here, PIECEWISE ones several times a step: leave them as soon as possible.
        guard: ReplayGuard | None = guard_of()
        if guard is None or not guard.enabled or self.runtime_mode != full or not is_forward_context_available():
            return original(self, *args, **kwargs)
        context = get_forward_context()
        descriptor = context.batch_descriptor
        if context.cudagraph_runtime_mode != full or descriptor is None:
            return original(self, *args, **kwargs)
        entry = self.concrete_cudagraph_entries.get(descriptor)
        capturing = entry is None or entry.cudagraph is None
        if context.attn_metadata is None:  # a dummy run: no metadata to hold to
            guard.counts["captures_without_metadata" if capturing else "replays_unguarded"] += 1
            return original(self, *args, **kwargs)
        key = GraphKey(id(self), "FULL", descriptor)
        roots = vllm_metadata.roots(context.attn_metadata, getattr(context, "slot_mapping", None), kwargs)
        if capturing:
            guard.where.setdefault("attention backend", vllm_metadata.backends(roots))
            guard.facts.setdefault("vllm_debug_address_check", bool(vars(self).get("is_debugging_mode", False)))
            guard.captured(key, roots, vllm_metadata.not_read_paths(roots))
            return original(self, *args, **kwargs)
        if guard.before_replay(key, roots):
            return original(self, *args, **kwargs)
        return self.runnable(*args, **kwargs)

    __call__.__wrapped__ = original
    setattr(CUDAGraphWrapper, _ORIGINAL, original)
    CUDAGraphWrapper.__call__ = __call__
    return True


def uninstall() -> bool:
    try:
        from vllm.compilation.cuda_graph import CUDAGraphWrapper
    except ImportError:
        return False
    original = CUDAGraphWrapper.__dict__.get(_ORIGINAL)
    if original is None:
        return False
    CUDAGraphWrapper.__call__ = original
    delattr(CUDAGraphWrapper, _ORIGINAL)
    return True


def installed() -> bool:
    try:
        from vllm.compilation.cuda_graph import CUDAGraphWrapper
    except ImportError:
        return False
    return _ORIGINAL in CUDAGraphWrapper.__dict__
