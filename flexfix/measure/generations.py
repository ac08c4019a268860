"""One batch of requests through a vLLM ``LLM`` and what came out: sampling settings, token ids and logprobs,
and the bitwise comparison of two generations (vLLM's ``test_logprobs_bitwise_batch_invariance_bs1_vs_bsN``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["compare_generations", "generate", "sampling", "tokens_logprobs", "torch_sync"]


def compare_generations(
    alone_tokens: Sequence[int],
    alone_logprobs: Sequence[float],
    batch_tokens: Sequence[int],
    batch_logprobs: Sequence[float],
) -> dict:
    """Alone vs in a batch, as vLLM's bs1-vs-bsN test: steps, tokens, then bitwise logprobs."""
    import torch

    steps_equal = len(alone_tokens) == len(batch_tokens) == len(alone_logprobs) == len(batch_logprobs)
    tokens_equal = steps_equal and list(alone_tokens) == list(batch_tokens)
    a = torch.tensor(list(alone_logprobs), dtype=torch.float64)
    b = torch.tensor(list(batch_logprobs), dtype=torch.float64)
    n = min(a.numel(), b.numel())
    diff = (a[:n] - b[:n]).abs()
    mismatch = [i for i, (x, y) in enumerate(zip(alone_tokens, batch_tokens)) if x != y]
    return {
        "steps_equal": steps_equal,
        "tokens_equal": tokens_equal,
        "logprobs_bitwise_equal": bool(tokens_equal and torch.equal(a, b)),
        "max_abs_logprob_diff": float(diff.max()) if n else None,
        "first_token_mismatch": mismatch[0] if mismatch else None,
        "distinct_tokens": len(set(batch_tokens)),
    }


def sampling(kind: str, seed: int, max_tokens: int):
    """``greedy`` (temperature 0) or ``seeded`` (temperature 1, its own seed): ``max_tokens`` tokens, the chosen
    token's logprob each, EOS ignored."""
    from vllm import SamplingParams

    common = dict(max_tokens=max_tokens, ignore_eos=True, logprobs=1, detokenize=False)
    if kind == "greedy":
        return SamplingParams(temperature=0.0, **common)
    return SamplingParams(temperature=1.0, seed=seed, **common)


def tokens_logprobs(output) -> tuple[list[int], list[float]]:
    out = output.outputs[0]
    return list(out.token_ids), [d[t].logprob for d, t in zip(out.logprobs, out.token_ids)]


def generate(llm, batch: list[list[int]], params: list) -> list:
    return llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)


def torch_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
