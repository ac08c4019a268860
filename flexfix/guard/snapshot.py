"""One graph's view of its inputs at capture, and what differs at a replay.

A :class:`Snapshot` maps each field path (see :mod:`flexfix.guard.walk`) to the :class:`Layout` of its
tensor or to its Python scalar.  :func:`compare` lists the differences between the snapshot taken when a
graph was captured and the one taken just before it replays, each a :class:`Finding`:

* an **alarm** when the replay would read other memory than the step's metadata holds: a tensor's pointer,
  addressing strides (see :func:`flexfix.guard.layout.layout_changes`), storage offset, dtype, device or
  rank changed; a tensor present at capture is gone; a tensor appeared where capture saw a scalar or
  nothing; or a *decision* scalar changed -- a ``bool``, ``str``, enum, or ``None`` becoming a value or
  back: the capture took one branch and the replay replays it whatever the flag now says (vLLM #40961);
* **information**, never an alarm: a shape change (the fixed copy changes shapes every step; the kernel's
  loop bound is data), and a changed number (an ``int`` or ``float``, or a list of them).  vLLM captures
  FULL graphs on dummy sequences one token long and replays them with the step's real lengths, so
  ``max_seq_len`` and its kin differ at almost every replay of a correct backend; a backend whose kernel
  launch *uses* such a number (a grid size) is exactly as wrong as one using a stale stride, but the guard
  cannot tell the two apart from the outside, so it counts and reports them and leaves the judgement to you.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from flexfix.guard.layout import Layout, layout_changes, layout_of
from flexfix.guard.walk import leaves

__all__ = ["Snapshot", "Finding", "take", "compare", "MAX_LEAVES"]

MAX_LEAVES = 20_000  # a walk that reaches this many leaves has wandered out of the metadata


@dataclass(frozen=True)
class Snapshot:
    fields: Mapping[str, object]  # path -> Layout (a tensor) or the scalar itself
    not_read: frozenset[str] = frozenset()  # paths no captured kernel reads: their changes are information

    @property
    def tensors(self) -> int:
        return sum(isinstance(v, Layout) for v in self.fields.values())

    @property
    def scalars(self) -> int:
        return len(self.fields) - self.tensors


@dataclass(frozen=True)
class Finding:
    """One difference between capture and replay of one graph, at one field path."""

    path: str
    kind: str  # pointer / strides / storage_offset / dtype / device / rank / missing / appeared / decision
    #            (alarms); shape / number (information)
    capture: object
    replay: object
    alarm: bool
    detail: str = ""

    def line(self) -> str:
        text = f"{self.path}: {self.kind} {_show(self.capture)} -> {_show(self.replay)}"
        return f"{text} ({self.detail})" if self.detail else text


def take(
    roots: Mapping[str, object], devices: Iterable[str] | None = ("cuda",), not_read: Iterable[str] = ()
) -> Snapshot:
    """The snapshot of everything reachable from ``roots`` (name -> object).  ``devices``: only tensors on
    these device types count (a CUDA graph reads no CPU tensor); ``None``: every tensor (CPU analogs).
    ``not_read``: paths known to be read by no captured kernel (see :mod:`flexfix.guard.vllm_metadata`)."""
    wanted = None if devices is None else set(devices)
    fields: dict[str, object] = {}
    for name, root in roots.items():
        for path, value in leaves(root, name):
            if isinstance(value, torch.Tensor):
                if wanted is not None and value.device.type not in wanted:
                    continue
                fields[path] = layout_of(value)
            else:
                fields[path] = value
            if len(fields) >= MAX_LEAVES:
                raise RuntimeError(f"flexfix replay guard: more than {MAX_LEAVES} fields under {name!r}")
    return Snapshot(fields, frozenset(not_read))


def compare(capture: Snapshot, replay: Snapshot) -> list[Finding]:
    found: list[Finding] = []
    for path in dict.fromkeys([*capture.fields, *replay.fields]):
        before = capture.fields.get(path, _ABSENT)
        after = replay.fields.get(path, _ABSENT)
        if isinstance(before, Layout) and isinstance(after, Layout):
            changes = layout_changes(before, after)
            unread = path in capture.not_read
            for kind, a, b in changes:
                note = _shape_note(before, after) + ("; read by no captured kernel" if unread else "")
                found.append(Finding(path, kind, a, b, not unread, note))
            if not changes and before.shape != after.shape:
                found.append(Finding(path, "shape", list(before.shape), list(after.shape), False))
        elif isinstance(before, Layout):
            found.append(Finding(path, "missing", before.describe(), _show(after), True, "a captured tensor is gone"))
        elif isinstance(after, Layout):
            found.append(Finding(path, "appeared", _show(before), after.describe(), True, "not read by the capture"))
        elif not _same(before, after):
            decision = _is_decision(before) or _is_decision(after) or type(before) is not type(after)
            found.append(Finding(path, "decision" if decision else "number", before, after, decision))
    return found


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _shape_note(a: Layout, b: Layout) -> str:
    ptr = f"pointer {a.ptr:#x} unchanged" if a.ptr == b.ptr else f"pointer {a.ptr:#x} -> {b.ptr:#x}"
    shape = f"shape {list(a.shape)} -> {list(b.shape)}" if a.shape != b.shape else f"shape {list(a.shape)}"
    return f"{ptr}, {shape}"


def _same(a: object, b: object) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - an exotic __eq__: compare identities
        return a is b


def _is_decision(value: object) -> bool:
    if isinstance(value, tuple):
        return any(isinstance(v, _DECISIONS) for v in value)
    return value is None or value is _ABSENT or isinstance(value, _DECISIONS)


_DECISIONS = (bool, str, bytes, enum.Enum)


def _show(value: object) -> str:
    return repr(value) if not isinstance(value, Layout) else value.describe()
