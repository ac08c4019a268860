"""Engine-level measurements with vLLM 0.20.0: batch invariance of a needle, throughput,
and every request of a batch checked against itself alone.

One :class:`EngineRun` = one engine (a Llama config, ``VLLM_BATCH_INVARIANT`` 0/1, a CUDA
graph mode, flexfix's patch or stock vLLM) in its own child process.  In it:

* invariance: the needle prompt alone, then at the middle of ``N`` concurrent requests,
  greedy and seeded sampling, compared as vLLM's
  ``test_logprobs_bitwise_batch_invariance_bs1_vs_bsN`` does (number of steps, token ids,
  then ``torch.equal`` on the per-token logprobs) -- see :func:`compare_generations`;
* every-request check: each of ``N`` requests alone, then all together (a request at
  position ``i`` sits in query block ``i // 16`` while all decode);
* throughput: output tokens per second of ``N`` concurrent requests (warm-up, then timed
  repetitions), in the same engine.

The parent side (:func:`run_engine`) starts the child and returns its
:class:`flexfix.measure.repro.Outcome`; :func:`invariance_rows`, :func:`throughput_rows` and
:func:`request_rows` turn recorded outcomes into tidy DataFrames.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from flexfix.edition.params import positive_int
from flexfix.integration import vllm_patch
from flexfix.integration.engine import LLAMA_CONFIGS, SHARED_GPU, memory_kwargs, prompts
from flexfix.measure.generations import compare_generations, generate, sampling, tokens_logprobs, torch_sync
from flexfix.measure.guarded_engine import (
    check_guarded,
    guard_refused,
    guarded_env,
    guarded_name,
    prepare_guarded,
    record_generations,
    record_guard,
    time_guard,
)
from flexfix.measure.outcomes import Outcome, Reporter, json_child_argv, json_child_main, run_child

__all__ = [
    "GRAPH_MODES",
    "PROMPT_LENGTHS",
    "REQUESTS",
    "EngineRun",
    "compare_generations",
    "llm_kwargs",
    "run_engine",
    "invariance_rows",
    "throughput_rows",
    "request_rows",
    "parse_runs",
]

REQUESTS = (1, 2, 4, 8, 16, 17, 32, 48, 64, 128)
CAPTURE_SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]
# "full" is vLLM's default for FlexAttention (FULL_AND_PIECEWISE: the attention inside the graph).
GRAPH_MODES = {
    "full": {"compilation_config": {"cudagraph_capture_sizes": CAPTURE_SIZES}},
    "piecewise": {"compilation_config": {"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": CAPTURE_SIZES}},
    "eager": {"enforce_eager": True},
}
PROMPT_LENGTHS = {"tiny": (20, 200), "variance": (20, 1500)}
MAX_MODEL_LEN = {"tiny": 1024, "variance": 2048}
GPU_MEMORY = {"tiny": 0.15, "variance": 0.3}
NEEDLE_SEED = 4242


# Untimed batches before the timed repetitions of each throughput case; results do not record it (r20 B2).
THROUGHPUT_WARMUPS = 1


@dataclass(frozen=True)
class EngineRun:
    model: str = "tiny"
    batch_invariant: bool = True
    graphs: str = "full"
    patched: bool = True
    requests: tuple[int, ...] = REQUESTS  # invariance sweep: needle alone vs inside N
    samplings: tuple[str, ...] = ("greedy", "seeded")
    every_request: tuple[int, ...] = ()  # N for which every request is checked alone vs batch
    throughput: tuple[int, ...] = ()  # N for output tokens per second
    max_tokens: int = 32
    throughput_tokens: int = 128
    repeats: int = 3
    # The replay guard and what it is tried on (flexfix.measure.guarded_engine):
    backend: str = "FLEX_ATTENTION"  # or TRITON_ATTN
    guard: str = ""  # FLEXFIX_GUARD of the engine: "", error, eager or log
    bi_only: bool = False  # stock copy, but FlexAttention's supports_batch_invariance forced (scenario b)
    mutant: str = ""  # a planted bug of the class (flexfix.guard.mutants), TRITON_ATTN only
    runner: str = ""  # "v1" or "v2": VLLM_USE_V2_MODEL_RUNNER; "" leaves vLLM's choice
    debug: bool = False  # VLLM_LOGGING_LEVEL=DEBUG: vLLM's own replay address check on
    max_num_seqs: int = 0  # 0: the largest request count of the run (at least 16)
    generations: tuple[int, ...] = ()  # N for which every request's tokens and logprobs are recorded
    guard_cost: tuple[int, ...] = ()  # N for tokens/s with the guard on and off, alternately, in this engine

    def __post_init__(self) -> None:
        if self.model not in LLAMA_CONFIGS:
            raise ValueError(f"model must be one of {sorted(LLAMA_CONFIGS)}, got {self.model!r}")
        if self.graphs not in GRAPH_MODES:
            raise ValueError(f"graphs must be one of {sorted(GRAPH_MODES)}, got {self.graphs!r}")
        for s in self.samplings:
            if s not in ("greedy", "seeded"):
                raise ValueError(f"sampling must be 'greedy' or 'seeded', got {s!r}")
        for n in (*self.requests, *self.every_request, *self.throughput, *self.generations, *self.guard_cost):
            positive_int("request counts", n, maximum=256)
        positive_int("repeats", self.repeats)
        if self.max_num_seqs:
            positive_int("max_num_seqs", self.max_num_seqs, maximum=256)
        check_guarded(self)
        if self.batch_invariant and not (self.patched or self.bi_only) and self.backend == "FLEX_ATTENTION":
            raise ValueError(
                "stock vLLM 0.20.0 refuses FLEX_ATTENTION under VLLM_BATCH_INVARIANT=1: "
                "a batch-invariant run needs patched=True"
            )

    @property
    def name(self) -> str:
        name = f"{self.model}, BI={int(self.batch_invariant)}, {self.graphs} graphs" + (
            "" if self.patched else ", stock"
        )
        return name + guarded_name(self)

    def env(self) -> dict[str, str]:
        # The in-process patch reaches the engine only when it runs in this process.
        return {
            "VLLM_BATCH_INVARIANT": "1" if self.batch_invariant else "0",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "FLEXFIX_PATCH": "0",
            **guarded_env(self),
        }


def llm_kwargs(run: EngineRun, model_dir: str, shared_gpu: bool = False) -> dict:
    """The ``LLM(...)`` arguments of a run (``shared_gpu``: other engines run beside it, see
    :data:`flexfix.integration.engine.SHARED_GPU`)."""
    most = max((*run.requests, *run.every_request, *run.throughput, *run.generations, *run.guard_cost, 16))
    return dict(
        model=str(model_dir),
        attention_config={"backend": run.backend},
        skip_tokenizer_init=True,
        max_num_seqs=run.max_num_seqs or most,
        max_model_len=MAX_MODEL_LEN[run.model],
        seed=0,
        dtype="bfloat16",
        **memory_kwargs(run.model, shared_gpu, GPU_MEMORY[run.model]),
        **GRAPH_MODES[run.graphs],
    )


def _invariance(llm, run: EngineRun, vocab: int, report) -> None:
    if not run.requests:  # a run for the every-request check or throughput only
        return
    lengths = PROMPT_LENGTHS[run.model]
    needle = prompts(1, vocab, seed=NEEDLE_SEED, lengths=lengths)[0]
    fillers = prompts(max(run.requests), vocab, seed=1, lengths=lengths)
    for kind in run.samplings:
        alone = tokens_logprobs(generate(llm, [needle], [sampling(kind, NEEDLE_SEED, run.max_tokens)])[0])
        for n in run.requests:
            at = n // 2
            batch = fillers[:at] + [needle] + fillers[at : n - 1]
            params = [sampling(kind, NEEDLE_SEED if i == at else 1000 + i, run.max_tokens) for i in range(n)]
            start = time.monotonic()
            outs = generate(llm, batch, params)
            seconds = time.monotonic() - start
            report(
                {
                    "kind": "invariance",
                    "requests": n,
                    "sampling": kind,
                    "position": "middle",
                    "needle_index": at,
                    "seconds": round(seconds, 3),
                    **compare_generations(*alone, *tokens_logprobs(outs[at])),
                }
            )


def _every_request(llm, run: EngineRun, vocab: int, report) -> None:
    for n in run.every_request:
        batch = prompts(n, vocab, seed=2, lengths=PROMPT_LENGTHS[run.model])
        params = [sampling("seeded", 2000 + i, run.max_tokens) for i in range(n)]
        alone = [tokens_logprobs(generate(llm, [p], [s])[0]) for p, s in zip(batch, params)]
        together = [tokens_logprobs(o) for o in generate(llm, batch, params)]
        rows = [compare_generations(*a, *b) for a, b in zip(alone, together)]
        report(
            {
                "kind": "every_request",
                "requests": n,
                "tokens_differ": [i for i, r in enumerate(rows) if not r["tokens_equal"]],
                "logprobs_differ": [i for i, r in enumerate(rows) if not r["logprobs_bitwise_equal"]],
                "max_abs_logprob_diff": max((r["max_abs_logprob_diff"] or 0.0) for r in rows),
            }
        )


def _throughput(llm, run: EngineRun, vocab: int, report) -> None:
    for n in run.throughput:
        batch = prompts(n, vocab, seed=3, lengths=PROMPT_LENGTHS[run.model])
        params = [sampling("greedy", 0, run.throughput_tokens)] * n
        for _ in range(THROUGHPUT_WARMUPS):
            generate(llm, batch, params)  # warm-up: same shapes, caches filled
        seconds = []
        for _ in range(run.repeats):
            torch_sync()
            start = time.perf_counter()
            outs = generate(llm, batch, params)
            torch_sync()
            seconds.append(time.perf_counter() - start)
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        report(
            {
                "kind": "throughput",
                "requests": n,
                "output_tokens": tokens,
                "seconds": seconds,
                "tokens_per_second": tokens / statistics.median(seconds),
            }
        )


def _child(spec: dict, reporter: Reporter) -> None:
    run = EngineRun(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["run"].items()})
    if run.patched:
        vllm_patch.apply()
    guard = prepare_guarded(run)
    from vllm import LLM

    start = time.monotonic()
    try:
        llm = LLM(**llm_kwargs(run, spec["model_dir"], spec.get("shared_gpu", False)))
        reporter.record(
            {
                "kind": "startup",
                "seconds": round(time.monotonic() - start, 1),
                "patched": vllm_patch.is_patched(),
                "VLLM_BATCH_INVARIANT": os.environ.get("VLLM_BATCH_INVARIANT"),
                "vllm": vllm_patch.status().get("vllm"),
            }
        )
        vocab = LLAMA_CONFIGS[run.model]["vocab_size"]
        _invariance(llm, run, vocab, reporter.record)
        _every_request(llm, run, vocab, reporter.record)
        record_generations(llm, run, vocab, PROMPT_LENGTHS[run.model], reporter.record)
        _throughput(llm, run, vocab, reporter.record)
        time_guard(llm, run, vocab, PROMPT_LENGTHS[run.model], guard, reporter.record)
    except Exception as exc:
        record_guard(reporter.record)  # what the guard saw, before the outcome
        if not guard_refused(exc, reporter):
            raise
        return
    record_guard(reporter.record)
    reporter.finish("ok", run.name)


def run_engine(
    run: EngineRun, model_dir: str | os.PathLike, *, timeout: float = 480, shared_gpu: bool = False, stop=None
) -> Outcome:
    """One :class:`EngineRun` in its own child process (``shared_gpu``: alongside other engines)."""
    spec = {"run": asdict(run), "model_dir": str(model_dir), "shared_gpu": shared_gpu}
    env = {**run.env(), **(SHARED_GPU["env"] if shared_gpu else {})}
    return run_child(json_child_argv("flexfix.measure.engine_sweep", spec), timeout=timeout, env=env, stop=stop)


def parse_runs(text: str, **common) -> list[EngineRun]:
    """``"tiny:bi1:full,variance:bi0:eager,tiny:stock:full"`` -> runs (``stock`` = unpatched, BI=0)."""
    runs = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 3 or parts[1] not in ("bi0", "bi1", "stock"):
            raise ValueError(f"engine run {item!r}: expected MODEL:bi0|bi1|stock:GRAPHS")
        runs.append(
            EngineRun(
                model=parts[0],
                batch_invariant=parts[1] == "bi1",
                graphs=parts[2],
                patched=parts[1] != "stock",
                **common,
            )
        )
    return runs


def _rows(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    keys = ["model", "batch_invariant", "graphs", "patched"]
    keys += ["source"] if "source" in table else []
    rows = [
        {"engine": r["engine"], **{k: r[k] for k in keys}, "engine_status": r["status"], **rec}
        for _, r in table.iterrows()
        for rec in r["records"]
        if rec.get("kind") == kind
    ]
    return pd.DataFrame(rows)


def invariance_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per engine x N x sampling: the needle alone vs inside N requests."""
    return _rows(table, "invariance")


def throughput_rows(table: pd.DataFrame) -> pd.DataFrame:
    return _rows(table, "throughput")


def request_rows(table: pd.DataFrame) -> pd.DataFrame:
    return _rows(table, "every_request")


def main(argv: Sequence[str] | None = None) -> int:
    return json_child_main("flexfix.measure.engine_sweep", _child, argv)


if __name__ == "__main__":
    sys.exit(main())
