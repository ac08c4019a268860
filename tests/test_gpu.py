"""`make test-gpu`: every notebook with GPU parameters, then the GPU verdicts from the results files it wrote.

Never run by CI (no GPU there): each test is skipped, saying why, where CUDA or vLLM is missing. On a GPU box
`make test-gpu` executes the notebooks into a temporary folder first (as `make notebooks` does, same
parameters). ``FLEXFIX_GPU_RESULTS=build/results make test-gpu`` asserts on the results of a `make notebooks`
run already done instead of executing again.

What must hold on any GPU, whatever the memory contents (both outcomes of the bug occur):
* the `as_strided` copy under a replayed CUDA graph with more than 16 requests gives `illegal_memory_access` or
  `wrong_result`, never `ok`; the sliced copy is `ok` everywhere;
* vLLM's 16 x 16 kernel options are bitwise batch-invariant wherever the launch is right;
* stock vLLM 0.20.0 refuses FLEX_ATTENTION under `VLLM_BATCH_INVARIANT=1`; patched, it completes every batch and
  request 0 is bitwise equal alone and inside the batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flexfix.edition import results
from flexfix.measure.outcomes import CRASHES

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.gpu
BROKEN = set(CRASHES) | {"wrong_result"}


def _why_not() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (make test-gpu is for a GPU box; CI never runs it)"
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return f"vLLM cannot be imported ({e})"
    return None


@pytest.fixture(scope="session")
def gpu_results(tmp_path_factory) -> Path:
    given = os.environ.get("FLEXFIX_GPU_RESULTS")
    if given:  # the results of a GPU run already done: asserting on them needs no GPU
        folder = Path(given)
        if not folder.is_dir():
            pytest.fail(f"FLEXFIX_GPU_RESULTS={given!r} is not a folder")
        return folder
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    from flexfix.edition.run_notebooks import NOTEBOOKS, run_all

    out = tmp_path_factory.mktemp("gpu")
    runs = run_all(sorted(NOTEBOOKS.glob("*.ipynb")), out / "notebooks", "cuda", str(out / "results"))
    failed = [f"{r.notebook}: {r.error}" for r in runs if not r.ok]
    assert not failed, "notebooks failed with GPU parameters:\n" + "\n".join(failed)
    return out / "results"


def load(folder: Path, name: str, columns=()):
    table, prov = results.read_results(results.results_path(folder, name, "cuda"), columns=columns)
    assert prov["device_kind"] == "cuda"
    return table


def test_torch_only_repro_breaks_with_as_strided_and_not_with_the_slice(gpu_results):
    runs = load(gpu_results, "ima_kernel", ["copy", "batch", "status"])
    many = runs[runs.batch > 16]
    assert len(many) and set(many[many["copy"] == "as_strided"].status) <= BROKEN
    assert (many[many["copy"] == "sliced"].status == "ok").all()
    assert (runs[runs.batch <= 16].status == "ok").all()


def test_kernel_sweep_verdicts(gpu_results):
    """With vLLM's 16 x 16 tiles (PyTorch's own choice often fails to compile for these blocks): as_strided replayed
    from a graph breaks the needle wherever it sits in query block 1 or later (block 0's row is read right; a crash
    takes the whole launch, whatever the position); everything else is ok and bitwise equal to the needle alone."""
    columns = ["options", "launch", "copy", "batch", "needle_query_block", "outcome", "bitwise_equal"]
    cells = load(gpu_results, "kernel_invariance", columns)
    tiles16 = cells[cells.options != "pytorch"]
    replayed = (tiles16.launch == "graph") & (tiles16["copy"] == "as_strided") & (tiles16.batch > 16)
    misread = replayed & (tiles16.needle_query_block >= 1)
    assert misread.any() and set(tiles16[misread].outcome) <= BROKEN
    assert set(tiles16[replayed & ~misread].outcome) <= BROKEN | {"ok"}
    right = tiles16[~replayed]
    assert (right.outcome == "ok").all() and right.bitwise_equal.astype(bool).all()
    sliced = cells[cells["copy"] == "sliced"]
    assert set(sliced[sliced.options != "pytorch"].outcome) == {"ok"}


def test_stock_vllm_refuses_batch_invariance_and_crashes_past_16(gpu_results):
    engine = load(gpu_results, "engine_scenarios", ["scenario", "status"]).set_index("scenario").status
    assert engine["a"] == "refused"
    assert engine["b"] in BROKEN | {"illegal_memory_access"} and engine["d"] in BROKEN
    assert engine["c"] == "ok"


def test_patched_engine_completes_and_is_bitwise_equal(gpu_results):
    patched = load(gpu_results, "engine_patched", ["scenario", "status", "records"])
    assert (patched.status == "ok").all(), patched[["scenario", "status"]]
    for _, run in patched.iterrows():
        assert run.records and all(r["completed"] == r["requests"] for r in run.records), run.scenario
        assert all(r["request0_logprobs_bitwise_equal_alone"] for r in run.records), run.scenario
    checks = load(gpu_results, "patch_checks", ["check", "value"]).set_index("check")["value"]
    assert checks.drop(["before: copy keeps the destination's strides", "before: supports_batch_invariance()"]).all()
