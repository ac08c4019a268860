"""The words and the fixed numbers the notebooks use, each defined once, with its value read from code.

The narrative of a notebook may state a number in its own markdown only if it is a *definition* (the
query-block size, the width of a buffer row) rather than a *measurement*; tests/test_prose_numbers.py holds
the markdown to that, with :func:`defined_numbers` and the notebook's parameters as the only sources.
Measured numbers are printed, or written into the text by code (:mod:`flexfix.edition.narrative`).
"""

from __future__ import annotations

from types import SimpleNamespace

from flexfix.mechanism import paged

__all__ = ["TERMS", "markdown", "defined_numbers", "vllm_capture_sizes", "k_at_capture", "capture_source"]

# term -> definition (Markdown).  Numbers in definitions come from flexfix.mechanism.paged, formatted in below.
TERMS = {
    "query block": (
        f"{paged.Q_BLOCK} consecutive query tokens of a step, processed together by one program of the attention "
        "kernel (vLLM's `q_block_size`, flex's `BLOCK_M`). In decode every request brings one query token, so a "
        f"query block holds {paged.Q_BLOCK} *requests*."
    ),
    "KV page": (
        f"{paged.PAGE_SIZE} tokens of one request's keys and values in the paged KV cache (vLLM's `block_size`, flex's "
        "`BLOCK_N` here). Different thing from a query block: a page is storage on the key side, a query block is a "
        "tile of work on the query side. They are the same size here because FlexAttention in vLLM requires the "
        "cache block size to equal its KV block size, and vLLM chose that size for its query blocks as well."
    ),
    "G": (
        f"query blocks in the step: `cdiv(num_tokens, {paged.Q_BLOCK})`. `G >= 2` as soon as more than "
        f"{paged.Q_BLOCK} requests decode together."
    ),
    "K": (
        f"width of the step's `kv_indices`: `{paged.Q_BLOCK} * cdiv(max_seq_len, {paged.PAGE_SIZE})`, the most pages "
        "one query block can touch. It grows whenever the longest sequence in the batch crosses a page boundary."
    ),
    "kv_indices": (
        "`[G, K]` int32: for each query block, the distinct KV pages its requests use, left-packed, padded with "
        "`-1`. The only per-step tensor that is 2-D *and* narrower than its buffer, hence the only one whose strides "
        "the two copies set differently (table below)."
    ),
    "G_max, W_max": (
        "shape of the persistent `kv_indices` buffer, allocated once: `G_max = cdiv(max_num_batched_tokens, "
        f"{paged.Q_BLOCK})` rows of `W_max = {paged.Q_BLOCK} * cdiv(max_model_len, {paged.PAGE_SIZE})` cells."
    ),
    "capture / replay": (
        "a CUDA graph *captures* the kernels of one step once, with their arguments (addresses, shapes, strides), "
        "and *replays* them at later steps: new values in the same buffers, the same arguments."
    ),
    "full / piecewise graphs": (
        "vLLM's *full* CUDA graphs capture the attention kernel too (that is what needs persistent buffers); "
        "*piecewise* graphs capture everything between attention calls and launch attention eagerly, from Python."
    ),
    "as_strided copy / sliced copy": (
        "0.20.0 writes a step's `[G, K]` metadata into `buffer.as_strided((G, K), (K, 1))` (row stride `K`, which "
        "changes); the fix writes it into `buffer[:G, :K]` (row stride `W_max`, which never changes)."
    ),
    "IMA": "illegal memory access: a kernel read an address outside any allocation; it poisons the CUDA context.",
    "needle": "one fixed request decoded alone and inside batches; its output alone is the reference.",
    "bitwise equal / batch-invariant": (
        "`torch.equal` between the needle's output in a batch and alone; a kernel or engine is batch-invariant "
        "when that holds for every batch."
    ),
}


def markdown():
    """The glossary as Markdown, one bullet per term (rendered in a notebook)."""
    from flexfix.edition.narrative import markdown as md

    return md("\n".join(f"* **{term}**: {meaning}" for term, meaning in TERMS.items()))


def defined_numbers() -> dict[float, str]:
    """Numbers a notebook's markdown may state without a measurement behind them: value -> meaning."""
    return {
        paged.Q_BLOCK: "query-block size and KV-page size (flexfix.mechanism.paged.Q_BLOCK, PAGE_SIZE)",
        0: "row 0 / query block 0",
        1: "one query block, one request, one token",
        2: "two query blocks: G >= 2",
        -1: "the -1 pad",
    }


def vllm_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int = 8192) -> list[int]:
    """The decode batch sizes vLLM captures full CUDA graphs for, by the installed vLLM's own rule
    (``VllmConfig._set_cudagraph_sizes``, applied to a stand-in config with these two limits, no
    speculative decoding, one GPU)."""
    from vllm.config.compilation import CompilationConfig, CUDAGraphMode
    from vllm.config.vllm import VllmConfig

    rule = getattr(VllmConfig, "_set_cudagraph_sizes", None)
    if rule is None:
        raise RuntimeError("the installed vLLM has no VllmConfig._set_cudagraph_sizes: capture sizes unknown")
    compilation = CompilationConfig()
    compilation.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    stand_in = SimpleNamespace(
        model_config=SimpleNamespace(enforce_eager=False),
        compilation_config=compilation,
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens),
        speculative_config=None,
        performance_mode="throughput",
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    rule(stand_in)
    return list(compilation.cudagraph_capture_sizes)


def k_at_capture() -> int:
    """``K`` of the step vLLM 0.20.0 captures a decode graph on.  ``build_for_cudagraph_capture`` takes
    ``max_seq_len`` from the dummy batch's sequence lengths, and the dummy decode batch's sequences are
    ``max_query_len = 1`` token long (``GPUModelRunner._dummy_run``): one page, so ``K = Q_BLOCK * 1``."""
    return paged.Q_BLOCK * paged.cdiv(1, paged.PAGE_SIZE)


def capture_source() -> str:
    """The installed vLLM's ``FlexAttentionMetadataBuilder.build_for_cudagraph_capture``: where the
    capture step's ``max_seq_len`` (and so ``K``) comes from."""
    import inspect

    from vllm.v1.attention.backends.flex_attention import FlexAttentionMetadataBuilder

    return inspect.getsource(FlexAttentionMetadataBuilder.build_for_cudagraph_capture)
