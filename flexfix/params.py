"""Notebook parameters: resolve the device and reject impossible sizes, loudly and early.

The first executed cell after a notebook's ``parameters`` cell calls these, so a bad
value fails there with a message naming it, not twenty cells later.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEVICES", "resolve_device", "positive_int", "positive_ints", "cuda_available"]

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
