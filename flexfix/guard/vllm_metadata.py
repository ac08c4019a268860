"""What a vLLM FULL CUDA graph reads, as roots for :func:`flexfix.guard.snapshot.take`.

vLLM (0.20 to 0.26) hands a captured model its per-step state in three places: the model's keyword
arguments (``input_ids``, ``positions``: slices of persistent buffers), the forward context's
``attn_metadata`` (layer name -> metadata; every layer of one attention group shares one object) and its
``slot_mapping`` (layer name -> the KV-cache write positions).  :func:`roots` names each distinct metadata
object by its class (``FlexAttentionMetadata``), or by class and first layer where two objects share a
class (several KV-cache groups), so that a path reads ``FlexAttentionMetadata.block_mask.kv_indices``.

:data:`NOT_READ` lists the fields reachable from a metadata object that no captured kernel reads: each is
made anew at every build and consumed by the build itself, outside the graph, so its pointer moves at
every step of a correct backend.  Each entry says where vLLM uses it.  They are left out of the comparison (a
backend whose forward rebuilt its block mask inside the graph would read ``num_blocks_per_seq`` there; vLLM
0.20-0.26 rebuild it only for a layer whose sliding window or mask differs from the metadata's).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping

__all__ = ["NOT_READ", "NOT_READ_ENV", "roots", "not_read_fields", "not_read_paths", "backends"]

NOT_READ: dict[str, dict[str, str]] = {
    "FlexAttentionMetadata": {
        "num_blocks_per_seq": (
            "cdiv(seq_lens, block_size), a new tensor at every build (vLLM 0.20.0 flex_attention.py:810, 0.26.0 "
            ":1019); 0.20.0 never reads it again, 0.26.0 reads it in _build_block_mask_direct, which build() runs "
            "before the forward, outside the graph"
        ),
    },
}


def roots(attn_metadata: object, slot_mapping: object = None, inputs: Mapping[str, object] | None = None) -> dict:
    """Name -> object for everything the FULL graph of one step reads."""
    named: dict[str, object] = {}
    for name, value in (inputs or {}).items():
        named[name] = value
    named.update(_metadata_roots(attn_metadata))
    if slot_mapping is not None:
        named["slot_mapping"] = slot_mapping
    return named


NOT_READ_ENV = "FLEXFIX_GUARD_NOT_READ"


def not_read_fields(environ: Mapping[str, str] | None = None) -> dict[str, set[str]]:
    """Class name -> fields left out: :data:`NOT_READ`, and ``FLEXFIX_GUARD_NOT_READ`` (``Class.field,...``: for a
    backend of your own, a field it builds anew at every step and reads only outside the graph).  ValueError
    naming an entry that is not ``Class.field``."""
    fields = {cls: set(names) for cls, names in NOT_READ.items()}
    raw = (os.environ if environ is None else environ).get(NOT_READ_ENV, "")
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        cls, dot, field = entry.partition(".")
        if not dot or not cls.isidentifier() or not field.isidentifier():
            raise ValueError(f"{NOT_READ_ENV}: {entry!r} is not Class.field (e.g. MyAttentionMetadata.host_lens)")
        fields.setdefault(cls, set()).add(field)
    return fields


def not_read_paths(named: Mapping[str, object]) -> list[str]:
    """The paths of the fields :func:`not_read_fields` leaves out, under ``named`` (roots as :func:`roots` names
    them)."""
    fields = not_read_fields()
    return [f"{name}.{field}" for name, obj in named.items() for field in sorted(fields.get(type(obj).__name__, ()))]


def _metadata_roots(attn_metadata: object) -> dict[str, object]:
    groups: list[dict] = []
    if isinstance(attn_metadata, Mapping):
        groups = [attn_metadata]
    elif isinstance(attn_metadata, (list, tuple)):  # one dict per micro-batch (DBO)
        groups = [g for g in attn_metadata if isinstance(g, Mapping)]
    elif attn_metadata is not None:
        return {type(attn_metadata).__name__: attn_metadata}
    distinct: dict[int, tuple[str, object]] = {}
    for i, group in enumerate(groups):
        for layer, md in group.items():  # every layer of a group shares one object: the first layer names it
            if md is not None and id(md) not in distinct:
                distinct[id(md)] = (f"{layer}" if len(groups) == 1 else f"ubatch{i}:{layer}", md)
    if len(distinct) == 1:  # the common case, once per step: no class can collide
        ((_, md),) = distinct.values()
        return {type(md).__name__: md}
    classes = Counter(type(md).__name__ for _, md in distinct.values())
    named = {}
    for layer, md in distinct.values():
        cls = type(md).__name__
        named[cls if classes[cls] == 1 else f"{cls}[{layer!r}]"] = md
    return named


def backends(named: Mapping[str, object]) -> str:
    """The attention backends of the metadata under ``named``, as vLLM names them (``FLEX_ATTENTION``):
    read from each metadata class's module, ``vllm.v1.attention.backends.flex_attention``."""
    found = {
        type(obj).__module__.rsplit(".", 1)[-1].upper()
        for obj in named.values()
        if type(obj).__module__.startswith("vllm.v1.attention.backends")
    }
    return ", ".join(sorted(found)) or "unknown"
