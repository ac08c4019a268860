import pytest
import torch

from flexfix.mechanism import paged
from flexfix.mechanism.kernel_repro import KernelScenario, run_kernel_scenario
from flexfix.mechanism.persistent import copy_to_persistent

SHAPE = paged.PagedShape(max_num_seqs=48, max_model_len=512, num_pages=1024)


def test_kv_indices_equal_vllm_direct_build():
    from vllm.v1.attention.backends.flex_attention import pad_to_multiple, unique_static_unsorted

    for seed in range(5):
        step = paged.make_step(SHAPE, [5, 100, 300, 17, 64, 1] * 6 + [33] * 3, seed=seed)
        mine, num_blocks = paged.build_kv_indices(step)
        used = step.block_table[:, : step.width // 16].long()
        theirs = unique_static_unsorted(
            pad_to_multiple(used, multiple=16, dim=0).reshape(-1, step.width), M=SHAPE.num_pages
        ).to(torch.int32)
        assert torch.equal(mine, theirs)
        assert torch.equal(num_blocks, (theirs >= 0).sum(-1).to(torch.int32))


def test_width_and_blocks_follow_the_longest_sequence():
    step = paged.make_step(SHAPE, [17] + [1] * 16, seed=0)
    assert (step.num_query_blocks, step.width) == (2, 32)


def test_blocksparse_decode_matches_the_reference():
    k, v = paged.make_cache(SHAPE, seed=0)
    step = paged.make_step(SHAPE, list(range(1, 480, 11)), seed=3)
    views = paged.PersistentBuffers(SHAPE).write(step, copy_to_persistent)
    out = paged.blocksparse_decode(step.query, k, v, views)
    assert (out - paged.reference(step, k, v)).abs().max() < 1e-4


def test_flex_attention_with_the_block_mask_matches_the_reference():
    k, v = paged.make_cache(SHAPE, seed=0)
    step = paged.make_step(SHAPE, [40, 7, 300, 129], seed=1)
    views = paged.PersistentBuffers(SHAPE).write(step, copy_to_persistent)
    mask = paged.make_block_mask(views, step.batch, k.shape[2])
    out = paged.flex_decode(step.query, k, v, mask, compiled=False, options=paged.kernel_options("vllm"))
    assert (out - paged.reference(step, k, v)).abs().max() < 1e-4


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(num_heads=3), "multiple"),
        (dict(num_pages=0), "positive"),
        (dict(head_dim=True), "positive"),
    ],
)
def test_shape_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        paged.PagedShape(**bad)


def test_step_validation():
    with pytest.raises(ValueError, match="max_model_len"):
        paged.make_step(SHAPE, [600], seed=0)
    with pytest.raises(ValueError, match="max_num_seqs"):
        paged.make_step(SHAPE, [1] * 49, seed=0)
    with pytest.raises(ValueError, match="pages"):
        paged.make_step(paged.PagedShape(max_num_seqs=4, max_model_len=512, num_pages=8), [512, 512], seed=0)


def test_kernel_options_as_vllm_sets_them():
    assert paged.kernel_options("batch_invariant") == {
        "FORCE_USE_FLEX_ATTENTION": True,
        "BLOCK_M": 16,
        "BLOCK_N": 16,
        "IS_DIVISIBLE": False,
    }
    with pytest.raises(ValueError, match="mode"):
        paged.kernel_options("fast")


# The frozen-launch analog (what CI can show of the bug).


@pytest.mark.parametrize("seed", range(3))
def test_as_strided_with_two_query_blocks_misreads_after_k_changes(seed):
    records = run_kernel_scenario(KernelScenario(copy="as_strided", batch=48, seed=seed))
    assert records[0]["outcome"] == "ok"  # the capture step itself is right
    changed = [r for r in records[1:] if r["K"] != records[0]["K"]]
    assert changed and all(r["outcome"] in ("wrong_result", "index_error") for r in changed)
    assert all(r["launch_stride"] == [records[0]["K"], 1] for r in records)


@pytest.mark.parametrize("seed", range(3))
def test_sliced_copy_is_right_on_the_same_inputs(seed):
    records = run_kernel_scenario(KernelScenario(copy="sliced", batch=48, seed=seed))
    assert all(r["outcome"] == "ok" for r in records)
    w_max = KernelScenario().shape.w_max
    assert all(r["launch_stride"] == [w_max, 1] for r in records)


@pytest.mark.parametrize("copy", ["as_strided", "sliced"])
def test_one_query_block_is_always_right(copy):
    records = run_kernel_scenario(KernelScenario(copy=copy, batch=16, seed=0))
    assert all(r["outcome"] == "ok" for r in records)


def test_scenario_validation():
    with pytest.raises(ValueError, match="copy"):
        KernelScenario(copy="strided")
    with pytest.raises(ValueError, match="batch"):
        KernelScenario(batch=0)
    with pytest.raises(ValueError, match="CUDA-graph"):
        KernelScenario(device="cpu", launch="graph")
