"""Notebook parameters: resolve the device and reject impossible sizes, loudly and early.

The first executed cell after a notebook's ``parameters`` cell calls these, so a bad
value fails there with a message naming it, not twenty cells later.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "DEVICES",
    "resolve_device",
    "positive_int",
    "positive_ints",
    "cuda_available",
    "flag",
    "parse_ints",
    "writable_folder",
    "existing_file",
    "HelpFormatter",
]

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` if a GPU is usable else ``"cpu"``; ``"cuda"`` without a GPU
    says so and falls back to the CPU path; anything else is an error."""
    if device not in DEVICES:
        raise ValueError(f"DEVICE must be one of {DEVICES}, got {device!r}")
    has_gpu = cuda_available()
    if device == "cuda" and not has_gpu:
        print(
            "DEVICE='cuda' was asked for, but this machine has no usable GPU: "
            "running the CPU path and showing the recorded GPU results instead."
        )
        return "cpu"
    if device == "auto":
        return "cuda" if has_gpu else "cpu"
    return device


def positive_int(name: str, value: object, *, maximum: int | None = None, minimum: int = 1) -> int:
    """``value`` if it is an int in ``minimum..maximum``; otherwise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is larger than the maximum {maximum}")
    return value


def positive_ints(name: str, values: Iterable[object], *, maximum: int | None = None, minimum: int = 1) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return [positive_int(f"{name}[{i}]", v, maximum=maximum, minimum=minimum) for i, v in enumerate(values)]


def flag(name: str, value: object) -> bool:
    """``value`` if it is a real bool (``"false"``, 0 or 1 are not: a string is always true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def parse_ints(
    name: str, text: str, *, minimum: int = 1, maximum: int | None = None, allow_empty: bool = False
) -> list[int]:
    """``"1,8,16"`` from a command line -> ``[1, 8, 16]``, each in ``minimum..maximum`` and none twice;
    otherwise ValueError naming ``name`` and the item (``""`` is the empty list only if ``allow_empty``)."""
    if not text.strip():
        if allow_empty:
            return []
        raise ValueError(f"{name} must not be empty")
    values: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            raise ValueError(f"{name}: {item.strip()!r} is not an integer (expected e.g. 1,8,16)") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"{name}: {value} is outside {bound}")
        if value in values:
            raise ValueError(f"{name}: {value} is listed twice")
        values.append(value)
    return values


PROBE_BYTES = 64 * 1024  # what the probe of writable_folder writes: an empty file fits on a full disk


def writable_folder(name: str, path: str | os.PathLike) -> Path:
    """``path`` as a folder this process can write into: created if missing, then a probe file of
    :data:`PROBE_BYTES` is written, flushed to disk and removed (a full disk fails here, not after the work).
    Otherwise ValueError naming ``name``, the path and the reason (a name too long, a file in the way, no
    permission, no space)."""
    folder = Path(path)
    shown = str(folder) if len(str(folder)) <= 120 else f"{str(folder)[:60]}...{str(folder)[-40:]}"
    try:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{name} {shown!r} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flexfix-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise ValueError(f"{name} {shown!r} is not a writable folder: {e.strerror or e}") from None
    return folder


def existing_file(name: str, path: str | os.PathLike) -> Path:
    """``path`` if it names a file; otherwise ValueError naming ``name`` and the path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name} must be a file's path, got {path!r}")
    try:
        if Path(path).is_file():
            return Path(path)
    except OSError:
        pass
    raise ValueError(f"{name} {str(path)!r} is not a file")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every ``flexfix`` command's help: descriptions as written, and each option's default after its help text
    (left out where there is nothing to show: no default, a flag that is off, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or action.required:
            return action.help
        return super()._get_help_string(action)
