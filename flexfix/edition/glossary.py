"""The words and the fixed numbers the notebooks use, each defined once, with its value read from code.

A notebook's markdown may state a number only if it is a *definition* (the query-block size, the width of a buffer
row), not a *measurement*; tests/test_prose_numbers.py holds it to that, with :func:`defined_numbers` and the
notebook's parameters as the only sources. Measured numbers are printed, or written in by flexfix.edition.narrative."""

from __future__ import annotations

import contextlib
import logging
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING

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


@contextlib.contextmanager
def quiet_vllm():
    """Import and call vLLM without its start-up log lines (NIXL, Triton, ``vllm._C`` on a machine without a GPU,
    torch's "No CUDA runtime" warning): vLLM's own logging level is ERROR inside, and what it was afterwards."""
    names = ("vllm", "torch.utils.cpp_extension")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    env = os.environ.get("VLLM_LOGGING_LEVEL")
    os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"  # read when vLLM configures its logger, at its first import
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if env is None:
            os.environ.pop("VLLM_LOGGING_LEVEL", None)
        else:
            os.environ["VLLM_LOGGING_LEVEL"] = env


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


def capture_source() -> str:
    """The installed vLLM's ``FlexAttentionMetadataBuilder.build_for_cudagraph_capture``: where the
    capture step's ``max_seq_len`` (and so ``K``) comes from."""
    import inspect

    with quiet_vllm():
        from vllm.v1.attention.backends.flex_attention import FlexAttentionMetadataBuilder

    return inspect.getsource(FlexAttentionMetadataBuilder.build_for_cudagraph_capture)


def _lines(obj, wanted, gaps: bool = False) -> str:
    """The lines of ``obj``'s source that satisfy ``wanted(line)``, each with its line number in its file; with
    ``gaps``, a ``...`` line where lines between two kept ones are left out, saying how many."""
    import inspect

    obj = inspect.unwrap(obj)  # a decorated method (torch.inference_mode, say): its own source and file
    lines, first = inspect.getsourcelines(obj)
    at = [i for i, line in enumerate(lines) if wanted(line)]
    kept = []
    for k, i in enumerate(at):
        if gaps and k and i - at[k - 1] > 1:
            n = i - at[k - 1] - 1
            kept.append(f"{'...':>5}  ({n} line{'s' * (n > 1)} left out)")
        kept.append(f"{first + i:5d}  {lines[i].rstrip()}")
    if gaps and at and at[-1] < len(lines) - 1:
        kept.append(f"{'...':>5}  (the rest of {obj.__qualname__} left out)")
    if not kept:
        raise RuntimeError(f"the installed vLLM's {obj.__qualname__} no longer holds the lines shown here")
    path = str(inspect.getsourcefile(obj))
    path = path[path.rfind("/vllm/") + 1 :]  # vllm/..., as in vLLM's repository
    return f"{path}, {obj.__qualname__}:\n" + "\n".join(kept)


def dummy_decode_source() -> str:
    """The lines of the installed vLLM's ``GPUModelRunner._dummy_run`` (the batch a graph is captured on) that set
    the capture batch's query length and its sequence lengths: a uniform decode batch is one token per request, and
    its sequences are ``max_query_len`` tokens long."""
    with quiet_vllm():
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    def wanted(line: str) -> bool:
        code = line.strip()
        return code.startswith(("max_query_len = self.uniform_decode_query_len", "seq_lens = max_query_len"))

    return _lines(GPUModelRunner._dummy_run, wanted)


def padding_source() -> str:
    """The installed vLLM's ``CudagraphDispatcher._compute_bs_to_padded_graph_size``: the rule that sends a batch
    size between two capture sizes to the larger one (whose graph it then replays)."""
    with quiet_vllm():
        from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    def wanted(line: str) -> bool:
        words = (
            "for end, start",
            "capture_sizes + [",
            "[0] + capture_sizes",
            "for bs in range",
            "if bs ==",
            "else:",
            "] = ",
        )
        return any(w in line for w in words)

    return _lines(CudagraphDispatcher._compute_bs_to_padded_graph_size, wanted)


def debug_check_source() -> str:
    """The installed vLLM's own replay check (``CUDAGraphWrapper``): on only when ``VLLM_LOGGING_LEVEL`` is
    ``DEBUG``, it compares the ``data_ptr()`` of the wrapper's positional tensor arguments (``args``) with the
    capture's, nothing else."""
    with quiet_vllm():
        from vllm.compilation.cuda_graph import CUDAGraphWrapper

    def switch(line: str) -> bool:
        return "self.is_debugging_mode = " in line

    def check(line: str) -> bool:
        code = line.strip()
        starts = (
            "if self.is_debugging_mode",
            "input_addresses = [",
            "entry.input_addresses = ",
            "new_input_addresses = [",
        )
        starts += ("assert new_input_addresses",)
        return code.startswith(starts)

    def read(line: str) -> bool:
        return check(line) or "data_ptr() for x in args" in line

    return _lines(CUDAGraphWrapper.__init__, switch) + "\n" + _lines(CUDAGraphWrapper.__call__, read, gaps=True)


def copy_call_sites():
    """Where the installed vLLM's FlexAttention backend calls ``copy_to_persistent``, and where the builder that runs
    before every step calls the function that copies ``kv_indices``: one row per call (function, line, code), read
    from the module's source with :mod:`ast`."""
    import ast
    import inspect

    import pandas as pd

    with quiet_vllm():
        from vllm.v1.attention.backends import flex_attention as fa

    path = inspect.getsourcefile(fa)
    text = inspect.getsource(fa)
    lines = text.splitlines()
    rows = []

    def visit(node, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                visit(child, [*where, child.name])
                continue
            if isinstance(child, ast.Call):
                name = getattr(child.func, "id", None) or getattr(child.func, "attr", None)
                if name in ("copy_to_persistent", "_build_block_mask_direct"):
                    rows.append(
                        {
                            "function": ".".join(where),
                            "line": child.lineno,
                            "calls": name,
                            "code": lines[child.lineno - 1].strip(),
                        }
                    )
            visit(child, where)

    visit(ast.parse(text), [])
    if not rows:
        raise RuntimeError(f"{path}: no call of copy_to_persistent found")
    return pd.DataFrame(rows).sort_values("line").reset_index(drop=True)
