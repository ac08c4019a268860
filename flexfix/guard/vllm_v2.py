"""The guard on vLLM's model runner V2 (``vllm/v1/worker/gpu/``: 0.26's default for dense models, opt-in in
0.20 with ``VLLM_USE_V2_MODEL_RUNNER=1``).

V2 does not replay through ``CUDAGraphWrapper``: ``CudaGraphManager.capture`` records FULL graphs with the
forward context's mode set to NONE, and ``execute_model`` replays them with
``cudagraph_manager.run_fullgraph(batch_desc)``, which takes no arguments -- the step's metadata is a
local variable of ``execute_model`` and nothing else.  So:

* capture: :func:`install` wraps ``CudaGraphManager.capture`` and, through it, the ``create_forward_fn``
  factory it is given; for each FULL descriptor the last ``forward_fn`` the factory makes (0.26 makes one
  for warm-up and a fresh one to capture; 0.20 one) is snapshotted from its closure (``attn_metadata``,
  ``slot_mappings``), the only place the capture's metadata lives;
* replay: ``ModelCudaGraphManager.run_fullgraph`` is wrapped; the step's metadata is read from the calling
  ``execute_model`` frame (``attn_metadata``, ``slot_mappings_by_layer``) -- a frame lookup, because V2
  hands it to no function before the replay; if that frame is not found the replay is counted as unguarded;
* eager: the model runs without the graph under a forward context of mode NONE, with the step's metadata,
  as ``execute_model`` itself runs a step that has no graph.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from flexfix.guard import vllm_metadata
from flexfix.guard.replay_guard import ReplayGuard

__all__ = ["GraphKey", "install", "uninstall", "installed"]

_ORIGINALS = "_flexfix_guard_originals"
MODULE = "vllm.v1.worker.gpu.cudagraph_utils"


@dataclass(frozen=True)
class GraphKey:
    owner: int
    descriptor: object

    def __str__(self) -> str:
        return f"FULL {self.descriptor}"


def _module():
    try:
        import importlib

        return importlib.import_module(MODULE)
    except ImportError:
        return None


def install(guard_of) -> bool:
    module = _module()
    if module is None or not hasattr(module, "CudaGraphManager") or hasattr(module, _ORIGINALS):
        return False
    base, model_manager = module.CudaGraphManager, getattr(module, "ModelCudaGraphManager", None)
    if model_manager is None:
        return False
    originals = {"capture": base.capture, "run_fullgraph": model_manager.run_fullgraph}

    def capture(self, create_forward_fn, *args: Any, **kwargs: Any):
        guard: ReplayGuard | None = guard_of()
        if guard is None:
            return originals["capture"](self, create_forward_fn, *args, **kwargs)

        def watched(desc, *a: Any, **kw: Any):
            forward_fn = create_forward_fn(desc, *a, **kw)
            if _is_full(desc):
                free = _closure(forward_fn)
                roots = vllm_metadata.roots(free.get("attn_metadata"), free.get("slot_mappings"))
                guard.where.setdefault("attention backend", vllm_metadata.backends(roots))
                guard.captured(GraphKey(id(self), desc), roots, vllm_metadata.not_read_paths(roots))
            return forward_fn

        return originals["capture"](self, watched, *args, **kwargs)

    def run_fullgraph(self, desc):
        guard: ReplayGuard | None = guard_of()
        if guard is None or not guard.enabled:
            return originals["run_fullgraph"](self, desc)
        step = _execute_model_locals()
        if step is None or step.get("attn_metadata") is None:  # not found, or a dummy run without metadata
            guard.counts["replays_unguarded"] += 1
            return originals["run_fullgraph"](self, desc)
        roots = vllm_metadata.roots(step.get("attn_metadata"), step.get("slot_mappings_by_layer"))
        if guard.before_replay(GraphKey(id(self), desc), roots):
            return originals["run_fullgraph"](self, desc)
        return _run_eagerly(step)

    setattr(module, _ORIGINALS, (base, model_manager, originals))
    base.capture = capture
    model_manager.run_fullgraph = run_fullgraph
    return True


def uninstall() -> bool:
    module = _module()
    saved = getattr(module, _ORIGINALS, None) if module is not None else None
    if saved is None:
        return False
    base, model_manager, originals = saved
    base.capture = originals["capture"]
    model_manager.run_fullgraph = originals["run_fullgraph"]
    delattr(module, _ORIGINALS)
    return True


def installed() -> bool:
    module = _module()
    return module is not None and hasattr(module, _ORIGINALS)


def _is_full(desc) -> bool:
    mode = getattr(desc, "cg_mode", None)
    return getattr(mode, "name", None) == "FULL"


def _closure(fn) -> dict[str, object]:
    cells = getattr(fn, "__closure__", None) or ()
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:
            continue
    return out


def _execute_model_locals() -> dict[str, Any] | None:
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return None
        if frame.f_code.co_name == "execute_model" and "attn_metadata" in frame.f_locals:
            return dict(frame.f_locals)
        frame = frame.f_back
    return None


def _run_eagerly(step: dict[str, Any]):
    from vllm.config import CUDAGraphMode
    from vllm.forward_context import set_forward_context

    runner, batch = step["self"], step["input_batch"]
    with set_forward_context(
        step["attn_metadata"],
        runner.vllm_config,
        num_tokens=batch.num_tokens_after_padding,
        cudagraph_runtime_mode=CUDAGraphMode.NONE,
        num_tokens_across_dp=step.get("num_tokens_across_dp"),
        slot_mapping=step.get("slot_mappings_by_layer"),
    ):
        return runner.model(**step["model_inputs"])
