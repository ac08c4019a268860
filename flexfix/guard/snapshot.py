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
from flexfix.guard.walk import follow, steps_and_leaves

__all__ = ["Snapshot", "Finding", "take", "check", "compare", "MAX_LEAVES"]

MAX_LEAVES = 20_000  # a walk that reaches this many leaves has wandered out of the metadata


@dataclass(frozen=True)
class Snapshot:
    fields: Mapping[str, object]  # path -> Layout (a tensor) or the scalar itself
    not_read: frozenset[str] = frozenset()  # paths no captured kernel reads: left out of the comparison
    plan: tuple = ()  # (root, steps, path, kind, what the capture saw) per leaf: how check() finds it again
    root_names: tuple[str, ...] = ()
    tensors: int = 0
    scalars: int = 0


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
        show = _show if self.kind in ("decision", "number") else str  # a scalar as Python writes it
        text = f"{self.path}: {self.kind} {show(self.capture)} -> {show(self.replay)}"
        return f"{text} ({self.detail})" if self.detail else text


def take(
    roots: Mapping[str, object], devices: Iterable[str] | None = ("cuda",), not_read: Iterable[str] = ()
) -> Snapshot:
    """The snapshot of everything reachable from ``roots`` (name -> object).  ``devices``: only tensors on
    these device types count (a CUDA graph reads no CPU tensor); ``None``: every tensor (CPU analogs).
    ``not_read``: paths known to be read by no captured kernel (see :mod:`flexfix.guard.vllm_metadata`): left out."""
    wanted = None if devices is None else set(devices)
    skipped = frozenset(not_read)
    fields: dict[str, object] = {}
    plan: list[tuple] = []
    for name, root in roots.items():
        for path, steps, value in steps_and_leaves(root, name):
            if path in skipped:
                continue
            if isinstance(value, torch.Tensor):
                if wanted is not None and value.device.type not in wanted:
                    continue
                layout = layout_of(value)
                fields[path] = layout
                plan.append((name, steps, path, _TENSOR, (layout, _key(value))))
            elif steps and steps[-1][0] == "len":
                plan.append((name, steps, path, _LEN, value))
            else:
                fields[path] = value
                plan.append((name, steps, path, _SCALAR, value))
            if len(plan) >= MAX_LEAVES:
                raise RuntimeError(f"flexfix replay guard: more than {MAX_LEAVES} fields under {name!r}")
    tensors = sum(isinstance(v, Layout) for v in fields.values())
    return Snapshot(fields, frozenset(not_read), tuple(plan), tuple(roots), tensors, len(fields) - tensors)


_TENSOR, _LEN, _SCALAR = 0, 1, 2


def _key(t: torch.Tensor) -> tuple:
    """What a tensor's layout is compared by on the fast path: equal keys, equal layouts."""
    return (t.data_ptr(), t.stride(), t.storage_offset(), t.dtype, t.device, t.shape)


def check(capture: Snapshot, roots: Mapping[str, object]) -> list[Finding] | None:
    """:func:`compare` of ``capture`` with the step's ``roots``, the fast way: only along the leaves the capture
    reached (no walk, no snapshot), by code compiled for this capture's structure (:func:`_compiled`), a tensor
    compared as one tuple, and the findings of a leaf that differs in a way seen before taken from a memo (a
    persistent buffer's slice takes a handful of shapes; the replay's findings on it are the same each time).
    None where the step's structure differs from the capture's (a root, a field, a container's length): then
    take a snapshot and :func:`compare`."""
    if tuple(roots) != capture.root_names:
        return None
    probe, before, memo = _compiled(capture)
    try:
        differ = probe(roots, before)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None
    found: list[Finding] = []
    for i, value in differ:
        try:
            known = memo.get((i, value))
        except TypeError:  # an unhashable scalar: no memo
            known = None
        if known is None:
            known = _leaf_findings(capture.plan[i], value)
            if known is None:
                return None
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            try:
                memo[(i, value)] = known
            except TypeError:
                pass
        found += known
    return found


_MEMO_SIZE = 4096


def _leaf_findings(leaf: tuple, value: object) -> list[Finding] | None:
    """The findings at one leaf of the plan that the probe found different (``value``: a tensor's key, or the
    scalar); None where only a full walk can say (a length, a tensor where a scalar was)."""
    _, _, path, kind, was = leaf
    if kind == _TENSOR:
        ptr, stride, offset, dtype, device, shape = value
        return _tensor_findings(path, was[0], Layout(ptr, tuple(shape), tuple(stride), offset, dtype, device))
    if kind == _LEN or isinstance(value, torch.Tensor):
        return None  # a changed length, or a tensor where the capture saw a scalar: the slow path names it
    if isinstance(value, list):
        value = tuple(value)
    return [] if _same(was, value) else [_scalar_finding(path, was, value)]


_COMPILED: dict[int, tuple] = {}


def _compiled(capture: Snapshot) -> tuple:
    """A function ``probe(roots, before) -> [(index of a leaf of the plan that differs, its value)]`` written for
    this capture's structure (straight-line attribute and item reads, each object reached once; a tensor's
    value is its :func:`_key`, read inline), the values it compares with, and the capture's memo of findings.
    Kept per capture (by id, with the capture itself, so the id cannot be reused)."""
    found = _COMPILED.get(id(capture))
    if found is not None and found[0] is capture:
        return found[1:]
    lines = ["def probe(roots, B):", "    d = []"]
    names: dict[tuple, str] = {}
    consts: list[object] = []

    def ref(root: str, steps: tuple) -> str:
        if (root, steps) in names:
            return names[(root, steps)]
        if not steps:
            consts.append(root)
            expr = f"roots[C[{len(consts) - 1}]]"
        else:
            expr = step(ref(root, steps[:-1]), *steps[-1])
        var = f"o{len(names)}"
        lines.append(f"    {var} = {expr}")
        names[(root, steps)] = var
        return var

    def step(parent: str, op: str, arg: object) -> str:
        """The expression for one step from ``parent``: a plain attribute read where the name allows, else
        :func:`follow` with the step as a constant."""
        if op == "attr" and isinstance(arg, str) and arg.isidentifier() and not arg.startswith("__"):
            return f"{parent}.{arg}"
        consts.append((op, arg))
        return f"F({parent}, (C[{len(consts) - 1}],))"

    before = []
    for i, (root, steps, _, kind, was) in enumerate(capture.plan):
        obj = ref(root, steps[:-1]) if steps else ref(root, ())
        if steps and steps[-1][0] != "len":
            leaf = step(obj, *steps[-1])
        elif steps:
            leaf = f"len({obj})"
        else:
            leaf = obj
        if kind == _TENSOR:  # _key(t), inline: a call less per tensor per replay
            lines.append(f"    t = {leaf}")
            lines.append("    v = (t.data_ptr(), t.stride(), t.storage_offset(), t.dtype, t.device, t.shape)")
            lines.append(f"    if v != B[{i}]: d.append(({i}, v))")
            before.append(was[1])
        else:
            lines.append(f"    v = {leaf}")
            lines.append(f"    if v.__class__ is not T[{i}] or v != B[{i}]: d.append(({i}, v))")
            before.append(was)
    lines.append("    return d")
    scope = {"C": consts, "F": follow, "T": [type(b) for b in before]}
    exec(compile("\n".join(lines), "<flexfix.guard.snapshot probe>", "exec"), scope)  # noqa: S102
    _COMPILED[id(capture)] = (capture, scope["probe"], tuple(before), {})
    return _COMPILED[id(capture)][1:]


def compare(capture: Snapshot, replay: Snapshot) -> list[Finding]:
    found: list[Finding] = []
    for path in dict.fromkeys([*capture.fields, *replay.fields]):
        before = capture.fields.get(path, _ABSENT)
        after = replay.fields.get(path, _ABSENT)
        if isinstance(before, Layout) and isinstance(after, Layout):
            found += _tensor_findings(path, before, after)
        elif isinstance(before, Layout):
            found.append(Finding(path, "missing", before.describe(), _show(after), True, "a captured tensor is gone"))
        elif isinstance(after, Layout):
            found.append(Finding(path, "appeared", _show(before), after.describe(), True, "not read by the capture"))
        elif not _same(before, after):
            found.append(_scalar_finding(path, before, after))
    return found


def _tensor_findings(path: str, before: Layout, after: Layout) -> list[Finding]:
    changes = layout_changes(before, after)
    note = _shape_note(before, after) if changes else ""
    found = [Finding(path, kind, a, b, True, note) for kind, a, b in changes]
    if not changes and before.shape != after.shape:
        found.append(Finding(path, "shape", list(before.shape), list(after.shape), False))
    return found


def _scalar_finding(path: str, before: object, after: object) -> Finding:
    decision = _is_decision(before) or _is_decision(after) or type(before) is not type(after)
    return Finding(path, "decision" if decision else "number", before, after, decision)


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
