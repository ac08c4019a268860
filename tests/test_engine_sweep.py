"""Engine-level code on CPU: configuration, the bs1-vs-bsN comparison, and the child's body
driven by a fake LLM (the real engine needs a GPU)."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from flexfix.measure import engine_sweep as es


def test_compare_generations_follows_the_bs1_vs_bsN_order():
    same = es.compare_generations([5, 6, 7], [-1.0, -2.0, -0.5], [5, 6, 7], [-1.0, -2.0, -0.5])
    assert same["tokens_equal"] and same["logprobs_bitwise_equal"] and same["max_abs_logprob_diff"] == 0.0
    assert same["distinct_tokens"] == 3
    ulp = es.compare_generations([5, 6], [-1.0, -2.0], [5, 6], [-1.0, math.nextafter(-2.0, 0.0)])
    assert ulp["tokens_equal"] and not ulp["logprobs_bitwise_equal"] and 0 < ulp["max_abs_logprob_diff"] < 1e-15
    token = es.compare_generations([5, 6], [-1.0, -2.0], [5, 9], [-1.0, -2.0])
    assert not token["tokens_equal"] and not token["logprobs_bitwise_equal"] and token["first_token_mismatch"] == 1
    short = es.compare_generations([5, 6], [-1.0, -2.0], [5], [-1.0])
    assert not short["steps_equal"] and not short["tokens_equal"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(model="llama-70b"), "model"),
        (dict(graphs="cudnn"), "graphs"),
        (dict(samplings=("beam",)), "sampling"),
        (dict(requests=(0,)), "request counts"),
        (dict(repeats=0), "repeats"),
        (dict(patched=False, batch_invariant=True), "refuses"),
    ],
)
def test_impossible_runs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        es.EngineRun(**bad)


def test_llm_arguments_per_graph_mode():
    full = es.llm_kwargs(es.EngineRun(graphs="full"), "/m")
    assert full["attention_config"] == {"backend": "FLEX_ATTENTION"} and "enforce_eager" not in full
    assert "cudagraph_mode" not in full["compilation_config"] and full["max_num_seqs"] == 128
    assert es.llm_kwargs(es.EngineRun(graphs="piecewise"), "/m")["compilation_config"]["cudagraph_mode"] == "PIECEWISE"
    assert es.llm_kwargs(es.EngineRun(graphs="eager", model="variance"), "/m")["enforce_eager"] is True
    assert es.EngineRun(batch_invariant=False).env()["VLLM_BATCH_INVARIANT"] == "0"


def test_parse_runs():
    runs = es.parse_runs("tiny:bi1:full,variance:bi0:eager,tiny:stock:piecewise", requests=(1, 17))
    assert [(r.model, r.batch_invariant, r.graphs, r.patched) for r in runs] == [
        ("tiny", True, "full", True),
        ("variance", False, "eager", True),
        ("tiny", False, "piecewise", False),
    ]
    assert all(r.requests == (1, 17) for r in runs)
    assert es.parse_runs("tiny:bi1:full", repeats=7)[0].repeats == 7
    with pytest.raises(ValueError, match="MODEL"):
        es.parse_runs("tiny:full")


class FakeLLM:
    """Deterministic 'engine': tokens from the prompt and seed; a request beyond the first 16 of a
    batch gets its logprobs nudged by one ulp (a batch-variant kernel, in miniature)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, prompts, params, use_tqdm=False):
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params)):
            base = sum(p["prompt_token_ids"]) + (sp.seed or 0)
            tokens = [(base * 31 + k * 7) % 97 for k in range(sp.max_tokens)]
            lps = [-1.0 - k / 8 for k in range(sp.max_tokens)]
            if i >= 16:
                lps = [math.nextafter(x, 0.0) for x in lps]
            logprobs = [{t: SimpleNamespace(logprob=x)} for t, x in zip(tokens, lps)]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, logprobs=logprobs)]))
        return outs


def test_child_body_with_a_fake_engine(monkeypatch):
    import vllm

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    run = es.EngineRun(
        model="tiny",
        batch_invariant=False,
        patched=False,
        requests=(1, 16, 17, 48),
        every_request=(20,),
        throughput=(4,),
        max_tokens=6,
        throughput_tokens=5,
        repeats=2,
    )
    records = []
    reporter = SimpleNamespace(
        record=records.append, finish=lambda status, detail: records.append({"kind": "final", "status": status})
    )
    es._child({"run": es.asdict(run), "model_dir": "/nowhere"}, reporter)
    table = pd.DataFrame([{"engine": run.name, **es.asdict(run), "status": "ok", "records": records}])

    inv = es.invariance_rows(table)
    assert len(inv) == 8 and set(inv.sampling) == {"greedy", "seeded"}
    # the needle sits at N // 2: index 8 for 17 (block 0: equal), 24 for 48 (block 1: nudged)
    eq = inv.set_index(["sampling", "requests"])["logprobs_bitwise_equal"]
    assert eq[("greedy", 17)] and not eq[("greedy", 48)] and inv.tokens_equal.all()
    every = es.request_rows(table).iloc[0]
    assert every.logprobs_differ == [16, 17, 18, 19] and every.tokens_differ == []
    tput = es.throughput_rows(table).iloc[0]
    assert tput.output_tokens == 20 and len(tput.seconds) == 2 and tput.tokens_per_second > 0
    assert records[0]["kind"] == "startup" and records[-1] == {"kind": "final", "status": "ok"}


def test_rows_keep_the_engine_status():
    table = pd.DataFrame(
        [
            {
                "engine": "x",
                "model": "tiny",
                "batch_invariant": True,
                "graphs": "full",
                "patched": True,
                "status": "illegal_memory_access",
                "records": [{"kind": "startup"}, {"kind": "throughput", "requests": 48}],
            }
        ]
    )
    rows = es.throughput_rows(table)
    assert rows.engine_status.tolist() == ["illegal_memory_access"] and rows.requests.tolist() == [48]
    assert es.invariance_rows(table).empty


def test_a_run_without_needle_batch_sizes_measures_the_rest(monkeypatch):
    """`--requests ""` (throughput or every-request only) once failed on the H100: max() of nothing."""
    import vllm

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    run = es.EngineRun(
        batch_invariant=False,
        patched=False,
        requests=(),
        every_request=(3,),
        throughput=(2,),
        max_tokens=4,
        throughput_tokens=4,
        repeats=1,
    )
    records = []
    es._child(
        {"run": es.asdict(run), "model_dir": "/nowhere"},
        SimpleNamespace(record=records.append, finish=lambda status, detail: records.append({"kind": status})),
    )
    assert [r["kind"] for r in records] == ["startup", "every_request", "throughput", "ok"]
