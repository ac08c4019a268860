"""Capture once, replay many times: what a CUDA graph freezes, on GPU and on CPU.

A captured CUDA graph keeps each kernel's arguments as they were at capture: the
pointers, and the shapes and strides baked into the launch.  Before a replay only
the *contents* of the captured buffers may change.

* :class:`CudaGraphLaunch` does the real thing with ``torch.cuda.CUDAGraph``: warm-up
  on a side stream, one capture, then ``replay()``.
* :class:`FrozenLaunch` is the CPU analog (it also runs on CUDA, without a graph, which
  is how ``compute-sanitizer`` can watch the misread launch): at capture it records
  each tensor's storage, offset, shape and strides; at replay it re-views the storages
  with those frozen values and calls the function again.  It is an analog, not a GPU
  run: it shows which cells a replayed kernel reads, not what the hardware does.

Both take ``fn(**tensors) -> Tensor`` and the tensors it is launched with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["FrozenTensor", "FrozenLaunch", "CudaGraphLaunch", "make_launch"]


@dataclass(frozen=True)
class FrozenTensor:
    """What a launch remembers of one argument: storage, offset, shape, strides."""

    storage: torch.UntypedStorage
    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def of(cls, t: torch.Tensor) -> FrozenTensor:
        return cls(t.untyped_storage(), t.dtype, t.storage_offset(), tuple(t.shape), tuple(t.stride()))

    def view(self) -> torch.Tensor:
        """The same storage seen with the frozen offset, shape and strides."""
        base = torch.empty(0, dtype=self.dtype, device=self.storage.device)
        return base.set_(self.storage, self.offset, self.shape, self.stride)


class FrozenLaunch:
    """Replays ``fn`` on views rebuilt from what was recorded at capture."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self.frozen: dict[str, FrozenTensor] | None = None

    def capture(self, **tensors: torch.Tensor) -> torch.Tensor:
        self.frozen = {name: FrozenTensor.of(t) for name, t in tensors.items()}
        return self.fn(**tensors)

    def replay(self) -> torch.Tensor:
        if self.frozen is None:
            raise RuntimeError("replay() before capture()")
        return self.fn(**{name: f.view() for name, f in self.frozen.items()})

    def launch_strides(self) -> dict[str, tuple[int, ...]]:
        """The strides a replay uses: those seen at capture."""
        return {name: f.stride for name, f in (self.frozen or {}).items()}


class CudaGraphLaunch:
    """``torch.cuda.CUDAGraph`` capture of ``fn`` on the given tensors, then replay."""

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 3):
        self.fn = fn
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.strides: dict[str, tuple[int, ...]] = {}

    def capture(self, **tensors: torch.Tensor) -> torch.Tensor:
        self.strides = {name: tuple(t.stride()) for name, t in tensors.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(**tensors)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self.fn(**tensors)
        self.graph.replay()
        torch.cuda.synchronize()
        return self.output.clone()

    def replay(self) -> torch.Tensor:
        if self.graph is None:
            raise RuntimeError("replay() before capture()")
        self.graph.replay()
        torch.cuda.synchronize()
        return self.output.clone()

    def launch_strides(self) -> dict[str, tuple[int, ...]]:
        return dict(self.strides)


def make_launch(kind: str, fn: Callable[..., torch.Tensor]):
    """``"graph"`` -> :class:`CudaGraphLaunch`, ``"frozen"`` -> :class:`FrozenLaunch`."""
    if kind == "graph":
        return CudaGraphLaunch(fn)
    if kind == "frozen":
        return FrozenLaunch(fn)
    raise ValueError(f"launch kind must be 'graph' or 'frozen', got {kind!r}")
