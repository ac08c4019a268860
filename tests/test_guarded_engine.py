"""An engine child under the replay guard, on CPU with a fake engine: the records it adds (generations, the
guard's cost and count) and the outcome of a refused replay."""

from types import SimpleNamespace

import pytest
from test_engine_sweep import FakeLLM

from flexfix import guard
from flexfix.guard.replay_guard import ReplayGuardError
from flexfix.measure import engine_sweep as es
from flexfix.measure import outcomes as repro


@pytest.fixture(autouse=True)
def no_guard_left():
    yield
    guard.uninstall()


def child(run, llm=FakeLLM, monkeypatch=None):
    import vllm

    monkeypatch.setattr(vllm, "LLM", llm)
    records = []
    reporter = SimpleNamespace(
        record=records.append,
        finish=lambda status, detail, **extra: records.append({"kind": "final", "status": status, "detail": detail}),
    )
    es._child({"run": es.asdict(run), "model_dir": "/nowhere"}, reporter)
    return records


def test_generations_cost_and_count_under_the_guard(monkeypatch):
    run = es.EngineRun(
        batch_invariant=False,
        patched=False,
        requests=(),
        guard="eager",
        generations=(20,),
        guard_cost=(4,),
        max_tokens=5,
        throughput_tokens=3,
        repeats=3,
    )
    records = child(run, monkeypatch=monkeypatch)
    assert [r["kind"] for r in records] == ["startup", "generations", "guard_cost", "guard", "final"]
    gens = records[1]
    assert gens["requests"] == 20 and len(gens["tokens"]) == len(gens["logprobs"]) == 20
    assert all(len(t) == 5 for t in gens["tokens"])
    cost = records[2]
    assert len(cost["on_seconds"]) == len(cost["off_seconds"]) == 3 and len(cost["pair_ratios"]) == 3
    assert cost["ratio"] > 0 and cost["output_tokens"] == 12
    assert len(cost["check_seconds"]) == len(cost["replays_checked"]) == len(cost["check_share"]) == 3  # guarded runs
    assert all(0 <= share < 1 for share in cost["check_share"]) and all(s >= 0 for s in cost["check_seconds"])
    assert records[3]["mode"] == "eager" and guard.active().enabled is True  # left checking after the timing
    assert records[-1]["status"] == "ok"


class RefusingLLM(FakeLLM):
    """Refuses the third batch, as the guard does at the first replay that would misread."""

    calls = 0

    def generate(self, prompts, params, use_tqdm=False):
        RefusingLLM.calls += 1
        if RefusingLLM.calls == 3:
            error = ReplayGuardError(
                "flexfix replay guard: refusing to replay the CUDA graph captured for FULL k: 1 field it reads "
                "moved since capture\n  FlexAttentionMetadata.block_mask.kv_indices: strides (16, 1) -> (208, 1)",
                "k",
                [],
            )
            raise RuntimeError("EngineCore encountered an issue") from error
        return super().generate(prompts, params, use_tqdm)


def test_a_refused_replay_ends_the_child_as_guard_refused(monkeypatch):
    RefusingLLM.calls = 0
    run = es.EngineRun(batch_invariant=False, patched=False, requests=(), every_request=(2,), guard="error")
    records = child(run, RefusingLLM, monkeypatch)
    assert [r["kind"] for r in records] == ["startup", "guard", "final"]
    assert records[-1]["status"] == "guard_refused"
    assert records[-1]["detail"].startswith("flexfix replay guard: refusing to replay the CUDA graph")


def test_any_other_failure_is_not_taken_for_a_refusal(monkeypatch):
    class Broken(FakeLLM):
        def generate(self, *a, **k):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    run = es.EngineRun(batch_invariant=False, patched=False, requests=(), every_request=(2,), guard="log")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        child(run, Broken, monkeypatch)


def test_the_parent_classifies_a_refusal_from_any_process_output():
    line = "(EngineCore pid=7) flexfix replay guard: refusing to replay the CUDA graph captured for FULL ..."
    status, detail, _ = repro.classify(1, f"INFO starting\n{line}\nEngineDeadError\n", None, False)
    assert status == "guard_refused" and detail.startswith("flexfix replay guard: refusing")
    assert repro.worst(["ok", "guard_refused"]) == "guard_refused"


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(backend="FLASHINFER"), "backend"),
        (dict(guard="strict"), "guard must be"),
        (dict(runner="v3"), "runner"),
        (dict(mutant="row_stride"), "mutant"),
        (dict(backend="TRITON_ATTN", mutant="nope"), "mutant"),
        (dict(bi_only=True, patched=True), "bi_only"),
        (dict(guard_cost=(48,)), "needs a guard mode"),
        (dict(max_num_seqs=1000), "max_num_seqs"),
    ],
)
def test_impossible_guarded_runs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        es.EngineRun(**bad)


def test_guarded_settings_reach_the_child_environment_and_the_engine():
    run = es.EngineRun(
        backend="TRITON_ATTN",
        patched=False,
        guard="error",
        mutant="row_stride",
        runner="v1",
        debug=True,
        max_num_seqs=16,
    )
    env = run.env()
    assert env["FLEXFIX_GUARD"] == "error" and env["FLEXFIX_MUTANT"] == "row_stride"
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0" and env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    kwargs = es.llm_kwargs(run, "/m")
    assert kwargs["attention_config"] == {"backend": "TRITON_ATTN"} and kwargs["max_num_seqs"] == 16
    assert run.name.endswith(
        "TRITON_ATTN, guard=error, mutant row_stride, runner v1, VLLM_LOGGING_LEVEL=DEBUG, max_num_seqs 16"
    )
    assert es.EngineRun().env()["FLEXFIX_GUARD"] == "0"  # an engine without the guard says so
