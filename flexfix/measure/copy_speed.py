"""``flexfix copy-speed``: what the installed copy costs per call against vLLM 0.21.0's bare slice copy.

::

    flexfix copy-speed --device cpu --out data                  # data/copy_speed-cpu.json
    python -m flexfix.measure.copy_speed --device cuda --out data  # the same command: data/copy_speed-cuda.json

The plugin puts :func:`flexfix.mechanism.persistent.copy_to_persistent` (checked: it refuses what cannot be a
persistent buffer) in place of vLLM 0.20.x's copy; vLLM 0.21.0 copies into the slice without any check
(:func:`~flexfix.mechanism.persistent.copy_to_slice`).  Both are timed here at the shapes vLLM 0.20.0's
FlexAttention metadata builder copies per step (:func:`engine_cases`): ``kv_indices`` ``[G, K]`` int32 into
``[G_max, W_max]`` (``G = cdiv(tokens, 16)``, ``K = 16 * cdiv(max_seq_len, block_size)``), ``physical_to_logical``
``[num_reqs, num_gpu_blocks]`` int64 into ``[max_num_seqs, num_gpu_blocks]``, and the 1-D ``kv_num_blocks``,
``doc_ids`` and ``decode_offset``, for decode steps of several batch sizes and contexts and for one long prefill.

Each function is timed with :class:`torch.utils.benchmark.Timer` (``blocked_autorange``: warmed up, blocks of calls
back to back, one thread; on CUDA the timer synchronizes the device around each block, so a call costs its host
work and its copy, whichever is longer).  The two functions take turns for ``rounds`` rounds, the order swapped every
round: each one's figure is the median of its round medians, and ``ratio`` the median of the rounds' ratios
(installed / slice, both measured within the same second), with its smallest and largest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from flexfix.edition import params
from flexfix.mechanism.persistent import copy_to_persistent, copy_to_slice

__all__ = ["EngineShape", "Case", "engine_cases", "measure", "COLUMNS", "PROG", "build_parser", "main"]

PROG = "flexfix copy-speed"
Q_BLOCK = 16  # FlexAttention's query block (vLLM 0.20.0 with torch >= 2.9)
COLUMNS = [
    "device",
    "buffer",
    "steps",
    "dst_shape",
    "src_shape",
    "dtype",
    "contiguous_slice",
    "slice_us",
    "installed_us",
    "ratio",
    "ratio_min",
    "ratio_max",
    "rounds",
]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class EngineShape:
    """The scheduler and cache sizes that fix vLLM's persistent buffers (defaults: a 16k-token model, 8192 batched
    tokens, 256 sequences, 16384 KV blocks of 16 tokens)."""

    max_model_len: int = 16384
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    num_gpu_blocks: int = 16384
    block_size: int = 16

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_num_batched_tokens", "max_num_seqs", "num_gpu_blocks", "block_size"):
            params.positive_int(name, getattr(self, name))

    def buffers(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Each persistent buffer's shape and dtype, as vLLM 0.20.0's ``FlexAttentionMetadataBuilder`` allocates it."""
        groups = cdiv(self.max_num_batched_tokens, Q_BLOCK)
        return {
            "kv_indices": ((groups, Q_BLOCK * cdiv(self.max_model_len, self.block_size)), torch.int32),
            "kv_num_blocks": ((groups,), torch.int32),
            "doc_ids": ((self.max_num_batched_tokens,), torch.int32),
            "decode_offset": ((self.max_num_seqs,), torch.int32),
            "physical_to_logical": ((self.max_num_seqs, self.num_gpu_blocks), torch.int64),
        }


@dataclass(frozen=True)
class Case:
    """One copy: ``src_shape`` into the buffer ``buffer``; ``steps`` names the engine steps that copy it."""

    buffer: str
    src_shape: tuple[int, ...]
    steps: tuple[str, ...]


def engine_cases(
    shape: EngineShape,
    batches: Sequence[int] = (1, 16, 48, 128),
    contexts: Sequence[int] = (1024, 4096, 8192),
    prefill_tokens: int | None = 8192,
) -> list[Case]:
    """The copies of decode steps (``batches`` requests of one new token each at every context of ``contexts``) and
    of one prefill (a request of ``prefill_tokens`` tokens), each distinct copy once."""
    params.positive_ints("batches", batches, maximum=shape.max_num_seqs)
    params.positive_ints("contexts", contexts, maximum=shape.max_model_len)
    steps: list[tuple[str, int, int, int]] = [  # (name, requests, tokens, longest sequence)
        (f"decode {b} x {c}", b, b, c) for b in batches for c in contexts
    ]
    if prefill_tokens is not None:
        limit = min(shape.max_num_batched_tokens, shape.max_model_len)
        params.positive_int("prefill_tokens", prefill_tokens, maximum=limit)
        steps.append((f"prefill {prefill_tokens}", 1, prefill_tokens, prefill_tokens))
    found: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for name, requests, tokens, longest in steps:
        groups = cdiv(tokens, Q_BLOCK)
        copies = {
            "kv_indices": (groups, Q_BLOCK * cdiv(longest, shape.block_size)),
            "kv_num_blocks": (groups,),
            "doc_ids": (tokens,),
            "decode_offset": (requests,),
            "physical_to_logical": (requests, shape.num_gpu_blocks),
        }
        for buffer, src_shape in copies.items():
            found.setdefault((buffer, src_shape), []).append(name)
    return [Case(buffer, src_shape, tuple(names)) for (buffer, src_shape), names in found.items()]


def _median_us(fn: Callable, dst: torch.Tensor, src: torch.Tensor, min_run_time: float) -> float:
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn(dst, src)", globals={"fn": fn, "dst": dst, "src": src}, num_threads=1)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def measure(
    shape: EngineShape,
    cases: Sequence[Case],
    device: str = "cpu",
    *,
    rounds: int = 5,
    min_run_time: float = 0.05,
    installed: Callable = copy_to_persistent,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Per-call medians (microseconds) of ``installed`` and of :func:`copy_to_slice` for every case, and their ratio.

    Each buffer is allocated once on ``device``, as the engine does, and each source once per case."""
    params.positive_int("rounds", rounds)
    if not min_run_time > 0:
        raise ValueError(f"min_run_time must be > 0 seconds, got {min_run_time!r}")
    layouts = shape.buffers()
    buffers = {name: torch.zeros(size, dtype=dtype, device=device) for name, (size, dtype) in layouts.items()}
    rows = []
    for case in cases:
        dst = buffers[case.buffer]
        src = torch.ones(case.src_shape, dtype=dst.dtype, device=device)
        times: dict[str, list[float]] = {"slice": [], "installed": []}
        contenders = [("slice", copy_to_slice), ("installed", installed)]
        for r in range(rounds):
            for name, fn in contenders if r % 2 == 0 else contenders[::-1]:
                times[name].append(_median_us(fn, dst, src, min_run_time))
        slice_us, installed_us = statistics.median(times["slice"]), statistics.median(times["installed"])
        ratios = [i / s for i, s in zip(times["installed"], times["slice"])]
        row = {
            "device": device,
            "buffer": case.buffer,
            "steps": ", ".join(case.steps),
            "dst_shape": list(dst.shape),
            "src_shape": list(case.src_shape),
            "dtype": str(dst.dtype).removeprefix("torch."),
            "contiguous_slice": copy_to_slice(dst, src).is_contiguous(),
            "slice_us": round(slice_us, 3),
            "installed_us": round(installed_us, 3),
            "ratio": round(statistics.median(ratios), 4),
            "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4),
            "rounds": rounds,
        }
        rows.append(row)
        if log is not None:
            log(_line(row))
    return pd.DataFrame(rows, columns=COLUMNS)


def _line(row: dict) -> str:
    shapes = f"{tuple(row['src_shape'])} into {tuple(row['dst_shape'])}"
    return (
        f"{row['buffer']:>19} {shapes:<32} slice {row['slice_us']:10.2f} us  installed {row['installed_us']:10.2f} us"
        f"  ratio {row['ratio']:.3f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})  {row['steps']}"
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=params.HelpFormatter,
    )
    d = EngineShape()
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the buffers live")
    p.add_argument("--out", default="build/results", help="folder of the results file NAME-DEVICE.json")
    p.add_argument("--name", default="copy_speed", help="results name")
    p.add_argument("--batches", default="1,16,48,128", help="decode batch sizes (requests of one token each)")
    p.add_argument("--contexts", default="1024,4096,8192", help="decode contexts (longest sequence, tokens)")
    p.add_argument("--prefill-tokens", type=int, default=8192, help="tokens of the one prefill step (0: none)")
    p.add_argument("--max-model-len", type=int, default=d.max_model_len, help="the model's longest sequence")
    p.add_argument("--max-num-batched-tokens", type=int, default=d.max_num_batched_tokens, help="tokens per step")
    p.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs, help="requests per step")
    p.add_argument("--num-gpu-blocks", type=int, default=d.num_gpu_blocks, help="KV-cache blocks")
    p.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV-cache block")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the two functions taking turns")
    p.add_argument("--min-run-time", type=float, default=0.05, help="seconds of calls per measurement")
    p.add_argument("--replace", action="store_true", help="replace a results file that holds more records")
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from flexfix.edition import results

    p = build_parser(prog)
    args = p.parse_args(argv)
    try:
        shape = EngineShape(
            args.max_model_len, args.max_num_batched_tokens, args.max_num_seqs, args.num_gpu_blocks, args.block_size
        )
        batches = params.parse_ints("--batches", args.batches, maximum=shape.max_num_seqs)
        contexts = params.parse_ints("--contexts", args.contexts, maximum=shape.max_model_len)
        params.positive_int("--prefill-tokens", args.prefill_tokens, minimum=0)
        cases = engine_cases(shape, batches, contexts, args.prefill_tokens or None)
        params.positive_int("--rounds", args.rounds, maximum=100)
        if not 0 < args.min_run_time <= 10:
            raise ValueError(f"--min-run-time must be in (0, 10] seconds, got {args.min_run_time}")
        out = params.writable_folder("--out", args.out)
    except ValueError as e:
        p.error(str(e))
    if args.device == "cuda" and not params.cuda_available():
        p.error("--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)")
    parameters = {**vars(shape), "batches": batches, "contexts": contexts, "prefill_tokens": args.prefill_tokens}
    parameters |= {
        "rounds": args.rounds,
        "min_run_time": args.min_run_time,
        "timer": "torch.utils.benchmark.Timer",
        "threads": 1,
    }
    print(f"{len(cases)} copies on {args.device}, {args.rounds} rounds each:", flush=True)
    table = measure(
        shape,
        cases,
        args.device,
        rounds=args.rounds,
        min_run_time=args.min_run_time,
        log=lambda s: print(s, flush=True),
    )
    worst = table.loc[table.ratio.idxmax()]
    print(
        f"largest ratio {worst.ratio:.3f} ({worst.buffer} {tuple(worst.src_shape)}); median {table.ratio.median():.3f}"
    )
    try:
        path = results.write_results(out, args.name, table, args.device, parameters, replace=args.replace)
    except results.ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m flexfix.measure.copy_speed"))
