"""Bounds and refusals below the command lines: the library calls a notebook makes, the helpers in
``flexfix.edition.params`` the notebooks' first cells use, and ``flexfix repro``."""

import numpy as np
import pytest

from flexfix.edition import params
from flexfix.measure import invariance, record, repro
from flexfix.measure.outcomes import Outcome
from flexfix.mechanism import paged

SW = invariance.SweepShape(
    paged.PagedShape(max_num_seqs=48, max_model_len=256, num_pages=1024), needle_len=120, capture_len=40
)
CFG = invariance.KernelConfig("analog_page", "vllm", "frozen", "sliced")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batches=[0]), "batch size 0 is not an integer in 1..max_num_seqs=48"),
        (dict(batches=[49]), "batch size 49 is not an integer in 1..max_num_seqs=48"),
        (dict(batches=[True]), "batch size True is not an integer in 1..max_num_seqs=48"),
        (dict(batches=[2.5]), "batch size 2.5 is not an integer in 1..max_num_seqs=48"),
        (dict(batches=[1, 1]), "batch size 1 is listed twice"),
        (dict(batches=[1], positions=["first", "first"]), "position 'first' is listed twice"),
        (dict(batches=[1], positions=["top"]), "position must be one of ('first', 'middle', 'last'), got 'top'"),
        (dict(batches=[1], workers=0), "workers must be a positive integer, got 0"),
        (dict(batches=[1], workers=65), "workers=65 is larger than the maximum 64"),
        (
            dict(batches=[1], configs=[CFG, CFG]),
            "configuration 'analog, page-by-page softmax, frozen, sliced' is listed twice",
        ),
    ],
    ids=[
        "zero",
        "over the buffer",
        "bool",
        "float",
        "batch twice",
        "position twice",
        "position",
        "no workers",
        "too many workers",
        "config twice",
    ],  # fmt: skip
)
def test_kernel_sweep_refuses_before_starting_a_child(monkeypatch, kwargs, message):
    monkeypatch.setattr(invariance, "run_child", lambda *a, **k: pytest.fail("a child was started"))
    configs = kwargs.pop("configs", [CFG])
    with pytest.raises(ValueError) as err:
        invariance.kernel_sweep(configs, SW, "cpu", progress=False, **kwargs)
    assert str(err.value) == message


def test_kernel_sweep_takes_numpy_batch_sizes(monkeypatch):
    def fake(argv, timeout, **kw):
        import json

        cells = json.loads(argv[-1])["cells"]
        rows = [
            {**invariance.cell_keys(CFG, SW, "cpu", b, p), "outcome": "ok", "bitwise_equal": True, "max_abs_diff": 0.0,
             "max_error_vs_reference": 0.0, "detail": ""}
            for b, p in cells
        ]  # fmt: skip
        return Outcome("ok", records=[{"ready": CFG.name}, *rows])

    monkeypatch.setattr(invariance, "run_child", fake)
    table = invariance.kernel_sweep([CFG], SW, "cpu", batches=list(np.array([1, 17])), progress=False)
    assert table.batch.tolist() == [1, 1, 1, 17, 17, 17]


@pytest.mark.parametrize("value", [True, False])
def test_flag_takes_a_real_bool(value):
    assert params.flag("RUN_ENGINE", value) is value


@pytest.mark.parametrize("value", ["false", "False", 0, 1, None, "yes"])
def test_flag_refuses_anything_else_by_name(value):
    with pytest.raises(ValueError) as err:
        params.flag("RUN_ENGINE", value)
    assert str(err.value) == f"RUN_ENGINE must be True or False, got {value!r}"


@pytest.mark.parametrize(
    "text, bounds, expected",
    [
        ("1,8,16", {}, [1, 8, 16]),
        (" 4 , 5 ", {}, [4, 5]),
        ("0,3", {"minimum": 0}, [0, 3]),
        ("", {"allow_empty": True}, []),
        ("  ", {"allow_empty": True}, []),
        ("128", {"maximum": 128}, [128]),
    ],
)
def test_parse_ints_reads_good_lists(text, bounds, expected):
    assert params.parse_ints("--batches", text, **bounds) == expected


@pytest.mark.parametrize(
    "text, bounds, message",
    [
        ("", {}, "--batches must not be empty"),
        ("0", {}, "--batches: 0 is outside >= 1"),
        ("129", {"maximum": 128}, "--batches: 129 is outside 1..128"),
        ("-1", {"minimum": 0, "maximum": 9}, "--batches: -1 is outside 0..9"),
        ("1,2,", {}, "--batches: '' is not an integer (expected e.g. 1,8,16)"),
        ("1e3", {}, "--batches: '1e3' is not an integer (expected e.g. 1,8,16)"),
        ("0x10", {}, "--batches: '0x10' is not an integer (expected e.g. 1,8,16)"),
        ("3,1,3", {}, "--batches: 3 is listed twice"),
    ],
)
def test_parse_ints_refuses_by_name(text, bounds, message):
    with pytest.raises(ValueError) as err:
        params.parse_ints("--batches", text, **bounds)
    assert str(err.value) == message


def test_writable_folder_creates_and_probes(tmp_path):
    folder = params.writable_folder("RESULTS_DIR", tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe is gone


def test_writable_folder_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError) as err:
        params.writable_folder("RESULTS_DIR", tmp_path / "f")
    assert str(err.value) == f"RESULTS_DIR {str(tmp_path / 'f')!r} is a file, not a folder"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch", "0"], "--batch must be a positive integer, got 0"),
        (["--batch", "500"], "--batch=500 is larger than the maximum 128"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--timeout", "0"], "--timeout must be in (0, 3600] seconds, got 0.0"),
        (["--timeout", "nan"], "--timeout must be in (0, 3600] seconds, got nan"),
        (["--timeout", "1e9"], "--timeout must be in (0, 3600] seconds, got 1000000000.0"),
        (["--launch", "graph"], "--launch graph needs --device cuda (a CUDA graph)"),
        (["--sanitizer"], "--sanitizer needs --device cuda (compute-sanitizer checks CUDA kernels)"),
        (["--copy", "memcpy"], "argument --copy: invalid choice: 'memcpy' (choose from 'as_strided', 'sliced')"),
    ],
)
def test_repro_command_line_refuses_by_name_without_starting_a_child(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(repro, "run_kernel_in_child", lambda *a, **k: pytest.fail("a child was started"))
    with pytest.raises(SystemExit) as exit_:
        repro.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines()[-1] == f"flexfix repro: error: {message}"


@pytest.mark.skipif(params.cuda_available(), reason="checks a machine without a GPU")
def test_repro_command_line_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(repro, "run_kernel_in_child", lambda *a, **k: pytest.fail("a child was started"))
    with pytest.raises(SystemExit) as exit_:
        repro.main(["--device", "cuda"])
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == (
        "flexfix repro: error: --device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)"
    )


def test_sanitizer_library_call_refuses_a_batch_over_the_buffer():
    with pytest.raises(ValueError) as err:
        record.sanitizer_outcomes(500)
    assert str(err.value) == "batch=500 is larger than the maximum 128"


def test_engine_library_call_refuses_an_unknown_scenario(tmp_path):
    with pytest.raises(ValueError) as err:
        record.engine_outcomes(["a", "zz"], tmp_path)
    assert str(err.value).startswith("unknown engine scenario 'zz'; expected one of ['a', 'b', 'c', 'd'")


def test_writable_folder_names_a_path_too_long_instead_of_raising_it(tmp_path):
    """A 300-character name gave ENAMETOOLONG from the validator itself, as a traceback."""
    shortened = r"^RESULTS_DIR '.{60}\.\.\..{40}' is not a writable folder: File name too long$"
    with pytest.raises(ValueError, match=shortened):
        params.writable_folder("RESULTS_DIR", tmp_path / ("x" * 300))


def test_writable_folder_finds_a_full_disk_before_the_work(tmp_path, monkeypatch):
    """An empty probe file fits on a full disk; the probe writes and flushes real bytes."""
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ValueError, match="is not a writable folder: No space left on device"):
        params.writable_folder("--out", tmp_path)
    assert [p for p in tmp_path.iterdir()] == []


def test_existing_file_refuses_a_folder_or_nothing(tmp_path):
    with pytest.raises(ValueError, match="FAKE_SERVER .* is not a file"):
        params.existing_file("FAKE_SERVER", tmp_path)
    with pytest.raises(ValueError, match="FAKE_SERVER must be a file's path, got None"):
        params.existing_file("FAKE_SERVER", None)
