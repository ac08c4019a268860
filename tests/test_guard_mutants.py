"""The planted mutants of the bug class, on vLLM 0.20.0's own TRITON_ATTN metadata builder on the CPU:
which ones the guard names (a, b, c), and the one it cannot see (d)."""

import dataclasses
import random

import pytest
import torch

from flexfix.guard import mutants, vllm_metadata
from flexfix.guard.replay_guard import ReplayGuard

triton_attn = pytest.importorskip("vllm.v1.attention.backends.triton_attn")
from vllm.v1.attention.backend import CommonAttentionMetadata  # noqa: E402

MAX_SEQS, MAX_LEN, BLOCK = 64, 1024, 16


class Steps:
    """vLLM's TritonAttentionMetadataBuilder (its own build), over persistent runner buffers, on the CPU."""

    def __init__(self):
        b = object.__new__(triton_attn.TritonAttentionMetadataBuilder)
        b.__dict__.update(
            device=torch.device("cpu"),
            kv_cache_spec=type("Spec", (), {"block_size": BLOCK})(),
            seq_threshold_3D=16,
            num_par_softmax_segments=16,
            softmax_segm_output=torch.empty(16, 4, 16, 64),
            softmax_segm_max=torch.empty(16, 4, 16),
            softmax_segm_expsum=torch.empty(16, 4, 16),
        )
        self.builder = b
        self.qsl = torch.zeros(MAX_SEQS + 1, dtype=torch.int32)
        self.seq_lens = torch.zeros(MAX_SEQS, dtype=torch.int32)
        self.table = torch.zeros(MAX_SEQS, MAX_LEN // BLOCK, dtype=torch.int32)
        self.slots = torch.zeros(MAX_SEQS, dtype=torch.int64)

    def common(self, lens, padded):
        n = len(lens)
        self.seq_lens[:n] = torch.tensor(lens, dtype=torch.int32)
        self.seq_lens[n:padded] = 0  # vLLM zeroes the padded rows
        self.qsl[: padded + 1] = torch.arange(padded + 1, dtype=torch.int32)
        return CommonAttentionMetadata(
            query_start_loc=self.qsl[: padded + 1],
            query_start_loc_cpu=self.qsl[: padded + 1].clone(),
            seq_lens=self.seq_lens[:padded],
            num_reqs=n,
            num_actual_tokens=padded,
            max_query_len=1,
            max_seq_len=max(lens),
            block_table_tensor=self.table[:padded],
            slot_mapping=self.slots[:padded],
            seq_lens_cpu_upper_bound=torch.tensor(lens),
        )

    def capture(self, n):  # vLLM 0.26 captures with max_seq_len = max_model_len
        return self.builder.build_for_cudagraph_capture(
            dataclasses.replace(self.common([1] * n, n), max_seq_len=MAX_LEN)
        )

    def step(self, n, longest, padded, seed=0):
        rng = random.Random(seed)
        return self.builder.build(0, self.common([longest] + [rng.randint(1, longest) for _ in range(n - 1)], padded))


@pytest.fixture(params=sorted(mutants.MUTANTS))
def planted(request):
    mutants.plant(request.param)
    yield request.param
    mutants.unplant()


def findings(n=32, padded=32, longest=300):
    steps = Steps()
    g = ReplayGuard("log", devices=None)
    roots = vllm_metadata.roots({"layer": steps.capture(padded)})
    g.captured("k", roots, vllm_metadata.not_read_paths(roots))
    g.before_replay("k", vllm_metadata.roots({"layer": steps.step(n, longest, padded)}))
    return g.summary()


EXPECTED_ALARMS = {
    "row_stride": {"TritonAttentionMetadata.block_table: strides": 1},
    "fresh_tensor": {"TritonAttentionMetadata.seq_lens: pointer": 1},
    # vLLM 0.20.0's metadata has no R-SWA fields: the mutant's window is an attribute outside the dataclass's
    # fields, which no forward of 0.20.0 reads either; on 0.26 it is rswa_window (None -> 16), see below
    "frozen_decision": {},
    "stale_tail": {},  # contents only: the layout is the capture's
}


def test_each_mutant_on_vllm_metadata(planted):
    assert findings(n=30, padded=32)["alarms"] == EXPECTED_ALARMS[planted]


def test_without_a_mutant_nothing_alarms():
    assert findings(n=30, padded=32)["alarms"] == {}


def test_the_stale_tail_changes_contents_the_guard_does_not_compare():
    mutants.plant("stale_tail")
    try:
        steps = Steps()
        md = steps.step(30, 300, padded=32)
        assert md.seq_lens[30:].tolist() == [md.max_seq_len] * 2  # the padded rows hold a long length
    finally:
        mutants.unplant()
    assert Steps().step(30, 300, padded=32).seq_lens[30:].tolist() == [0, 0]


@dataclasses.dataclass
class MetadataWithWindow:
    """The R-SWA fields of vLLM 0.26's TritonAttentionMetadata."""

    seq_lens: torch.Tensor
    rswa_prefix_lens: torch.Tensor | None = None
    rswa_window: int | None = None


def test_a_window_decided_after_capture_alarms_on_the_decision_and_the_tensor():
    builder = object()
    capture = MetadataWithWindow(torch.ones(8, dtype=torch.int32))
    mutants._frozen_decision(builder, capture, None, capturing=True)
    replay = MetadataWithWindow(capture.seq_lens)
    mutants._frozen_decision(builder, replay, None, capturing=False)
    g = ReplayGuard("log", devices=None)
    g.captured("k", {"TritonAttentionMetadata": capture})
    g.before_replay("k", {"TritonAttentionMetadata": replay})
    assert g.summary()["alarms"] == {
        "TritonAttentionMetadata.rswa_prefix_lens: appeared": 1,
        "TritonAttentionMetadata.rswa_window: decision": 1,
    }


def test_unknown_and_double_planting_are_refused():
    with pytest.raises(ValueError, match="unknown mutant 'nope'"):
        mutants.plant("nope")
    mutants.plant("row_stride")
    try:
        with pytest.raises(RuntimeError, match="already planted"):
            mutants.plant("fresh_tensor")
    finally:
        assert mutants.unplant() is True
    assert mutants.unplant() is False
