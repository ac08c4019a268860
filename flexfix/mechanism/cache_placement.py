"""Where the KV cache sits, and what lies in front of it: the one thing that decides crash or wrong answer.

The misread ``kv_indices`` windows of a replayed ``as_strided`` launch hold valid page numbers of other rows and
``-1`` pads (:mod:`flexfix.mechanism.misreads`).  A ``-1`` page makes flex load keys and values at
``cache + head * head_stride - PAGE_SIZE * head_dim`` elements: for KV head 0 that is the ``PAGE_SIZE * head_dim *
itemsize`` bytes *in front of* the cache's first byte (2,048 bytes in bf16 with ``head_dim`` 64); for the other heads it
is the end of the previous head, inside the cache.  The mask then hides those keys, so what the read returns does not
matter -- only whether the address is mapped: mapped, the step is silently wrong (the rows' own pages were skipped);
not mapped, the kernel faults (an illegal memory access).

This module places the cache on purpose, so that an experiment can choose the answer:

* ``"default"``: as :func:`flexfix.mechanism.paged.make_cache` allocates it (PyTorch's caching allocator; what is in
  front is whatever the allocator and the driver put there);
* ``"guarded"``: the cache is a view ``GUARD_BYTES`` into a larger allocation whose first bytes are zeros, so the
  bytes in front of it are mapped (same allocation) whatever else the process allocated;
* ``"fenced"`` (CUDA only): the cache starts right after ``GUARD_BYTES`` of virtual address space reserved with the
  CUDA driver's virtual memory management (``cuMemAddressReserve``) and left *unmapped*, so nothing can ever be mapped
  in front of it.

:func:`front_of` asks the driver (``cuMemGetAddressRange``) whether an address in front of a tensor belongs to an
allocation, without touching it.
"""

from __future__ import annotations

import ctypes
import functools

import torch

__all__ = ["PLACEMENTS", "GUARD_BYTES", "place", "front_of", "read_front", "PlacementError"]

PLACEMENTS = ("default", "guarded", "fenced")
GUARD_BYTES = 2 << 20  # 2 MiB: one granule of the driver's virtual memory management, far more than one page of K/V
_KEEP: list[object] = []  # fenced mappings live as long as the process (a child process per scenario)


class PlacementError(RuntimeError):
    """A placement that cannot be made here (no CUDA, or a driver without virtual memory management)."""


def place(cache: torch.Tensor, placement: str) -> torch.Tensor:
    """``cache`` (contiguous) copied to a new place chosen by ``placement``; ``"default"`` returns it unchanged."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == "default":
        return cache
    if not cache.is_contiguous():
        raise ValueError("place() needs a contiguous cache")
    nbytes = cache.numel() * cache.element_size()
    if placement == "guarded":
        raw = torch.zeros(GUARD_BYTES + nbytes, dtype=torch.uint8, device=cache.device)
        out = raw[GUARD_BYTES:].view(cache.dtype).view(cache.shape)
    else:
        if cache.device.type != "cuda":
            raise PlacementError("the fenced placement needs CUDA (it reserves unmapped GPU address space)")
        out = _fenced_bytes(nbytes, cache.device).view(cache.dtype).view(cache.shape)
    out.copy_(cache)
    return out


def front_of(t: torch.Tensor, nbytes: int) -> dict:
    """Whether the byte ``nbytes`` in front of ``t``'s first byte belongs to a CUDA allocation.

    ``{"address", "front_mapped", "front_base", "front_size"}``; ``front_mapped`` is None where it cannot be asked
    (a CPU tensor).  Asking reads nothing: ``cuMemGetAddressRange`` only looks the address up."""
    address = t.data_ptr()
    row = {"address": address, "front_mapped": None, "front_base": None, "front_size": None}
    if t.device.type != "cuda":
        return row
    base, size = ctypes.c_uint64(), ctypes.c_size_t()
    status = _cuda().cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), address - nbytes)
    row["front_mapped"] = status == 0
    if status == 0:
        row.update(front_base=base.value, front_size=size.value)
    return row


def read_front(t: torch.Tensor, nbytes: int) -> int:
    """Read the ``nbytes`` in front of ``t``'s first byte with a one-block Triton kernel, as the attention kernel's
    ``-1`` page does, and return their sum.  Where they are not mapped this is an illegal memory access: the process's
    CUDA context is lost, so call it in a child process.  ``nbytes`` must be a power of two."""
    if t.device.type != "cuda":
        raise PlacementError("read_front needs a CUDA tensor (it launches a GPU kernel)")
    if nbytes < 16 or nbytes & (nbytes - 1):
        raise ValueError(f"nbytes must be a power of two >= 16, got {nbytes}")
    out = torch.empty(nbytes, dtype=torch.uint8, device=t.device)
    _peek_kernel()[(1,)](t.reshape(-1).view(torch.uint8), out, -nbytes, BLOCK=nbytes)
    torch.cuda.synchronize(t.device)
    return int(out.sum())


@functools.cache
def _peek_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def peek(src, dst, offset, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(dst + i, tl.load(src + offset + i))

    return peek


# --- the CUDA driver's virtual memory management, through ctypes (no extra package) ---


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_PINNED, _ON_DEVICE, _READ_WRITE = 1, 1, 3  # CU_MEM_ALLOCATION_TYPE_PINNED, CU_MEM_LOCATION_TYPE_DEVICE, ..._READWRITE


_P, _U64, _SIZE = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t
_SIGNATURES = {  # the driver functions used here, with their C argument types (CUdeviceptr and handles are 64-bit)
    "cuMemGetAddressRange_v2": [_P, _P, _U64],
    "cuMemGetAllocationGranularity": [_P, _P, ctypes.c_int],
    "cuMemAddressReserve": [_P, _SIZE, _SIZE, _U64, _U64],
    "cuMemCreate": [_P, _SIZE, _P, _U64],
    "cuMemMap": [_U64, _SIZE, _SIZE, _U64, _U64],
    "cuMemSetAccess": [_U64, _SIZE, _P, _SIZE],
}


@functools.cache
def _cuda() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise PlacementError(f"the CUDA driver library (libcuda.so.1) cannot be loaded: {e}") from None
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise PlacementError(f"{what} failed with CUresult {status}")


def _fenced_bytes(nbytes: int, device: torch.device) -> torch.Tensor:
    """``nbytes`` of mapped GPU memory, as a uint8 tensor, starting right after ``GUARD_BYTES`` of reserved, unmapped
    address space."""
    torch.cuda.init()
    torch.empty(1, device=device)  # the primary context exists and is current
    cu = _cuda()
    index = device.index if device.index is not None else torch.cuda.current_device()
    prop = _AllocationProp(type=_PINNED, location=_Location(_ON_DEVICE, index))
    granule = ctypes.c_size_t()
    byref = ctypes.byref
    _check(cu.cuMemGetAllocationGranularity(byref(granule), byref(prop), 0), "cuMemGetAllocationGranularity")
    if GUARD_BYTES % granule.value:
        raise PlacementError(f"GUARD_BYTES={GUARD_BYTES} is not a multiple of the granularity {granule.value}")
    size = -(-nbytes // granule.value) * granule.value
    va = ctypes.c_uint64()
    _check(cu.cuMemAddressReserve(byref(va), GUARD_BYTES + size, 0, 0, 0), "cuMemAddressReserve")
    handle = ctypes.c_uint64()
    _check(cu.cuMemCreate(byref(handle), size, byref(prop), 0), "cuMemCreate")
    start = va.value + GUARD_BYTES
    _check(cu.cuMemMap(start, size, 0, handle.value, 0), "cuMemMap")
    access = _AccessDesc(location=_Location(_ON_DEVICE, index), flags=_READ_WRITE)
    _check(cu.cuMemSetAccess(start, size, byref(access), 1), "cuMemSetAccess")

    class _Memory:  # what torch.as_tensor reads a foreign CUDA pointer from
        __cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (start, False),
            "strides": None,
            "version": 2,
        }

    holder = _Memory()
    _KEEP.append(holder)
    return torch.as_tensor(holder, device=device)
