"""The words and the fixed numbers the notebooks use, each defined once, with its value read from code.

A notebook's markdown may state a number only if it is a *definition* (the query-block size, the width of a buffer
row), not a *measurement*; tests/test_prose_numbers.py holds it to that, with :func:`defined_numbers` and the
notebook's parameters as the only sources. Measured numbers are printed, or written in by flexfix.edition.narrative."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from flexfix.edition.vllm_source import (  # the readers of vLLM's own source, re-exported for the notebooks
    capture_source,
    copy_call_sites,
    debug_check_source,
    dummy_decode_source,
    padding_source,
    quiet_vllm,
)
from flexfix.mechanism import paged

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TERMS",
    "markdown",
    "defined_numbers",
    "vllm_capture_sizes",
    "decode_dispatch",
    "k_at_capture",
    "capture_source",
    "dummy_decode_source",
    "padding_source",
    "debug_check_source",
    "copy_call_sites",
    "width_explained",
    "same_as_vllm",
    "quiet_vllm",
    "capture_sizes_line",
]

# term -> definition (Markdown).  Numbers in definitions come from flexfix.mechanism.paged, formatted in below.
TERMS = {
    "query block": (
        f"{paged.Q_BLOCK} consecutive query tokens of a step: the unit the `BlockMask` is built in (vLLM's "
        f"`q_block_size`, the mask's `BLOCK_SIZE=({paged.Q_BLOCK}, {paged.PAGE_SIZE})`), one row of `kv_indices`. In "
        f"decode every request brings one query token, so a query block holds {paged.Q_BLOCK} *requests*. Not the "
        "Triton kernel's launch tile `BLOCK_M` (the queries one program of the attention kernel processes): a size "
        "torch's FlexAttention template picks at compile time, which divides the query block, may be smaller, and "
        "these runs do not record."
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
        f"one query block can touch: {paged.Q_BLOCK} requests, each with up to `cdiv(max_seq_len, {paged.PAGE_SIZE})` "
        "pages (so it is not the token count rounded up: it counts pages of a whole query block). It grows whenever "
        "the longest sequence in the batch crosses a page boundary."
    ),
    "kv_indices": (
        "`[G, K]` int32: for each query block, the distinct KV pages its requests use, left-packed, padded with "
        "`-1`. The only per-step tensor that is 2-D *and* narrower than its buffer, hence the only one whose strides "
        "the two copies set differently (table below). vLLM hands it to FlexAttention's `BlockMask` as "
        "`kv_indices[None, None]`, a `[1, 1, G, K]` view (a batch and a head dimension of size 1) with strides "
        "`(G*K, G*K, K, 1)` under the `as_strided` copy: the two leading dimensions add nothing, the row stride is "
        "the same `K`; this series writes the tensor as `[G, K]`."
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
    "bitwise equal / batch-invariant": (
        "`torch.equal` between a request's output in a batch and alone; a kernel or engine is batch-invariant "
        "when that holds for every batch. It matters here because of the fix's second change: vLLM 0.20.0 refuses "
        "FlexAttention in batch-invariant mode (`VLLM_BATCH_INVARIANT=1`), and PR #40842 lifted that refusal."
    ),
    "max_num_seqs, max_num_batched_tokens": (
        "engine arguments of vLLM (`LLM(...)`): the most requests, and the most tokens, it schedules in one step. "
        "`max_num_seqs` also bounds the batch sizes that get a FULL decode graph; `max_num_batched_tokens` sets "
        "`G_max`."
    ),
    "doc_ids": (
        "for each query token of the step, the index of the request it belongs to: the mask looks that request up "
        "in `physical_to_logical`, where a KV page that is not the request's maps to `-1` and is masked."
    ),
    "direct-build path": (
        "how vLLM 0.20.0's FlexAttention metadata builder makes the `BlockMask` for these steps "
        "(`_build_block_mask_direct`): straight from the block table, as `kv_indices` and `kv_num_blocks`, instead of "
        "evaluating the mask function block by block."
    ),
}


def markdown():
    """The glossary as Markdown, one bullet per term (rendered in a notebook)."""
    from flexfix.edition.narrative import model_terms  # r15 D9: with the models' and the needle's terms

    return model_terms.glossary(TERMS)


def defined_numbers() -> dict[float, str]:
    """Numbers a notebook's markdown may state without a measurement behind them: value -> meaning."""
    return {
        paged.Q_BLOCK: "query-block size and KV-page size (flexfix.mechanism.paged.Q_BLOCK, PAGE_SIZE)",
        0: "row 0 / query block 0",
        1: "one query block, one request, one token",
        2: "two query blocks: G >= 2",
        -1: "the -1 pad",
    }


def width_explained(step: paged.DecodeStep) -> str:
    """How ``K`` of this step is computed: from its longest sequence, in pages, times the query block's requests."""
    longest = int(step.seq_lens.max())
    pages = paged.cdiv(longest, paged.PAGE_SIZE)
    return (
        f"K = {paged.Q_BLOCK} * cdiv(max_seq_len, {paged.PAGE_SIZE}) = {paged.Q_BLOCK} * cdiv({longest}, "
        f"{paged.PAGE_SIZE}) = {paged.Q_BLOCK} * {pages} = {step.width}: a query block of {paged.Q_BLOCK} requests, "
        f"each with at most {pages} pages, touches at most {step.width} distinct pages"
    )


def same_as_vllm(step: paged.DecodeStep, num_pages: int) -> str:
    """Whether :func:`flexfix.mechanism.paged.build_kv_indices` gives this step the ``kv_indices`` that the installed
    vLLM's own ``unique_static_unsorted`` gives the same block table (as its direct build calls it), in one line."""
    import torch

    with quiet_vllm():
        from vllm.v1.attention.backends.flex_attention import pad_to_multiple, unique_static_unsorted

    mine, _ = paged.build_kv_indices(step)
    used = step.block_table[:, : step.width // paged.PAGE_SIZE].long()
    padded = pad_to_multiple(used, multiple=paged.Q_BLOCK, dim=0).reshape(-1, step.width)
    theirs = unique_static_unsorted(padded, M=num_pages).to(torch.int32)
    same = mine.shape == theirs.shape and bool(torch.equal(mine, theirs))
    return (
        f"kv_indices {tuple(mine.shape)} equal to vLLM's unique_static_unsorted on the same block table: "
        f"{'yes' if same else 'NO'}"
    )


def _configured(max_num_seqs: int, max_num_batched_tokens: int = 8192, capture_sizes=None) -> SimpleNamespace:
    """A stand-in VllmConfig with these two limits (default graph mode FULL_AND_PIECEWISE, no speculative decoding,
    no LoRA, one GPU), its capture sizes set by the installed vLLM's own rule (``VllmConfig._set_cudagraph_sizes``):
    its default list, or ``capture_sizes`` where given (an engine's ``cudagraph_capture_sizes``, which it keeps)."""
    with quiet_vllm():
        from vllm.config.compilation import CompilationConfig, CompilationMode, CUDAGraphMode
        from vllm.config.vllm import VllmConfig

    rule = getattr(VllmConfig, "_set_cudagraph_sizes", None)
    if rule is None:
        raise RuntimeError("the installed vLLM has no VllmConfig._set_cudagraph_sizes: capture sizes unknown")
    own = {} if capture_sizes is None else {"cudagraph_capture_sizes": sorted(int(n) for n in capture_sizes)}
    compilation = CompilationConfig(**own)
    compilation.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    stand_in = SimpleNamespace(
        model_config=SimpleNamespace(enforce_eager=False),
        compilation_config=compilation,
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens),
        speculative_config=None,
        lora_config=None,
        performance_mode="throughput",
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    with quiet_vllm():
        rule(stand_in)
        compilation.mode = CompilationMode.VLLM_COMPILE  # as an engine compiles: attention splits the graph
        compilation.set_splitting_ops_for_v1("naive")
    return stand_in


def vllm_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int = 8192) -> list[int]:
    """The batch sizes (tokens per step) vLLM captures CUDA graphs for, by the installed vLLM's own rule
    (``VllmConfig._set_cudagraph_sizes``): PIECEWISE graphs at every one of them; which of them also get a FULL
    decode graph, :func:`decode_dispatch` says."""
    return list(_configured(max_num_seqs, max_num_batched_tokens).compilation_config.cudagraph_capture_sizes)


_FULL_SIZES: dict[int, list[int]] = {}  # max_num_seqs -> its FULL decode graph sizes, as decode_dispatch found them


def capture_sizes_line(max_num_seqs: int) -> str:
    """The batch sizes (tokens per step) an engine of ``max_num_seqs`` captures graphs for, and which of them hold a
    FULL decode graph (attention inside), by the installed vLLM's own rules (the default ``FULL_AND_PIECEWISE``)."""
    decode_dispatch([(max_num_seqs, 1)])
    full = _FULL_SIZES[int(max_num_seqs)]
    return (
        f"max_num_seqs={max_num_seqs}: graphs captured at {vllm_capture_sizes(max_num_seqs)} tokens per step "
        f"(PIECEWISE at every one); a FULL decode graph, attention inside, only at {full}"
    )


def decode_dispatch(engines, capture_sizes=None) -> pd.DataFrame:
    """For each ``(max_num_seqs, batch)`` in ``engines``: what the installed vLLM's own ``CudagraphDispatcher``
    (keys set by ``initialize_cudagraph_keys``) runs a uniform decode step of ``batch`` requests with: the FULL
    decode graph sizes it holds (only sizes up to ``max_num_seqs``), the size the batch is padded to, and the
    graph mode (FULL: a captured attention kernel is replayed; PIECEWISE or NONE: attention runs outside a graph).
    An ``(engine, max_num_seqs, batch)`` triple adds an ``engine`` column first: whose batch the row is;
    ``capture_sizes``, the engines' own ``cudagraph_capture_sizes`` (default: vLLM's default rule)."""
    import pandas as pd

    with quiet_vllm():
        from vllm.config.compilation import CUDAGraphMode
        from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    keyed = [(None, *e) if len(e) == 2 else tuple(e) for e in engines]
    rows = []
    for engine, max_num_seqs, batch in dict.fromkeys((e, int(m), int(b)) for e, m, b in keyed):
        config = _configured(int(max_num_seqs), capture_sizes=capture_sizes)
        dispatcher = CudagraphDispatcher(config)
        with quiet_vllm():
            dispatcher.initialize_cudagraph_keys(CUDAGraphMode.FULL_AND_PIECEWISE, 1)
            mode, desc = dispatcher.dispatch(int(batch), uniform_decode=True)
        full = sorted(k.num_tokens for k in dispatcher.cudagraph_keys[CUDAGraphMode.FULL])
        _FULL_SIZES.update({int(max_num_seqs): full} if capture_sizes is None else {})  # default rule only
        rows.append(
            ({"engine": engine} if engine is not None else {})
            | {
                "max_num_seqs": int(max_num_seqs),
                "largest FULL decode graph": max(full) if full else None,
                "largest capture size": config.compilation_config.max_cudagraph_capture_size,
                "decode batch": int(batch),
                "padded to": desc.num_tokens,
                "runs with": mode.name,
            }
        )
    return pd.DataFrame(rows)


def k_at_capture() -> int:
    """``K`` of vLLM 0.20.0's decode capture step: ``build_for_cudagraph_capture`` takes ``max_seq_len`` from the dummy
    batch, whose sequences are ``max_query_len = 1`` token long (``_dummy_run``): one page, so ``K = Q_BLOCK * 1``."""
    return paged.Q_BLOCK * paged.cdiv(1, paged.PAGE_SIZE)
