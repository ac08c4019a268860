"""Published numbers to put ours next to (not measured here: each names its source)."""

PR_36298 = {
    "source": "vLLM PR #36298 'full cudagraph for flex-attn' (https://github.com/vllm-project/vllm/pull/36298)",
    "setup": "B200 (power cap 750 W), meta-llama/Meta-Llama-3-8B-Instruct, `vllm bench latency`",
    "latency_s": {"FlashInfer": 0.499, "flex, piecewise CUDA graphs": 1.2, "flex, full CUDA graphs": 0.811},
    # the model's attention shape, from its config.json (num_attention_heads 32, num_key_value_heads 8, hidden_size
    # 4096 over 32 heads): query heads, KV heads, head dim
    "model": "Llama-3-8B",
    "heads": (32, 8, 128),
}

TORCHTITAN_BITWISE_RL = {
    "source": "vLLM blog 'No More Train-Inference Mismatch: Bitwise Consistent On-Policy RL with vLLM and "
    "TorchTitan' (2025-11-10), https://blog.vllm.ai/2025/11/10/bitwise-consistent-train-inference.html",
    "setup": "Qwen3 1.7B RL fine-tune, TorchTitan trainer + vLLM sampler, batch-invariant kernels",
    "claim": "the bitwise-exact run is 2.4x slower than the non-bitwise one",
}


def anchor_table():
    """The published figures as a small DataFrame, with ratios to the fastest in each source."""
    import pandas as pd

    fastest = PR_36298["latency_s"]["FlashInfer"]
    rows = [
        {"source": "vLLM PR #36298", "what": k, "value": v, "unit": "s latency", "vs FlashInfer": round(v / fastest, 2)}
        for k, v in PR_36298["latency_s"].items()
    ]
    rows.append(
        {
            "source": "vLLM x TorchTitan blog",
            "what": "bitwise-exact RL vs non-bitwise",
            "value": 2.4,
            "unit": "x slower",
            "vs FlashInfer": None,
        }
    )
    return pd.DataFrame(rows)
