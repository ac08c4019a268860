"""The subprocess runner classifies every way a child can end; the caller always survives."""

import pytest

from flexfix.measure import outcomes, repro


def child(code: str, **kw):
    return outcomes.run_child(["-c", code], **kw)


def test_segfault_is_an_error_with_its_signal():
    out = child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (out.status, out.signal) == ("error", "SIGSEGV")
    assert "SIGSEGV" in out.detail


def test_killed_by_a_signal():
    out = child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert (out.status, out.signal) == ("error", "SIGKILL")


def test_hang_is_killed_at_the_timeout():
    out = child("import time; time.sleep(60)", timeout=2)
    assert out.status == "timeout" and out.seconds < 30


def test_grandchildren_are_killed_with_it():
    out = child(
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        " time.sleep(60)",
        timeout=2,
    )
    assert out.status == "timeout"


def test_cuda_illegal_address_text():
    out = child(
        "import sys; print('RuntimeError: CUDA error: an illegal memory access was encountered', "
        "file=sys.stderr); sys.exit(1)"
    )
    assert out.status == "illegal_memory_access"
    assert "illegal memory access" in out.detail


def test_non_zero_exit_without_report():
    out = child("import sys; sys.exit(3)")
    assert (out.status, out.exit_code) == ("error", 3)


def test_refusal_text_from_any_process():
    out = child(
        'print("ValueError: Selected backend FLEX_ATTENTION is not valid for this configuration. '
        "Reason: ['batch invariance not supported']\"); raise SystemExit(1)"
    )
    assert out.status == "refused"


def test_reported_records_and_status_come_back():
    code = (
        "from flexfix.measure.outcomes import Reporter; r = Reporter(); r.record({'step': 1}); "
        "r.finish('wrong_result', 'max error 1.5', k=3)"
    )
    out = child(code)
    assert (out.status, out.detail, out.records, out.extra) == (
        "wrong_result",
        "max error 1.5",
        [{"step": 1}],
        {"k": 3},
    )


def test_records_before_a_crash_are_kept():
    code = (
        "import os, signal; from flexfix.measure.outcomes import Reporter; Reporter().record({'step': 'capture'}); "
        "os.kill(os.getpid(), signal.SIGSEGV)"
    )
    out = child(code)
    assert out.status == "error" and out.records == [{"step": "capture"}]


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="unknown status"):
        outcomes.Reporter(path="/dev/null").finish("crashed")


def test_worst_outcome_order():
    assert outcomes.worst(["ok", "wrong_result", "ok"]) == "wrong_result"
    assert outcomes.worst(["ok", "index_error", "wrong_result"]) == "index_error"
    assert outcomes.worst(["ok"]) == "ok"


def test_kernel_scenario_through_the_cli_in_a_child():
    out = repro.run_kernel_in_child("as_strided", "cpu", 48, 0, timeout=120)
    assert out.status in ("index_error", "wrong_result")
    assert out.records[0]["step"] == "capture" and len(out.records) == 5
    assert repro.run_kernel_in_child("sliced", "cpu", 48, 0, timeout=120).status == "ok"


def test_sanitizer_without_the_tool_says_so(monkeypatch):
    monkeypatch.setattr(repro.shutil, "which", lambda name: None)
    out = repro.run_kernel_in_child("as_strided", "cuda", 48, 0, sanitizer=True)
    assert out.status == "error" and "compute-sanitizer" in out.detail


def test_json_child_protocol_round_trip(tmp_path, monkeypatch):
    """Parent argv and child main agree: the spec arrives whole; a failing body is reported."""

    spec = {"cells": [[17, "last"]], "name": "x, y"}
    argv = outcomes.json_child_argv("flexfix.some_child", spec)
    assert argv[:3] == ["-m", "flexfix.some_child", "--child"]
    report = tmp_path / "report.jsonl"
    monkeypatch.setenv("FLEXFIX_REPORT", str(report))
    seen = []
    assert outcomes.json_child_main("flexfix.some_child", lambda s, r: (seen.append(s), r.finish("ok")), argv[2:]) == 0
    assert seen == [spec]
    assert outcomes.json_child_main("flexfix.some_child", lambda s, r: 1 / 0, argv[2:]) == 1
    assert '"status": "error"' in report.read_text().splitlines()[-1]
