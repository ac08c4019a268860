"""A small paged-KV FlexAttention decode harness in plain torch, shaped like vLLM 0.20.0's.

One decode step: ``B`` requests, one query token each, their keys and values in a
paged cache (page = 16 tokens, physical page 0 is the null page as in vLLM).  From the
block table it builds what vLLM's FlexAttention backend builds on its direct-build path:

* ``physical_to_logical [B, num_pages]`` (int64, -1 where a page is not the request's);
* ``kv_indices [G, K]`` (int32): for each query block of 16 tokens, the distinct
  physical pages its requests use, left-packed and padded with -1, where
  ``G = cdiv(B, 16)`` and ``K = 16 * cdiv(max_seq_len, 16)``: ``K`` follows the
  longest sequence of the step, so it changes from step to step;
* ``kv_num_blocks [G]``: how many entries of each row are real.

These go into persistent buffers ``[G_max, W_max]`` through an injected copy
(``flexfix.mechanism.persistent``), exactly where a CUDA graph captures them.  Attention runs
either through ``flex_attention`` (compiled on CUDA) with a ``BlockMask`` built by
``BlockMask.from_kv_blocks`` or, on CPU, through :func:`blocksparse_decode`, a plain
torch kernel that reads ``kv_indices`` the way a GPU kernel does: from a pointer, an
offset and strides.  :func:`reference` is an independent fp32 answer computed from
the block tables alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flexfix.edition.params import positive_int
from flexfix.mechanism.persistent import copy_to_persistent

__all__ = [
    "PAGE_SIZE",
    "Q_BLOCK",
    "PagedShape",
    "DecodeStep",
    "Views",
    "PersistentBuffers",
    "cdiv",
    "make_cache",
    "make_step",
    "physical_to_logical",
    "build_kv_indices",
    "make_mask_mod",
    "make_block_mask",
    "flex_decode",
    "blocksparse_decode",
    "reference",
    "kernel_options",
]

PAGE_SIZE = 16  # tokens per KV page: vLLM's block_size, and BLOCK_N of the direct build
Q_BLOCK = 16  # query tokens per query block: vLLM's q_block_size, BLOCK_M

CopyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class PagedShape:
    """The fixed sizes: what the persistent buffers and the KV cache are allocated for."""

    max_num_seqs: int = 64
    max_model_len: int = 1024
    num_pages: int = 2048  # physical pages in the cache, the null page 0 included
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len", "num_pages", "num_heads", "num_kv_heads", "head_dim"):
            positive_int(f"PagedShape.{name}", getattr(self, name))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads} (GQA)")
        if self.num_pages < 2:
            raise ValueError("num_pages must be at least 2 (page 0 is the null page)")

    @property
    def g_max(self) -> int:  # rows of the persistent kv_indices buffer
        return cdiv(self.max_num_seqs, Q_BLOCK)

    @property
    def w_max(self) -> int:  # its width: vLLM's max_num_kv_indices
        return Q_BLOCK * cdiv(self.max_model_len, PAGE_SIZE)


@dataclass
class DecodeStep:
    """One decode step: sequence lengths (the new token included), block table, queries."""

    seq_lens: torch.Tensor  # [B] int32
    block_table: torch.Tensor  # [B, cdiv(max_seq_len, 16)] int32, 0 where unused
    query: torch.Tensor  # [1, num_heads, B, head_dim]

    @property
    def batch(self) -> int:
        return int(self.seq_lens.numel())

    @property
    def num_query_blocks(self) -> int:  # G
        return cdiv(self.batch, Q_BLOCK)

    @property
    def width(self) -> int:  # K
        return Q_BLOCK * cdiv(int(self.seq_lens.max()), PAGE_SIZE)


def make_cache(
    shape: PagedShape, *, seed: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random keys and values, laid out as vLLM hands them to flex: [1, Hkv, pages*16, D]."""
    g = torch.Generator().manual_seed(seed)
    size = (1, shape.num_kv_heads, shape.num_pages * PAGE_SIZE, shape.head_dim)
    k = torch.randn(size, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(size, generator=g).to(device=device, dtype=dtype)
    return k, v


def make_step(
    shape: PagedShape, seq_lens: list[int], *, seed: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> DecodeStep:
    """A decode step whose requests own disjoint random physical pages (never page 0)."""
    if not seq_lens:
        raise ValueError("seq_lens must name at least one request")
    if len(seq_lens) > shape.max_num_seqs:
        raise ValueError(f"{len(seq_lens)} requests exceed max_num_seqs={shape.max_num_seqs}")
    bad = [n for n in seq_lens if not 1 <= n <= shape.max_model_len]
    if bad:
        raise ValueError(f"sequence lengths {bad} are outside 1..max_model_len={shape.max_model_len}")
    pages_per_req = [cdiv(n, PAGE_SIZE) for n in seq_lens]
    if sum(pages_per_req) > shape.num_pages - 1:
        raise ValueError(
            f"the step needs {sum(pages_per_req)} pages, the cache has {shape.num_pages - 1} besides the null page"
        )
    g = torch.Generator().manual_seed(seed)
    pages = torch.randperm(shape.num_pages - 1, generator=g)[: sum(pages_per_req)] + 1
    table = torch.zeros(len(seq_lens), max(pages_per_req), dtype=torch.int32)
    start = 0
    for i, n in enumerate(pages_per_req):
        table[i, :n] = pages[start : start + n]
        start += n
    query = torch.randn(1, shape.num_heads, len(seq_lens), shape.head_dim, generator=g)
    return DecodeStep(
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_table=table.to(device),
        query=query.to(device=device, dtype=dtype),
    )


def physical_to_logical(step: DecodeStep, num_pages: int) -> torch.Tensor:
    """[B, num_pages] int64: the logical page of each physical page, -1 where not owned."""
    b, p = step.block_table.shape
    out = torch.full((b, num_pages), -1, dtype=torch.int64, device=step.block_table.device)
    logical = torch.arange(p, device=out.device).expand(b, p)
    used = step.block_table > 0
    rows = torch.arange(b, device=out.device)[:, None].expand(b, p)
    out[rows[used], step.block_table[used].long()] = logical[used]
    return out


def build_kv_indices(step: DecodeStep) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's direct build: ``kv_indices [G, K]`` int32 and ``kv_num_blocks [G]`` int32.

    The pages of the 16 query tokens of a block are concatenated (rows past the batch
    are padded with page 0), page 0 is skipped, each page kept at its first
    occurrence, left-packed, and the rest filled with -1.
    """
    g, k = step.num_query_blocks, step.width
    pages = torch.zeros(g * Q_BLOCK, k // Q_BLOCK, dtype=torch.int64, device=step.query.device)
    used = step.block_table[:, : k // Q_BLOCK].long()
    pages[: step.batch, : used.shape[1]] = used
    rows = pages.reshape(g, k)
    out = torch.full((g, k), -1, dtype=torch.int32, device=rows.device)
    for i in range(g):
        row = rows[i]
        values, inverse = torch.unique(row, return_inverse=True)
        first = torch.full((values.numel(),), k, dtype=torch.int64, device=row.device)
        first.scatter_reduce_(0, inverse, torch.arange(k, device=row.device), "amin")
        keep = values != 0
        ordered = values[keep][torch.argsort(first[keep])]
        out[i, : ordered.numel()] = ordered.to(torch.int32)
    return out, (out >= 0).sum(-1).to(torch.int32)


@dataclass
class Views:
    """The tensors a kernel is launched with: views into the persistent buffers."""

    kv_indices: torch.Tensor
    kv_num_blocks: torch.Tensor
    physical_to_logical: torch.Tensor
    seq_lens: torch.Tensor
    doc_ids: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)


class PersistentBuffers:
    """vLLM's persistent buffers, allocated with ``torch.empty`` as 0.20.0 does.

    ``write`` copies one step's metadata in with ``copy`` (one of the two strategies of
    :mod:`flexfix.mechanism.persistent`) for ``kv_indices`` and :func:`copy_to_persistent` for the
    rest, and returns the views a kernel would be launched with.
    """

    def __init__(self, shape: PagedShape, device: str = "cpu"):
        self.shape = shape
        self.kv_indices = torch.empty(shape.g_max, shape.w_max, dtype=torch.int32, device=device)
        self.kv_num_blocks = torch.empty(shape.g_max, dtype=torch.int32, device=device)
        self.physical_to_logical = torch.empty(shape.max_num_seqs, shape.num_pages, dtype=torch.int64, device=device)
        self.seq_lens = torch.empty(shape.max_num_seqs, dtype=torch.int32, device=device)
        self.doc_ids = torch.empty(shape.max_num_seqs, dtype=torch.int32, device=device)

    def write(self, step: DecodeStep, copy: CopyFn) -> Views:
        kv_indices, kv_num_blocks = build_kv_indices(step)
        device = self.kv_indices.device
        return Views(
            kv_indices=copy(self.kv_indices, kv_indices),
            kv_num_blocks=copy_to_persistent(self.kv_num_blocks, kv_num_blocks),
            physical_to_logical=copy_to_persistent(
                self.physical_to_logical, physical_to_logical(step, self.shape.num_pages)
            ),
            seq_lens=copy_to_persistent(self.seq_lens, step.seq_lens.to(device)),
            doc_ids=copy_to_persistent(self.doc_ids, torch.arange(step.batch, dtype=torch.int32, device=device)),
        )


def make_mask_mod(physical_to_logical: torch.Tensor, seq_lens: torch.Tensor, doc_ids: torch.Tensor):
    """vLLM's paged mask: a KV position counts if its page is the query's request's, the
    logical position exists, and (decode: the query is the last token) it is causal."""

    def mask_mod(b, h, q_idx, kv_idx):
        req = doc_ids[q_idx]
        logical_page = physical_to_logical[req, kv_idx // PAGE_SIZE]
        logical_kv = logical_page * PAGE_SIZE + kv_idx % PAGE_SIZE
        return (logical_page >= 0) & (logical_kv >= 0) & (logical_kv < seq_lens[req])

    return mask_mod


def make_block_mask(views: Views, num_tokens: int, cache_tokens: int):
    from torch.nn.attention.flex_attention import BlockMask

    return BlockMask.from_kv_blocks(
        views.kv_num_blocks[None, None],
        views.kv_indices[None, None],
        full_kv_num_blocks=None,
        full_kv_indices=None,
        BLOCK_SIZE=(Q_BLOCK, PAGE_SIZE),
        mask_mod=make_mask_mod(views.physical_to_logical, views.seq_lens, views.doc_ids),
        seq_lengths=(num_tokens, cache_tokens),
        compute_q_blocks=False,
    )


def kernel_options(mode: str) -> dict | None:
    """Kernel options as vLLM 0.20.0's ``get_kernel_options`` sets them on the direct build.

    ``"pytorch"``: none (PyTorch chooses); ``"vllm"``: BLOCK_M = BLOCK_N = 16;
    ``"batch_invariant"``: as under ``VLLM_BATCH_INVARIANT=1``.
    """
    if mode == "pytorch":
        return None
    if mode == "vllm":
        return {"FORCE_USE_FLEX_ATTENTION": True, "BLOCK_M": Q_BLOCK, "BLOCK_N": PAGE_SIZE}
    if mode == "batch_invariant":
        return {"FORCE_USE_FLEX_ATTENTION": True, "BLOCK_M": 16, "BLOCK_N": 16, "IS_DIVISIBLE": False}
    raise ValueError(f"kernel options mode must be 'pytorch', 'vllm' or 'batch_invariant', got {mode!r}")


_COMPILED: dict[str, Callable] = {}


def flex_decode(query, k_cache, v_cache, block_mask, *, compiled: bool, options: dict | None):
    """``flex_attention`` with GQA, compiled once per process when ``compiled``."""
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if compiled:
        if "flex" not in _COMPILED:
            import torch._dynamo

            # Sweeps meet many batch sizes, strides and kernel options: one kernel each is expected.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            _COMPILED["flex"] = torch.compile(flex_attention, fullgraph=True)
        fn = _COMPILED["flex"]
    return fn(query, k_cache, v_cache, block_mask=block_mask, enable_gqa=True, kernel_options=options)


def _read_row(t: torch.Tensor, row: int, count: int) -> torch.Tensor:
    """Read ``count`` elements of row ``row`` the way a kernel does: base storage, offset
    and strides, with no notion of the row's width (only the storage bounds)."""
    storage = torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage())
    offsets = t.storage_offset() + row * t.stride(0) + torch.arange(count) * t.stride(1)
    if count and int(offsets.max()) >= storage.numel():
        raise IndexError(
            f"kv_indices row {row} reads storage cell {int(offsets.max())}, "
            f"past the end of its {storage.numel()}-cell buffer"
        )
    return storage[offsets.to(t.device)]


def blocksparse_decode(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, views: Views, *, reduction: str = "row"
) -> torch.Tensor:
    """The CPU analog of flex's block-sparse decode kernel, in fp32.

    For query block ``g`` it reads ``kv_num_blocks[g]`` block numbers from row ``g`` of
    ``kv_indices`` *through the view's offset and strides*, gathers those pages and applies
    the paged mask.  A block number outside the cache raises IndexError (where a GPU kernel
    would read outside its buffer); a misread in-range block gives a wrong answer (where a
    GPU kernel would too).

    ``reduction="row"``: one softmax over all the pages the query block reads (the block's
    requests together), so the length of every reduction depends on the batch.
    ``reduction="page"``: an online softmax one page (16 keys, flex's ``BLOCK_N``) at a
    time, in ``kv_indices`` order; a page masked for a query adds exactly nothing, so a
    request's result does not depend on the pages of the requests beside it.
    """
    if reduction not in ("row", "page"):
        raise ValueError(f"reduction must be 'row' or 'page', got {reduction!r}")
    _, hq, t, d = query.shape
    hkv, num_pages = k_cache.shape[1], k_cache.shape[2] // PAGE_SIZE
    mask_mod = make_mask_mod(views.physical_to_logical, views.seq_lens, views.doc_ids)
    q = query[0].float()
    k, v = k_cache[0], v_cache[0]  # [kv heads, slots, d]: each tile gathers its keys, then widens them to hq heads
    out = torch.zeros(hq, t, d, dtype=torch.float32, device=query.device)
    for g in range(cdiv(t, Q_BLOCK)):
        count = int(views.kv_num_blocks[g])
        blocks = _read_row(views.kv_indices, g, count).long()
        outside = blocks[(blocks < 0) | (blocks >= num_pages)]
        if outside.numel():
            raise IndexError(
                f"query block {g} reads KV block {int(outside[0])}, outside the cache's blocks 0..{num_pages - 1}"
            )
        rows = torch.arange(g * Q_BLOCK, min((g + 1) * Q_BLOCK, t), device=query.device)
        tiles = [blocks] if reduction == "row" else [blocks[i : i + 1] for i in range(count)]
        out[:, rows] = _online_softmax(q[:, rows], k, v, rows, tiles, mask_mod, hq // hkv)
    return out[None]


def _online_softmax(q, k, v, rows, tiles, mask_mod, group: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the keys of ``tiles`` (lists of pages), one tile at a
    time, as a flash kernel does.  With a single tile it is the plain softmax.  ``k``, ``v``: the
    cache's kv heads, each shared by ``group`` query heads (GQA); only a tile's keys are widened to
    the query heads (widening the whole cache first cost more than the attention at CPU sizes)."""
    hq, n, d = q.shape
    m = torch.full((hq, n, 1), float("-inf"), device=q.device)
    denom = torch.zeros(hq, n, 1, device=q.device)
    acc = torch.zeros(hq, n, d, device=q.device)
    for tile in tiles:
        kv_pos = (tile[:, None] * PAGE_SIZE + torch.arange(PAGE_SIZE, device=q.device)).flatten()
        keys = k[:, kv_pos].float().repeat_interleave(group, dim=0)
        values = v[:, kv_pos].float().repeat_interleave(group, dim=0)
        scores = (q[:, :, None, :] * keys[:, None]).sum(-1) / math.sqrt(d)
        scores = scores.masked_fill(~mask_mod(0, 0, rows[:, None], kv_pos[None, :]), float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        shift = torch.where(torch.isinf(m_new), 0.0, m_new)  # a row with nothing unmasked yet
        p = torch.exp(scores - shift)
        alpha = torch.exp(m - shift)
        denom = denom * alpha + p.sum(-1, keepdim=True)
        acc = acc * alpha + (p[..., None] * values[:, None]).sum(-2)
        m = m_new
    return (acc / denom).nan_to_num(0.0)  # a fully masked row gives 0


def reference(step: DecodeStep, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
    """fp32 attention of each request over its own pages, from the block table alone."""
    _, hq, b, d = step.query.shape
    hkv = k_cache.shape[1]
    out = torch.empty(hq, b, d, dtype=torch.float32)
    for i in range(b):
        n = int(step.seq_lens[i])
        pages = step.block_table[i, : cdiv(n, PAGE_SIZE)].long().cpu()
        pos = (pages[:, None] * PAGE_SIZE + torch.arange(PAGE_SIZE)).flatten()[:n]
        k = k_cache[0][:, pos.to(k_cache.device)].float().cpu().repeat_interleave(hq // hkv, 0)
        v = v_cache[0][:, pos.to(v_cache.device)].float().cpu().repeat_interleave(hq // hkv, 0)
        q = step.query[0, :, i].float().cpu()
        probs = torch.softmax((k @ q[:, :, None]).squeeze(-1) / math.sqrt(d), dim=-1)
        out[:, i] = (probs[:, None, :] @ v).squeeze(1)
    return out[None]
