"""The replay guard's invariant on fake metadata: what alarms, what does not, and what the error says."""

import dataclasses
import logging

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask

from flexfix.guard.layout import layout_of
from flexfix.guard.mode import requested_mode
from flexfix.guard.replay_guard import ReplayGuard, ReplayGuardError
from flexfix.guard.snapshot import compare, take

W_MAX, G_MAX = 608, 8


@dataclasses.dataclass
class FakeFlexMetadata:
    """Shaped like vLLM 0.20.0's FlexAttentionMetadata: tensors, numbers, a flag, a BlockMask with a closure."""

    num_actual_tokens: int
    max_seq_len: int
    causal: bool
    seq_lens: torch.Tensor
    block_mask: BlockMask


class Buffers:
    """Persistent buffers, as vLLM keeps them for a full CUDA graph."""

    def __init__(self):
        self.kv_indices = torch.full((G_MAX, W_MAX), -1, dtype=torch.int32)
        self.kv_num_blocks = torch.zeros(G_MAX, dtype=torch.int32)
        self.physical_to_logical = torch.zeros(G_MAX, W_MAX, dtype=torch.int32)
        self.seq_lens = torch.zeros(64, dtype=torch.int32)

    def write(self, dst, src, copy):
        if copy == "as_strided":  # vLLM 0.20.0
            view = dst.as_strided(src.shape, src.stride())
        else:  # the fix (PR #40842)
            view = dst[tuple(slice(0, n) for n in src.shape)]
        view.copy_(src)
        return view


def build(buffers, G, K, copy="as_strided", causal=True, fresh_p2l=False, max_seq_len=None):
    kv_indices = buffers.write(buffers.kv_indices, torch.arange(G * K, dtype=torch.int32).view(G, K), copy)
    kv_num_blocks = buffers.write(buffers.kv_num_blocks, torch.full((G,), K, dtype=torch.int32), copy)
    p2l = torch.zeros(G, W_MAX, dtype=torch.int32) if fresh_p2l else buffers.physical_to_logical[:G]

    def mask_mod(b, h, q, kv):  # closes over a tensor, as vLLM's logical mask does
        return p2l[b, kv] >= 0

    mask = BlockMask.from_kv_blocks(
        kv_num_blocks[None, None], kv_indices[None, None], mask_mod=mask_mod, compute_q_blocks=False
    )
    seq_lens = buffers.write(buffers.seq_lens, torch.full((G * 16,), 3, dtype=torch.int32), copy)
    return FakeFlexMetadata(G * 16, max_seq_len or K, causal, seq_lens, mask)


def roots(md):
    return {"FakeFlexMetadata": md}


def alarms(findings):
    return [(f.path, f.kind, f.capture, f.replay) for f in findings if f.alarm]


@pytest.fixture
def buffers():
    return Buffers()


def test_as_strided_past_one_query_block_alarms_on_kv_indices_strides(buffers):
    capture = take(roots(build(buffers, G=3, K=16)), devices=None)
    replay = take(roots(build(buffers, G=3, K=208)), devices=None)
    assert alarms(compare(capture, replay)) == [
        ("FakeFlexMetadata.block_mask.kv_indices", "strides", (48, 48, 16, 1), (624, 624, 208, 1))
    ]


def test_a_pointer_check_is_blind_to_the_bug(buffers):
    """as_strided and the slice both start at the buffer's data_ptr: only the strides tell them apart."""
    before = build(buffers, G=3, K=16).block_mask.kv_indices
    after = build(buffers, G=3, K=208).block_mask.kv_indices
    assert before.data_ptr() == after.data_ptr() == buffers.kv_indices.data_ptr()
    assert before.stride() != after.stride()


def test_the_sliced_copy_changes_shapes_only(buffers):
    capture = take(roots(build(buffers, G=3, K=16, copy="sliced")), devices=None)
    findings = compare(capture, take(roots(build(buffers, G=3, K=208, copy="sliced")), devices=None))
    assert alarms(findings) == []
    kinds = {(f.path, f.kind) for f in findings}
    assert ("FakeFlexMetadata.block_mask.kv_indices", "shape") in kinds
    assert ("FakeFlexMetadata.max_seq_len", "number") in kinds  # reported, not an alarm


def test_one_query_block_addresses_no_row_stride(buffers):
    """G = 1 (16 requests or fewer): row 0 starts at the pointer, its stride is never multiplied by anything."""
    capture = take(roots(build(buffers, G=1, K=16)), devices=None)
    replay = take(roots(build(buffers, G=1, K=208)), devices=None)
    assert layout_of(build(buffers, G=1, K=208).block_mask.kv_indices).strides == (208, 208, 208, 1)
    assert alarms(compare(capture, replay)) == []


def test_a_fresh_tensor_in_a_closure_is_named_by_its_variable(buffers):
    capture = take(roots(build(buffers, G=2, K=16, copy="sliced")), devices=None)
    replay = take(roots(build(buffers, G=2, K=16, copy="sliced", fresh_p2l=True)), devices=None)
    (finding,) = alarms(compare(capture, replay))
    assert finding[:2] == ("FakeFlexMetadata.block_mask.mask_mod.<p2l>", "pointer")


def test_a_flipped_flag_is_an_alarm_and_a_changed_number_is_not(buffers):
    capture = take(roots(build(buffers, G=2, K=16, copy="sliced")), devices=None)
    replay = take(roots(build(buffers, G=2, K=16, copy="sliced", causal=False, max_seq_len=900)), devices=None)
    findings = compare(capture, replay)
    assert alarms(findings) == [("FakeFlexMetadata.causal", "decision", True, False)]
    assert [(f.path, f.kind) for f in findings if not f.alarm] == [("FakeFlexMetadata.max_seq_len", "number")]


def test_none_becoming_a_tensor_and_a_vanished_tensor_alarm():
    t = torch.zeros(4)
    kinds = [f.kind for f in compare(take({"M": {"x": None}}, None), take({"M": {"x": t}}, None)) if f.alarm]
    assert kinds == ["appeared"]
    kinds = [f.kind for f in compare(take({"M": {"x": t}}, None), take({"M": {}}, None)) if f.alarm]
    assert kinds == ["missing"]


def test_dtype_device_offset_and_rank_changes_alarm():
    buf = torch.zeros(64, dtype=torch.int32)
    cases = {
        "dtype": buf[:8].view(torch.float32),
        "storage_offset": buf[4:12],
        "rank": buf[:8].view(2, 4),
    }
    for kind, replay in cases.items():
        found = {f.kind for f in compare(take({"M": buf[:8]}, None), take({"M": replay}, None)) if f.alarm}
        assert kind in found, (kind, found)


def test_empty_tensors_address_nothing():
    """No element, no address: a fresh empty tensor (another pointer, other strides) is no alarm."""
    findings = compare(take({"M": torch.zeros(0, 4)}, None), take({"M": torch.zeros(0, 8)[:, ::2]}, None))
    assert alarms(findings) == []


def test_only_cuda_tensors_count_by_default(buffers):
    """A CUDA graph reads no CPU tensor: by default CPU tensors (host-side copies in metadata) are skipped."""
    snap = take(roots(build(buffers, G=3, K=16)))
    assert snap.tensors == 0 and snap.scalars > 0


def test_modules_reached_through_closures_are_not_walked():
    layer = torch.nn.Linear(4, 4)

    def score_mod(score, b, h, q, kv):
        return layer(score)

    snap = take({"M": {"score_mod": score_mod}}, None)
    assert snap.tensors == 0


def guard_on(buffers, mode):
    guard = ReplayGuard(mode, {"vLLM": "0.20.0", "attention backend": "FLEX_ATTENTION"}, devices=None)
    key = ("FULL", "BatchDescriptor(num_tokens=48, uniform_decode=True)")
    guard.captured(key, roots(build(buffers, G=3, K=16)))
    return guard, key


def test_error_mode_refuses_the_replay_naming_field_graph_and_strides(buffers):
    guard, key = guard_on(buffers, "error")
    assert guard.before_replay(key, roots(build(buffers, G=3, K=16))) is True  # same K: nothing moved
    with pytest.raises(ReplayGuardError) as err:
        guard.before_replay(key, roots(build(buffers, G=3, K=208)))
    text = str(err.value)
    for part in (
        "FakeFlexMetadata.block_mask.kv_indices: strides (48, 48, 16, 1) -> (624, 624, 208, 1)",
        "BatchDescriptor(num_tokens=48, uniform_decode=True)",
        "vLLM 0.20.0, attention backend FLEX_ATTENTION",
        f"pointer {buffers.kv_indices.data_ptr():#x} unchanged, shape [1, 1, 3, 16] -> [1, 1, 3, 208]",
        ": 1 field it reads moved since capture",  # counted in words that agree, not "field(s)"
    ):
        assert part in text, (part, text)
    assert [f.path for f in err.value.findings] == ["FakeFlexMetadata.block_mask.kv_indices"]
    summary = guard.summary()
    assert summary["replays_checked"] == 2 and summary["replays_refused"] == 1
    assert summary["first_alarm"]["replay_number"] == 2


def test_eager_mode_asks_for_the_step_without_the_graph_and_logs_each_field_once(buffers, caplog):
    guard, key = guard_on(buffers, "eager")
    with caplog.at_level(logging.WARNING, logger="vllm.flexfix.guard"):
        decisions = [guard.before_replay(key, roots(build(buffers, G=3, K=k))) for k in (208, 16, 400, 96)]
    assert decisions == [False, True, False, False]
    assert guard.summary()["eager_steps"] == 3
    assert len([r for r in caplog.records if "kv_indices" in r.getMessage()]) == 1


def test_log_mode_replays_and_counts(buffers):
    guard, key = guard_on(buffers, "log")
    assert guard.before_replay(key, roots(build(buffers, G=3, K=208))) is True
    s = guard.summary()
    assert s["replays_alarmed"] == 1 and s["alarms"] == {"FakeFlexMetadata.block_mask.kv_indices: strides": 1}


def test_a_replay_of_a_graph_captured_before_the_guard_is_counted_as_unguarded(buffers):
    guard = ReplayGuard("error", devices=None)
    assert guard.before_replay("k", roots(build(buffers, G=3, K=208))) is True
    assert guard.summary()["replays_unguarded"] == 1


@pytest.mark.parametrize(
    "raw, mode", [("", None), ("0", None), ("off", None), (" Error ", "error"), ("eager", "eager")]
)
def test_mode_values(raw, mode):
    assert requested_mode({"FLEXFIX_GUARD": raw}) == mode
    assert requested_mode({}) is None


@pytest.mark.parametrize("raw", ["1", "strict", "errors"])
def test_an_unknown_mode_is_refused_by_name(raw):
    with pytest.raises(ValueError, match=f"FLEXFIX_GUARD={raw!r} is not understood"):
        requested_mode({"FLEXFIX_GUARD": raw})


def test_a_guard_mode_must_be_known():
    with pytest.raises(ValueError, match="replay guard mode"):
        ReplayGuard("strict")


@pytest.mark.parametrize("copy", ["as_strided", "sliced"])
def test_the_fast_check_finds_what_the_full_walk_finds(buffers, copy):
    from flexfix.guard.snapshot import check

    capture = take(roots(build(buffers, G=3, K=16, copy=copy)), devices=None)
    steps = ((16, True, False), (208, True, False), (40, False, False), (96, True, True))
    for K, causal, fresh in steps + steps:  # twice: the second time the findings come from the capture's memo
        step = roots(build(buffers, G=3, K=K, copy=copy, causal=causal, fresh_p2l=fresh, max_seq_len=K + 1))
        fast = check(capture, step)
        assert fast is not None
        assert [(f.path, f.kind, f.alarm) for f in fast] == [
            (f.path, f.kind, f.alarm) for f in compare(capture, take(step, devices=None))
        ]


def test_the_memo_of_findings_is_keyed_by_the_layout_not_by_the_field(buffers):
    """A field seen once with a harmless shape change and then, at the same shape, with moved strides: the
    second replay must alarm although the field's first difference is in the memo."""
    from flexfix.guard.snapshot import check

    capture = take(roots(build(buffers, G=3, K=16, copy="sliced")), devices=None)
    sliced = check(capture, roots(build(buffers, G=3, K=208, copy="sliced")))
    strided = check(capture, roots(build(buffers, G=3, K=208, copy="as_strided")))
    assert not any(f.alarm for f in sliced)
    assert ("FakeFlexMetadata.block_mask.kv_indices", "strides") in [(f.path, f.kind) for f in strided if f.alarm]


def test_the_fast_check_hands_a_changed_structure_to_the_full_walk(buffers):
    from flexfix.guard.snapshot import check

    capture = take({"M": {"a": torch.zeros(4), "b": [torch.zeros(2)]}}, devices=None)
    assert check(capture, {"M": {"a": torch.zeros(4), "b": [torch.zeros(2), torch.zeros(2)]}}) is None  # a length
    assert check(capture, {"M": {"a": torch.zeros(4)}}) is None  # a key
    assert check(capture, {"N": {}}) is None  # a root
    assert check(capture, {"M": {"a": 3, "b": [torch.zeros(2)]}}) is None  # a scalar where a tensor was
    guard = ReplayGuard("log", devices=None)
    guard.captured("k", {"M": {"a": torch.zeros(4), "b": [torch.zeros(2)]}})
    guard.before_replay("k", {"M": {"a": torch.zeros(4)}})
    assert guard.summary()["replays_walked"] == 1 and "M['b'][0]: missing" in guard.summary()["alarms"]


def test_the_guard_times_itself(buffers):
    guard, key = guard_on(buffers, "log")
    for k in (16, 208, 96):
        guard.before_replay(key, roots(build(buffers, G=3, K=k)))
    s = guard.summary()
    assert s["replays_checked"] == 3 and 0 < s["check_ns"] < 3 * 10**9  # nanoseconds on the host, all replays


def test_the_readmes_python_example_runs_and_refuses_the_as_strided_copy(capsys):
    """README, "Guarding a backend": the example for one's own metadata, run as printed."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Guarding a backend") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md example", "exec"), {"__name__": "readme_example"})  # noqa: S102
    out = capsys.readouterr().out
    assert "MyMetadata.block_table: strides (64, 1) -> (48, 1)" in out and "shape [4, 16] -> [4, 48]" in out
    assert "host_lens" not in out  # left out by name
