"""The real vLLM 0.20.0 engine with FLEX_ATTENTION: crash scenarios and patched runs.

Each scenario runs in its own child process (:func:`flexfix.measure.repro.run_child`): an
illegal memory access kills the engine, never the caller.  Models are Llama configs
written at run time with weights from a seeded standard initialisation
(``LlamaForCausalLM(config)`` then ``save_pretrained``); no download, and not vLLM's
``load_format="dummy"`` whose near-zero weights give degenerate token streams.

Scenarios (see ``SCENARIOS``): ``a`` unpatched + ``VLLM_BATCH_INVARIANT=1`` (refused);
``b`` only ``supports_batch_invariance`` forced, 48 requests; ``c`` the same with 16;
``d`` unpatched, ``VLLM_BATCH_INVARIANT=0``, 48; ``threshold`` stock vLLM with growing
numbers of concurrent requests, stopping at the first crash; ``patched_inprocess`` and
``patched_plugin`` the fixed backend with ``VLLM_BATCH_INVARIANT=1`` and 17, 48, 128.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flexfix.integration import vllm_patch
from flexfix.measure.outcomes import Outcome, Reporter, run_child, run_reported

__all__ = ["LLAMA_CONFIGS", "Scenario", "SCENARIOS", "write_llama", "run_scenario", "scenario_env"]

LLAMA_CONFIGS = {
    "tiny": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=2048,
        max_position_embeddings=2048,
    ),
    "variance": dict(
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=4,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    patch: str  # "none", "bi_only" (only supports_batch_invariance), "inprocess", "plugin"
    batch_invariant: bool
    requests: tuple[int, ...]
    expect: str
    what: str

    def __post_init__(self) -> None:
        if self.patch not in ("none", "bi_only", "inprocess", "plugin"):
            raise ValueError(f"patch must be none, bi_only, inprocess or plugin, got {self.patch!r}")


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("a", "none", True, (48,), "refused", "unpatched, VLLM_BATCH_INVARIANT=1"),
        Scenario(
            "b",
            "bi_only",
            True,
            (48,),
            "illegal_memory_access",
            "supports_batch_invariance forced True, copy unpatched, 48 requests",
        ),
        Scenario("c", "bi_only", True, (16,), "ok", "as (b) with 16 requests (one query block)"),
        Scenario("d", "none", False, (48,), "illegal_memory_access", "unpatched, VLLM_BATCH_INVARIANT=0, 48 requests"),
        Scenario(
            "threshold",
            "none",
            False,
            (1, 2, 4, 8, 12, 15, 16, 17, 24, 32, 48),
            "illegal_memory_access",
            "unpatched, VLLM_BATCH_INVARIANT=0, growing numbers of concurrent requests until one crashes",
        ),
        *(
            Scenario(
                f"stock_{n}",
                "none",
                False,
                (n,),
                # past one query block a fault is possible, not certain (notebook 01: where the crash starts)
                "ok" if n <= 16 else "ok or illegal_memory_access",
                f"unpatched, VLLM_BATCH_INVARIANT=0, {n} requests, a fresh engine",
            )
            for n in (16, 17, 24, 32, 40, 44, 45, 46, 47)
        ),
        Scenario(
            "patched_inprocess",
            "inprocess",
            True,
            (17, 48, 128),
            "ok",
            "flexfix.integration.vllm_patch.apply() in the engine's process, VLLM_BATCH_INVARIANT=1",
        ),
        Scenario(
            "patched_d",
            "inprocess",
            False,
            (48,),
            "ok",
            "patched with flexfix's vllm_patch.apply(): scenario (d) (VLLM_BATCH_INVARIANT=0, 48 requests), fixed",
        ),
        Scenario(
            "patched_plugin",
            "plugin",
            True,
            (17, 48, 128),
            "ok",
            "FLEXFIX_PATCH=1 plugin, default multiprocess engine, VLLM_BATCH_INVARIANT=1",
        ),
    )
}


def llama_config(config: str = "tiny"):
    """The ``transformers.LlamaConfig`` of one of :data:`LLAMA_CONFIGS` (untied embeddings), as every checkpoint and
    tokenizer of this code is written from it."""
    from transformers import LlamaConfig

    if config not in LLAMA_CONFIGS:
        raise ValueError(f"unknown Llama config {config!r}; expected one of {sorted(LLAMA_CONFIGS)}")
    return LlamaConfig(**LLAMA_CONFIGS[config], tie_word_embeddings=False)


def write_llama(path: str | os.PathLike, config: str = "tiny", seed: int = 0) -> Path:
    """A Llama checkpoint with seeded standard-init weights, written with save_pretrained."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(config)
    path = Path(path)
    if (path / "config.json").exists():
        return path
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    # Written next to its place and renamed: an interrupted write (config.json is written before the
    # weights) must not leave a checkpoint that looks complete.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if path.exists():  # left by an earlier interrupted write (no config.json)
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def scenario_env(sc: Scenario) -> dict[str, str]:
    """Environment of the child: batch-invariant mode, plugin switch, engine process layout."""
    env = {
        "VLLM_BATCH_INVARIANT": "1" if sc.batch_invariant else "0",
        "FLEXFIX_PATCH": "1" if sc.patch == "plugin" else "0",
    }
    # An in-process patch reaches the engine only when the engine runs in this process.
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if sc.patch in ("bi_only", "inprocess") else "1"
    return env


def prompts(n: int, vocab: int, seed: int = 0, lengths: tuple[int, int] = (20, 200)) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab) for _ in range(rng.randint(*lengths))] for _ in range(n)]


# Engines that share one GPU (several side by side): a fixed KV cache instead of vLLM's memory profiling, which
# fails when another process frees memory while it measures, and a small gpu_memory_utilization, which vLLM
# checks against the memory free at start; vLLM's own compile cache off (engines of one configuration would
# write the same cache entry at once), PyTorch's Inductor and Triton caches, safe across processes, still shared.
SHARED_GPU = {
    "kwargs": {
        "tiny": {"kv_cache_memory_bytes": 1 << 30, "gpu_memory_utilization": 0.05},
        "variance": {"kv_cache_memory_bytes": 4 << 30, "gpu_memory_utilization": 0.1},
    },
    "env": {"VLLM_DISABLE_COMPILE_CACHE": "1"},
}


def memory_kwargs(model: str, shared_gpu: bool, utilization: float) -> dict:
    """How an engine of ``model`` sizes its memory: alone, ``gpu_memory_utilization`` (vLLM profiles and gives
    the rest to the KV cache); sharing the GPU, :data:`SHARED_GPU`."""
    return dict(SHARED_GPU["kwargs"][model]) if shared_gpu else {"gpu_memory_utilization": utilization}


def run_scenario(
    name: str,
    model_dir: str | os.PathLike,
    *,
    timeout: float = 150,
    max_tokens: int = 32,
    shared_gpu: bool = False,
    stop=None,
) -> Outcome:
    """Run one scenario of ``SCENARIOS`` in a child process (``shared_gpu``: alongside other engines)."""
    sc = SCENARIOS[name]
    argv = [
        "-m",
        "flexfix.integration.engine",
        "--child",
        name,
        "--model",
        str(model_dir),
        "--max-tokens",
        str(max_tokens),
    ]
    env = scenario_env(sc)
    if shared_gpu:
        argv.append("--shared-gpu")
        env.update(SHARED_GPU["env"])
    return run_child(argv, timeout=timeout, env=env, stop=stop)


def _child(name: str, model_dir: str, max_tokens: int, reporter: Reporter, shared_gpu: bool = False) -> None:
    sc = SCENARIOS[name]
    if sc.patch == "bi_only":  # only the second change of PR #40842, the copy left as it is
        from vllm.v1.attention.backends import flex_attention

        flex_attention.FlexAttentionBackend.supports_batch_invariance = classmethod(
            vllm_patch._supports_batch_invariance
        )
    elif sc.patch == "inprocess":
        vllm_patch.apply()
    from vllm import LLM, SamplingParams

    vocab = LLAMA_CONFIGS["tiny"]["vocab_size"]
    llm = LLM(
        model=model_dir,
        attention_config={"backend": "FLEX_ATTENTION"},
        skip_tokenizer_init=True,
        max_num_seqs=max(max(sc.requests), 16),
        max_model_len=1024,
        seed=0,
        dtype="bfloat16",
        **memory_kwargs("tiny", shared_gpu, 0.15),
    )

    def params(i):
        return SamplingParams(
            temperature=0.8, seed=1000 + i, max_tokens=max_tokens, ignore_eos=True, logprobs=1, detokenize=False
        )

    # Request 0 alone first (one query block: safe even unpatched), to compare with it in the batch.
    alone = llm.generate([{"prompt_token_ids": prompts(1, vocab)[0]}], [params(0)], use_tqdm=False)[0]
    for n in sc.requests:
        start = time.monotonic()
        outs = llm.generate(
            [{"prompt_token_ids": p} for p in prompts(n, vocab)], [params(i) for i in range(n)], use_tqdm=False
        )
        first = outs[0].outputs[0]
        record = {
            "requests": n,
            "completed": sum(len(o.outputs[0].token_ids) == max_tokens for o in outs),
            "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
            "distinct_tokens_request0": len(set(first.token_ids)),
            "seconds": round(time.monotonic() - start, 2),
        }
        a = alone.outputs[0]

        def lp(out):
            return [d[t].logprob for d, t in zip(out.logprobs, out.token_ids)]

        record["request0_tokens_equal_alone"] = list(a.token_ids) == list(first.token_ids)
        record["request0_logprobs_bitwise_equal_alone"] = lp(a) == lp(first)
        reporter.record(record)
    reporter.finish("ok", sc.what, patched_in_child=vllm_patch.is_patched())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexfix.integration.engine")
    p.add_argument("--child", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--shared-gpu", action="store_true", help="other engines run beside this one")
    args = p.parse_args(argv)
    return run_reported(lambda reporter: _child(args.child, args.model, args.max_tokens, reporter, args.shared_gpu))


if __name__ == "__main__":
    sys.exit(main())
