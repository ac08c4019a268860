import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexfix.mechanism import persistent
from flexfix.mechanism.persistent import (
    copy_to_persistent,
    copy_to_persistent_as_strided,
    copy_to_slice,
    storage_map,
    strides_separate,
)


def test_sliced_copy_keeps_destination_strides():
    dst = torch.zeros(4, 10, dtype=torch.int32)
    src = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    view = copy_to_persistent(dst, src)
    assert view.stride() == dst.stride() and torch.equal(view, src)
    assert view.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr()


def test_as_strided_copy_packs_densely_with_source_strides():
    dst = torch.zeros(4, 10, dtype=torch.int32)
    src = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    view = copy_to_persistent_as_strided(dst, src)
    assert view.stride() == (3, 1)
    assert dst.flatten()[:6].tolist() == list(range(6))


def test_as_strided_error_text_matches_vllm_0_20():
    dst = torch.zeros(2, 2)
    with pytest.raises(
        RuntimeError,
        match=r"Fail to re-stride a persistent tensor of shape torch.Size\(\[2, 2\]\) "
        r"for a tensor of shape torch.Size\(\[3, 3\]\)",
    ):
        copy_to_persistent_as_strided(dst, torch.zeros(3, 3))


def test_storage_map_of_a_transposed_slice():
    base = torch.zeros(3, 5)
    assert storage_map(base[1:, 2:4].t()).tolist() == [[7, 12], [8, 13]]


def test_real_vllm_function_equals_the_reimplementation_on_random_shapes():
    from vllm.v1.attention.backends.flex_attention import copy_to_persistent as vllm_copy

    rng = random.Random(0)
    for _ in range(300):
        ndim = rng.randint(1, 3)
        dst_shape = [rng.randint(1, 9) for _ in range(ndim)]
        src_shape = [rng.randint(1, d) for d in dst_shape]
        src = torch.randint(-5, 5, src_shape, dtype=torch.int32)
        a, b = torch.zeros(dst_shape, dtype=torch.int32), torch.zeros(dst_shape, dtype=torch.int32)
        va, vb = vllm_copy(a, src), copy_to_persistent_as_strided(b, src)
        assert torch.equal(storage_map(va), storage_map(vb)) and torch.equal(a, b)


def test_real_vllm_function_raises_the_same_error():
    from vllm.v1.attention.backends.flex_attention import copy_to_persistent as vllm_copy

    for copy in (vllm_copy, copy_to_persistent_as_strided):
        with pytest.raises(RuntimeError, match="Fail to re-stride a persistent tensor"):
            copy(torch.zeros(2, 2), torch.zeros(3, 3))


@pytest.mark.parametrize(
    "dst, src, words",
    [
        (torch.zeros(4, 4), torch.zeros(4), ["(4, 4)", "(4,)", "rank"]),
        (torch.zeros(4, 4), torch.zeros(2, 5), ["(2, 5)", "(4, 4)", "does not fit"]),
        (torch.zeros(4, 4), torch.zeros(2, 2, dtype=torch.int32), ["torch.float32", "torch.int32"]),
        (torch.zeros(4, 4, device="meta"), torch.zeros(2, 2), ["meta", "cpu"]),
    ],
)
def test_fixed_copy_refuses_and_writes_nothing(dst, src, words):
    before = dst.clone() if dst.device.type != "meta" else None
    with pytest.raises(ValueError) as err:
        copy_to_persistent(dst, src)
    for w in words:
        assert w in str(err.value)
    if before is not None:
        assert torch.equal(dst, before)


def test_fixed_copy_refuses_non_tensors():
    with pytest.raises(TypeError, match="list"):
        copy_to_persistent(torch.zeros(2), [1, 2])


@pytest.mark.parametrize("src_shape", [(2, 5), (2, 8), (4, 5), (4, 8), (1, 1)])
def test_a_buffer_that_starts_inside_its_storage_gets_the_leading_slice_of_itself(src_shape):
    """The fast path builds dst[:G, :K] without getitem: it must keep dst's own offset and strides."""
    storage = torch.zeros(6, 8)
    dst = storage[2:]  # contiguous, storage offset 16
    view = copy_to_persistent(dst, torch.ones(src_shape))
    sliced = dst[: src_shape[0], : src_shape[1]]
    assert (view.data_ptr(), view.stride(), view.storage_offset()) == (
        sliced.data_ptr(),
        sliced.stride(),
        sliced.storage_offset(),
    )
    assert storage[:2].eq(0).all() and int(storage.sum()) == src_shape[0] * src_shape[1]


def test_copy_to_slice_is_the_unchecked_rule():
    dst = torch.zeros(3, 8)
    src = torch.ones(2, 5)
    assert storage_map(copy_to_slice(dst, src)).tolist() == storage_map(dst[:2, :5]).tolist()


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool]
DEVICES = ["cpu", "meta"]


@st.composite
def copy_cases(draw):
    ndim = draw(st.integers(1, 4))
    dst_shape = draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim))
    valid = draw(st.booleans())
    if valid:
        src_shape = [draw(st.integers(1, d)) for d in dst_shape]
        return dst_shape, src_shape, draw(st.sampled_from(DTYPES)), None, "cpu", "cpu"
    flaw = draw(st.sampled_from(["rank", "size", "dtype", "device"]))
    src_shape = [draw(st.integers(1, d)) for d in dst_shape]
    dtype, src_dtype, src_device = draw(st.sampled_from(DTYPES)), None, "cpu"
    if flaw == "rank":
        src_shape = src_shape + [1] if draw(st.booleans()) or ndim == 1 else src_shape[:-1]
    elif flaw == "size":
        i = draw(st.integers(0, ndim - 1))
        src_shape[i] = dst_shape[i] + draw(st.integers(1, 4))
    elif flaw == "dtype":
        src_dtype = draw(st.sampled_from([d for d in DTYPES if d != dtype]))
    else:
        src_device = "meta"
    return dst_shape, src_shape, dtype, src_dtype, "cpu", src_device


@settings(max_examples=1200, deadline=None)
@given(copy_cases())
def test_fixed_copy_property(case):
    """Valid: a view with the destination's strides holding the source. Invalid: ValueError naming
    both sides, destination unchanged."""
    dst_shape, src_shape, dtype, src_dtype, dst_device, src_device = case
    dst = torch.zeros(dst_shape, dtype=dtype, device=dst_device)
    src = (torch.arange(int(torch.tensor(src_shape).prod())) % 2 + 1).reshape(src_shape).to(src_dtype or dtype)
    src = src.to(src_device)
    before = dst.clone()
    valid = (
        len(src_shape) == len(dst_shape)
        and all(s <= d for s, d in zip(src_shape, dst_shape))
        and src.dtype == dst.dtype
        and src.device == dst.device
    )
    if valid:
        view = copy_to_persistent(dst, src)
        assert view.stride() == dst.stride()
        assert storage_map(view).tolist() == storage_map(dst[tuple(slice(0, n) for n in src_shape)]).tolist()
        assert torch.equal(view, src)
    else:
        with pytest.raises(ValueError) as err:
            copy_to_persistent(dst, src)
        message = str(err.value)
        sides = [
            (str(tuple(dst.shape)), str(tuple(src.shape))),
            (str(dst.dtype), str(src.dtype)),
            (str(dst.device), str(src.device)),
        ]
        assert any(a in message and b in message for a, b in sides), message
        assert torch.equal(dst, before)


# Issue #13: overlapping sources and exotic layouts.


@pytest.mark.adversarial
@pytest.mark.parametrize("size, part", [((4, 8), 3), ((100, 100), 50)])
def test_a_transposed_view_of_the_buffer_copies_its_values_as_they_were(size, part):
    dst = torch.arange(size[0] * size[1]).reshape(size)
    src = dst[:part, :part].t()
    expected = src.clone()
    view = copy_to_persistent(dst, src)
    assert torch.equal(view, expected) and view.stride() == dst.stride()


@pytest.mark.adversarial
def test_a_shifted_view_of_the_buffer_copies_its_values_as_they_were():
    dst = torch.arange(64).reshape(8, 8)
    before = dst.clone()
    src = dst[1:4, 2:7]
    view = copy_to_persistent(dst, src)
    assert torch.equal(view, before[1:4, 2:7])
    assert torch.equal(dst[3:], before[3:]) and torch.equal(dst[:3, 5:], before[:3, 5:])


@pytest.mark.adversarial
@pytest.mark.parametrize(
    "make_dst, words",
    [
        (lambda: torch.zeros(4, 8, requires_grad=True), ["requires grad", "(4, 8)"]),
        (lambda: torch.zeros(8).expand(4, 8), ["one memory cell", "(4, 8)", "(0, 1)"]),
        (lambda: torch.zeros(4, 8).to_sparse(), ["torch.sparse_coo", "dst"]),
    ],
    ids=["requires-grad", "expanded", "sparse"],
)
def test_exotic_destinations_are_refused_with_the_documented_error(make_dst, words):
    dst = make_dst()
    with pytest.raises(ValueError) as err:
        copy_to_persistent(dst, torch.ones(2, 3))
    assert all(w in str(err.value) for w in words), str(err.value)
    if dst.layout == torch.strided:
        assert not dst.detach().any()


@pytest.mark.adversarial
def test_a_sparse_source_is_refused_by_name():
    with pytest.raises(ValueError, match="src is a torch.sparse_coo tensor"):
        copy_to_persistent(torch.zeros(4, 8), torch.ones(2, 3).to_sparse())


@pytest.mark.adversarial
def test_an_expanded_source_is_fine_to_read():
    view = copy_to_persistent(torch.zeros(4, 8), torch.arange(3.0).expand(2, 3))
    assert view.tolist() == [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]


@st.composite
def overlapping_cases(draw):
    """A destination (possibly a strided view of a larger buffer) and a source that is a view of the same
    storage: sliced with steps, optionally transposed, fitting inside the destination."""
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    base = torch.arange(rows * cols * 4, dtype=torch.int64).reshape(rows * 2, cols * 2)
    step_r, step_c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dst = base[: rows * step_r : step_r, : cols * step_c : step_c]
    r0, c0 = draw(st.integers(0, base.shape[0] - 1)), draw(st.integers(0, base.shape[1] - 1))
    sr, sc = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    src = base[r0::sr, c0::sc]
    if draw(st.booleans()):
        src = src.t()
    src = src[: min(src.shape[0], dst.shape[0]), : min(src.shape[1], dst.shape[1])]
    return base, dst, src


@pytest.mark.adversarial
@settings(max_examples=600, deadline=None)
@given(overlapping_cases())
def test_overlapping_sources_property(case):
    """Whatever the overlap: the copied slice holds the source's values as they were before the call, the
    view has the destination's strides, and nothing outside the slice changed."""
    base, dst, src = case
    expected, before = src.clone(), dst.clone()
    g, k = src.shape
    view = copy_to_persistent(dst, src)
    assert view.stride() == dst.stride() and torch.equal(view, expected)
    after = dst.clone()
    after[:g, :k] = before[:g, :k]
    assert torch.equal(after, before)


# Issue #25: the checks cost no element-by-element work on the engine's path.


@st.composite
def strided_layouts(draw):
    ndim = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim))
    strides = draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim))
    return sizes, strides


@settings(max_examples=1500, deadline=None)
@given(strided_layouts())
def test_strides_that_separate_give_every_element_its_own_cell(layout):
    sizes, strides = layout
    view = torch.zeros(1000).as_strided(sizes, strides)
    cells = storage_map(view).flatten()
    if strides_separate(sizes, strides):
        assert cells.unique().numel() == cells.numel()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_slices_permutations_and_steps_of_a_dense_buffer_are_decided_by_strides(sizes, rng):
    view = torch.zeros([2 * s for s in sizes])
    view = view[tuple(slice(0, rng.randint(1, 2 * s), rng.randint(1, 2)) for s in sizes)]
    view = view.permute(rng.sample(range(len(sizes)), len(sizes)))
    assert strides_separate(view.shape, view.stride())


def test_interleaved_strides_fall_back_to_the_exact_check(monkeypatch):
    calls = []
    real = persistent.storage_map
    monkeypatch.setattr(persistent, "storage_map", lambda view: calls.append(view.shape) or real(view))
    distinct = torch.zeros(20, dtype=torch.int32).as_strided((3, 2), (2, 3))  # cells 0 2 4 3 5 7
    view = copy_to_persistent(distinct, torch.arange(6, dtype=torch.int32).reshape(3, 2))
    assert view.tolist() == [[0, 1], [2, 3], [4, 5]] and calls == [(3, 2)]
    shared = torch.zeros(20, dtype=torch.int32).as_strided((3, 3), (1, 2))  # (2, 0) and (0, 1) are cell 2
    with pytest.raises(ValueError, match="one memory cell"):
        copy_to_persistent(shared, torch.ones(3, 3, dtype=torch.int32))
    assert len(calls) == 2 and not shared.any()


def test_a_strided_destination_is_decided_without_the_per_element_map(monkeypatch):
    monkeypatch.setattr(persistent, "storage_map", lambda view: pytest.fail("per-element check"))
    dst = torch.zeros(8, 20, dtype=torch.int32)[:, ::2]  # a column-stepped buffer: not contiguous
    view = copy_to_persistent(dst, torch.ones(3, 4, dtype=torch.int32))
    assert view.stride() == dst.stride() == (20, 2) and view.sum() == 12


def test_a_source_that_is_a_detached_alias_is_read_before_writing():
    dst = torch.arange(16).reshape(4, 4)
    src = dst.detach().t()[:3, :3]  # another tensor object over the same storage, no _base
    expected = src.clone()
    assert torch.equal(copy_to_persistent(dst, src), expected)


@pytest.mark.parametrize(
    "dst_shape, src_shape",
    [((), ()), ((5,), (5,)), ((5,), (0,)), ((4, 6), (4, 6)), ((4, 6), (2, 6)), ((4, 6), (4, 3)), ((4, 6), (0, 9))],
)
def test_whole_buffers_and_empty_sources(dst_shape, src_shape):
    dst = torch.zeros(dst_shape, dtype=torch.int32)
    src = torch.ones(src_shape, dtype=torch.int32)
    if any(s > d for s, d in zip(src_shape, dst_shape)):
        with pytest.raises(ValueError, match="does not fit"):
            copy_to_persistent(dst, src)
        return
    view = copy_to_persistent(dst, src)
    assert view.shape == src.shape and view.stride() == dst.stride() and torch.equal(view, src)
    assert view.untyped_storage().data_ptr() == dst.untyped_storage().data_ptr()
    assert int(dst.sum()) == src.numel()


def test_meta_buffers_copy_on_meta():
    view = copy_to_persistent(torch.empty(4, 8, device="meta"), torch.empty(2, 3, device="meta"))
    assert view.device.type == "meta" and view.shape == (2, 3) and view.stride() == (8, 1)
