"""Bad notebook parameters fail in the notebook's first executed cell, naming the parameter and the value.

The parameters cell and the cell after it (the one that validates) are run here in-process, with papermill's
overrides applied as papermill applies them (assignments after the parameters cell): the same code a notebook
kernel runs, without starting one."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def first_cells(stem: str, overrides: dict) -> dict:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    from IPython.display import display  # a kernel's builtin, which a validating cell may call

    namespace: dict = {"display": display}
    exec(code[at].source, namespace)  # noqa: S102 - the notebook's own parameters cell
    namespace.update(overrides)  # papermill's injected cell
    exec(code[at + 1].source, namespace)  # noqa: S102 - the notebook's validating cell
    return namespace


CASES = [
    ("01_reproduce_ima", {"RUN_ENGINE": "false"}, "RUN_ENGINE must be True or False, got 'false'"),
    ("01_reproduce_ima", {"RUN_SANITIZER": 1}, "RUN_SANITIZER must be True or False, got 1"),
    ("01_reproduce_ima", {"SMALL_BATCH": 17}, "SMALL_BATCH=17 is larger than the maximum 16"),
    ("01_reproduce_ima", {"BATCH": 129}, "BATCH=129 is larger than the maximum 128"),
    ("01_reproduce_ima", {"BATCH": 0}, "BATCH must be a positive integer, got 0"),
    ("01_reproduce_ima", {"SEEDS": [0, -1]}, r"SEEDS\[1\] must be an integer >= 0, got -1"),
    ("01_reproduce_ima", {"SEEDS": list(range(50))}, "number of SEEDS=50 is larger than the maximum 20"),
    ("01_reproduce_ima", {"DEVICE": "gpu"}, "DEVICE must be one of"),
    ("02_apply_flexfix", {"RUN_ENGINE": "no"}, "RUN_ENGINE must be True or False, got 'no'"),
    ("02_apply_flexfix", {"SEEDS": []}, "SEEDS must not be empty"),
    ("03_stride_layouts", {"G_MAX": 100_000}, "G_MAX=100000 is larger than the maximum 64"),
    ("03_stride_layouts", {"W_MAX": 10**7}, "W_MAX=10000000 is larger than the maximum 4096"),
    ("03_stride_layouts", {"G": 5}, "G=5 is larger than the maximum 4"),
    ("03_stride_layouts", {"K_REPLAY": 65}, "K_REPLAY=65 is larger than the maximum 64"),
    ("03_stride_layouts", {"EQUIVALENCE_SHAPES": 10**6}, "EQUIVALENCE_SHAPES=1000000 is larger than the maximum 5000"),
    ("03_stride_layouts", {"K_CAPTURE": 2.5}, "K_CAPTURE must be a positive integer, got 2.5"),
    ("04_batch_invariance", {"RUN_ENGINE": "False"}, "RUN_ENGINE must be True or False, got 'False'"),
    ("04_batch_invariance", {"BATCHES": [1, 256]}, r"BATCHES\[1\]=256 is larger than the maximum 128"),
    ("04_batch_invariance", {"MAX_MODEL_LEN": 10**6}, "MAX_MODEL_LEN=1000000 is larger than the maximum 8192"),
    ("04_batch_invariance", {"NEEDLE_LEN": 300}, "NEEDLE_LEN=300 is larger than the maximum 256"),
    ("04_batch_invariance", {"WORKERS": 0}, "WORKERS must be a positive integer, got 0"),
    ("04_batch_invariance", {"POSITIONS": ["centre"]}, "position must be one of"),
    ("05_cost", {"CPU_CONTEXTS": [256, 100_000]}, r"CPU_CONTEXTS\[1\]=100000 is larger than the maximum 4096"),
    ("05_cost", {"CPU_REPS": 10**6}, "CPU_REPS=1000000 is larger than the maximum 1000"),
    ("05_cost", {"WARMUP": -1}, "WARMUP must be an integer >= 0, got -1"),
    ("05_cost", {"CPU_HEADS": [8, 3, 64]}, "query heads a multiple of KV heads"),
    # 06 checked none of MODEL, REQUESTS, RUN_SERVER (issue #22): a typo reached the GPU run, or was ignored on CPU
    ("06_serving", {"RUN_SERVER": "false"}, "RUN_SERVER must be True or False, got 'false'"),
    ("06_serving", {"MODEL": "huge"}, r"model must be one of \['tiny', 'variance'\], got 'huge'"),
    ("06_serving", {"REQUESTS": [48, 48]}, "requests: 48 is listed twice"),
    ("06_serving", {"REQUESTS": "48"}, "requests must be a list of batch sizes or None, got '48'"),
    ("06_serving", {"REQUESTS": [0]}, "requests must be a positive integer, got 0"),
    ("06_serving", {"SCENARIOS": ["stock", "stock"]}, "scenario 'stock' is listed twice"),
    ("06_serving", {"SCENARIOS": ["stok"]}, "unknown scenario 'stok'"),
    ("06_serving", {"SCENARIOS": []}, "scenarios must be a non-empty list of names"),
    ("06_serving", {"FAKE_REQUESTS": [20, 20]}, "requests: 20 is listed twice"),
    ("06_serving", {"FAKE_SERVER": "missing.py"}, "FAKE_SERVER 'missing.py' is not a file"),
    ("06_serving", {"MAX_TOKENS": 0}, "MAX_TOKENS must be a positive integer, got 0"),
]


@pytest.mark.parametrize("stem, overrides, message", CASES, ids=[f"{s}-{next(iter(o))}" for s, o, _ in CASES])
def test_bad_parameter_fails_in_the_first_cell_by_name(stem, overrides, message, monkeypatch):
    monkeypatch.chdir(NOTEBOOKS)
    monkeypatch.setattr("flexfix.edition.params.cuda_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        first_cells(stem, overrides)


@pytest.mark.parametrize("stem", [p.stem for p in sorted(NOTEBOOKS.glob("0[1-6]_*.ipynb"))])
def test_the_defaults_pass_the_first_cell(stem, monkeypatch):
    monkeypatch.chdir(NOTEBOOKS)
    monkeypatch.setattr("flexfix.edition.params.cuda_available", lambda: False)
    assert first_cells(stem, {})["device"] == "cpu"
