"""Integers read back from a printed repr, as recordings keep them: ``DecodeCase(num_heads=32, ...)``,
``PagedShape(max_num_seqs=128, ...)``, ``BatchDescriptor(num_tokens=48, ...)``.

A recording's provenance stores some objects as their ``repr`` (JSON has no dataclasses); the sentences that state
their sizes read the ``name=N`` fields back here, in one way."""

from __future__ import annotations

import re

_FIELD = re.compile(r"\b(\w+)=(\d+)(?![\w.])")  # a whole number: not the 0 of 0.5


def printed_ints(text: object) -> dict[str, int]:
    """Every ``name=N`` field (a whole non-negative integer) of the printed ``text``, by name; ``{}`` for None."""
    return {name: int(value) for name, value in _FIELD.findall(str(text or ""))}


def printed_int(text: object, name: str) -> int | None:
    """The field ``name=N`` of the printed ``text``, or None where it has none."""
    return printed_ints(text).get(name)
