"""Every tensor a captured graph can read, reached from what the step hands it, each with its field path.

vLLM hands a FULL CUDA graph its metadata through the forward context, not as arguments: a dict of layer
name -> attention metadata (a dataclass), which holds tensors, a ``BlockMask`` (a plain object whose index
tensors are attributes), lists, dicts, nested metadata, and ``mask_mod`` closures whose cells hold more
tensors (``physical_to_logical``, ``doc_ids``).  :func:`leaves` walks all of it and yields
``(path, value)`` for each tensor and each Python scalar, the path naming the field as a reader would:
``FlexAttentionMetadata.block_mask.kv_indices``, ``FlexAttentionMetadata.block_mask.mask_mod.<physical_to_logical>``.

The walk never descends into ``torch.nn.Module`` (a closure over a layer would reach every weight, whose
addresses never move anyway), modules, classes or plain functions without closures, and visits each
object once (metadata objects point back at themselves).  A list or tuple of scalars is one scalar (a
per-request list of lengths changes at every step; its elements are not fields).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
from collections.abc import Iterator

import torch

__all__ = ["SCALARS", "leaves", "steps_and_leaves", "follow", "is_scalar"]

SCALARS = (bool, int, float, complex, str, bytes, enum.Enum, torch.dtype, torch.device, type(None))
MAX_DEPTH = 12
_OPAQUE = (torch.nn.Module, types.ModuleType, type, torch.Generator, torch.cuda.Stream, torch.cuda.Event)


def is_scalar(value: object) -> bool:
    if isinstance(value, SCALARS):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, SCALARS) for v in value)


def leaves(root: object, name: str) -> Iterator[tuple[str, object]]:
    """``(path, tensor or scalar)`` for everything reachable from ``root``, paths starting with ``name``."""
    for path, steps, value in steps_and_leaves(root, name):
        if not steps or steps[-1][0] != "len":
            yield path, value


def steps_and_leaves(root: object, name: str) -> Iterator[tuple[str, tuple, object]]:
    """As :func:`leaves`, with the steps that lead from ``root`` to each leaf (see :func:`follow`), and a
    ``len`` leaf for every dict, list and tuple on the way (so that a replay can tell the structure changed)."""
    yield from _walk(root, name, (), set(), 0)


def follow(obj: object, steps: tuple) -> object:
    """The object ``steps`` lead to from ``obj``; raises (AttributeError, KeyError, IndexError, TypeError,
    ValueError) where the structure no longer has that step."""
    for op, arg in steps:
        if op == "attr":
            obj = getattr(obj, arg)
        elif op == "item":
            obj = obj[arg]
        elif op == "cell":
            obj = obj.__closure__[arg].cell_contents
        elif op == "attr_item":  # a functools.partial's positional or keyword argument
            obj = getattr(obj, arg[0])[arg[1]]
        elif op == "len":
            return len(obj)
        else:  # "self" of a bound method
            obj = obj.__self__
    return obj


def _walk(obj: object, path: str, steps: tuple, seen: set[int], depth: int) -> Iterator[tuple[str, tuple, object]]:
    if isinstance(obj, torch.Tensor):
        yield path, steps, obj
        return
    if is_scalar(obj):
        yield path, steps, (tuple(obj) if isinstance(obj, list) else obj)
        return
    if depth >= MAX_DEPTH or id(obj) in seen or isinstance(obj, _OPAQUE):
        return
    seen.add(id(obj))
    if isinstance(obj, (dict, list, tuple)):
        yield f"{path}.__len__", (*steps, ("len", None)), len(obj)
    for sub, step, value in _children(obj):
        yield from _walk(value, f"{path}{sub}", (*steps, step), seen, depth + 1)


def _children(obj: object) -> Iterator[tuple[str, tuple, object]]:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield f".{f.name}", ("attr", f.name), getattr(obj, f.name, None)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield f"[{k!r}]", ("item", k), v
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        for k in obj._fields:
            yield f".{k}", ("attr", k), getattr(obj, k)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield f"[{i}]", ("item", i), v
    elif isinstance(obj, functools.partial):
        yield ".<func>", ("attr", "func"), obj.func
        for i, v in enumerate(obj.args):
            yield f".<arg{i}>", ("attr_item", ("args", i)), v
        for k, v in obj.keywords.items():
            yield f".<{k}>", ("attr_item", ("keywords", k)), v
    elif isinstance(obj, types.FunctionType):
        cells = obj.__closure__ or ()
        for i, (var, cell) in enumerate(zip(obj.__code__.co_freevars, cells)):
            try:
                yield f".<{var}>", ("cell", i), cell.cell_contents
            except ValueError:  # an empty cell
                continue
    elif isinstance(obj, types.MethodType):
        yield ".<self>", ("self", None), obj.__self__
    elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [s for s in getattr(cls, "__slots__", ()) if s not in ("__dict__", "__weakref__")]
        for k in dict.fromkeys(names):
            if hasattr(obj, k):
                yield f".{k}", ("attr", k), getattr(obj, k)
