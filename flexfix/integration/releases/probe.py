"""What runs in the child of ``flexfix releases check-patch``: flexfix's patch and plugin on one release's module.

The child's ``PYTHONPATH`` starts with the folder one release's wheel was installed into, so ``import vllm`` is that
release; :func:`probe_patch` then puts :mod:`flexfix.integration.vllm_patch` and
:mod:`flexfix.integration.vllm_plugin` through their paces and records every step's value or exception, and
``python -m flexfix.integration.releases.probe`` prints the result as one marked JSON line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PROBE_MARKER", "probe_patch", "error_line"]

PROBE_MARKER = "FLEXFIX_PROBE_JSON "


@contextlib.contextmanager
def _plugin_log():
    """The lines the plugin logs (its logger ``vllm.flexfix``, INFO and above) while the block runs."""
    import logging

    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("vllm.flexfix")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def error_line(e: BaseException) -> str:
    """``Type: last line of the message``."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _copy_semantics(copy: Callable) -> dict[str, Any]:
    """What ``copy(dst, src)`` does with a [2, 3] source and a [4, 8] destination (filled with -1)."""
    import torch

    dst = torch.full((4, 8), -1, dtype=torch.int32)
    src = torch.arange(1, 7, dtype=torch.int32).reshape(2, 3)
    out = copy(dst, src)
    return {
        "shape": list(out.shape),
        "strides": list(out.stride()),
        "values_equal": bool(torch.equal(out, src)),
        "destination_corner_equal": bool(torch.equal(dst[:2, :3], src)),
        "same_storage": out.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr(),
    }


def _supports_batch_invariance(backend: type) -> bool | None:
    """``backend.supports_batch_invariance()``; None where the backend has no such method (vLLM 0.19 and older)."""
    method = getattr(backend, "supports_batch_invariance", None)
    return None if method is None else bool(method())


def _check_cycle(vllm_patch) -> dict[str, Any]:
    """``vllm_patch.check_cycle()`` (what notebook 02 shows) on this release: its rows, or the error it raised.
    Recorded for information; it is not one of the checks :func:`expectation_gaps` makes."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            rows = vllm_patch.check_cycle()
    except Exception as e:  # noqa: BLE001 - recorded
        return {"check_cycle": None, "check_cycle_error": error_line(e)}
    return {"check_cycle": {r["check"]: r["value"] for r in rows}, "check_cycle_error": None}


def probe_patch() -> dict[str, Any]:
    """In this process: import the backend and put flexfix's vllm_patch and the plugin through their paces.  Every
    step's exception is recorded (``errors``), never raised."""
    import importlib
    from importlib import metadata

    result: dict[str, Any] = {"errors": {}}

    def step(key: str, fn: Callable[[], Any]) -> None:
        try:
            result[key] = fn()
        except Exception as e:  # noqa: BLE001 - recorded, this is what the check is for
            result[key] = None
            result["errors"][key] = error_line(e)

    try:
        import vllm

        module = importlib.import_module("vllm.v1.attention.backends.flex_attention")
    except Exception as e:  # noqa: BLE001 - an unimportable release is a result
        return {**result, "import_error": error_line(e)}
    from flexfix.integration import vllm_patch, vllm_plugin

    result.update(
        import_error=None,
        vllm_seen=metadata.version("vllm"),
        vllm_file=str(Path(vllm.__file__).parent),
    )
    backend = module.FlexAttentionBackend
    original_copy = module.__dict__.get("copy_to_persistent")
    original_bi = backend.__dict__.get("supports_batch_invariance")
    result["bi_override_defined"] = original_bi is not None
    result["bi_method_present"] = hasattr(backend, "supports_batch_invariance")
    step("release_class", vllm_patch.release_class)
    step("status_before", vllm_patch.status)
    step("bi_before", lambda: _supports_batch_invariance(backend))
    step("copy_before", lambda: None if original_copy is None else _copy_semantics(original_copy))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        step("apply", vllm_patch.apply)
    result["apply_output"] = printed.getvalue().splitlines()
    step("status_after", vllm_patch.status)
    step(
        "copy_after",
        lambda: _copy_semantics(module.copy_to_persistent) if hasattr(module, "copy_to_persistent") else None,
    )
    step("bi_after", lambda: _supports_batch_invariance(backend))
    step("revert", vllm_patch.revert)
    result["revert_restored_copy"] = module.__dict__.get("copy_to_persistent") is original_copy
    result["revert_restored_bi"] = backend.__dict__.get("supports_batch_invariance") is original_bi
    step("bi_reverted", lambda: _supports_batch_invariance(backend))
    result.update(_check_cycle(vllm_patch))
    os.environ["FLEXFIX_PATCH"] = "1"
    with _plugin_log() as said:
        step("plugin_register", vllm_plugin.register)
    result["plugin_raised"] = "plugin_register" in result["errors"]
    result["plugin_log"] = said
    result["plugin_patched"] = vllm_patch.is_patched()
    vllm_patch.revert()
    return result


def _probe_main() -> int:
    """The child: probe, then print the result as one marked JSON line."""
    result = probe_patch()
    print(PROBE_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main())
