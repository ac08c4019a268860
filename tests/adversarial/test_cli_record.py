"""`flexfix record`: bad arguments are refused before any work, by name (exit 2); results
are never replaced by less; progress survives an interrupt or a failing write, and the message says where.

Most cases call ``record.main`` in this process (argparse's usage error is ``SystemExit(2)``); the
children are replaced by fakes, so nothing here needs a GPU or runs a real kernel."""

import errno
import json

import pytest

from flexfix.edition import params, results
from flexfix.measure import children, record
from flexfix.measure.outcomes import Outcome
from flexfix.measure.record import cli as record_cli
from flexfix.measure.record import engines as record_engines
from flexfix.measure.record import kernel as record_kernel

PROG = "flexfix record"
NO_GPU = pytest.mark.skipif(params.cuda_available(), reason="checks the refusals of a machine without a GPU")


@pytest.fixture
def out(tmp_path):
    return tmp_path / "results"


@pytest.fixture
def no_work(monkeypatch):
    """Any started work fails the test: a refusal must come before it."""

    def started(*args, **kwargs):
        raise AssertionError("work started although the arguments were refused")

    from flexfix.measure import invariance, timing

    for target, name in (
        (record_kernel, "run_kernel_in_child"),
        (record_kernel, "kernel_outcomes"),
        (record_kernel, "sanitizer_outcomes"),
        (record_engines, "engine_outcomes"),
        (record_engines, "engine_sweep"),
        (record_engines, "model_dir"),
        (invariance, "kernel_sweep"),
        (timing, "decode_sweep"),
    ):
        monkeypatch.setattr(target, name, started)


def refused(argv, capsys) -> str:
    """Run the command, expect argparse's usage error (exit 2); its message."""
    with pytest.raises(SystemExit) as exit_:
        record_cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err
    return err.splitlines()[-1]


def no_results(folder) -> bool:
    return not folder.exists() or not [p for p in folder.iterdir() if p.suffix == ".json"]


USAGE_ERRORS = [
    # kernel
    (["kernel", "--seeds", "0"], "error: --seeds must be a positive integer, got 0"),
    (["kernel", "--seeds", "-3"], "error: --seeds must be a positive integer, got -3"),
    (["kernel", "--seeds", "101"], "error: --seeds=101 is larger than the maximum 100"),
    (["kernel", "--seeds", "x"], "error: argument --seeds: invalid int value: 'x'"),
    (["kernel", "--batches", "0"], "error: --batches: 0 is outside 1..128"),
    (["kernel", "--batches", "129"], "error: --batches: 129 is outside 1..128"),
    (["kernel", "--batches", "16,x"], "error: --batches: 'x' is not an integer (expected e.g. 1,8,16)"),
    (["kernel", "--batches", "2.5"], "error: --batches: '2.5' is not an integer (expected e.g. 1,8,16)"),
    (["kernel", "--batches", "1,,2"], "error: --batches: '' is not an integer (expected e.g. 1,8,16)"),
    (["kernel", "--batches", "16,16"], "error: --batches: 16 is listed twice"),
    (["kernel", "--batches", ""], "error: --batches must not be empty"),
    (["kernel", "--name", "a/b"], "error: --name: results name must be a plain file stem, got 'a/b'"),
    (["kernel", "--name", ""], "error: --name: results name must be a plain file stem, got ''"),
    (["kernel", "--name", ".hidden"], "error: --name: results name must be a plain file stem, got '.hidden'"),
    (["kernel", "--workers", "0"], "error: --workers must be a positive integer, got 0"),
    (
        ["engine-sweep", "--throughput", "48", "--workers", "2"],
        "error: --workers 2 with --throughput: engines that time throughput run one at a time",
    ),
    (["engine", "--workers", "17"], "error: --workers=17 is larger than the maximum 16"),
    (["kernel", "--workers", "65"], "error: --workers=65 is larger than the maximum"),
    (
        ["timing", "--workers", "2"],
        "error: --workers does not apply to record timing (it is an option of: invariance, kernel, engine, "
        "engine-sweep)",
    ),
    (["kernel", "--contexts", "256"], "error: --contexts does not apply to record kernel (it is an option of: timing)"),
    (
        ["kernel", "--runs", "tiny:bi1:full"],
        "error: --runs does not apply to record kernel (it is an option of: engine-sweep)",
    ),
    (["timing", "--seeds", "3"], "error: --seeds does not apply to record timing (it is an option of: kernel)"),
    (
        ["invariance", "--scenarios", "a"],
        "error: --scenarios does not apply to record invariance (it is an option of: engine)",
    ),
    (
        ["engine-sweep", "--capture-len", "200"],
        "error: --capture-len does not apply to record engine-sweep (it is an option of: invariance)",
    ),
    (["kernels"], "error: argument part: invalid choice: 'kernels'"),
    (["kernel", "--device", "gpu"], "error: argument --device: invalid choice: 'gpu' (choose from 'cpu', 'cuda')"),
    # sanitizer
    (["sanitizer", "--batches", "16,48"], "error: --batches: record sanitizer runs one batch size, got 2 (16,48)"),
    # invariance
    (["invariance", "--capture-len", "-5"], "error: --capture-len must be a positive integer, got -5"),
    (["invariance", "--capture-len", "0"], "error: --capture-len must be a positive integer, got 0"),
    (
        ["invariance", "--capture-len", "300"],
        "error: --capture-len 300: capture_len must give another K than needle_len",
    ),
    (
        ["invariance", "--capture-len", "10000"],
        "error: --capture-len 10000: 128 requests of up to 10000 tokens need 80000 pages",
    ),
    (["invariance", "--workers", "0"], "error: --workers must be a positive integer, got 0"),
    (["invariance", "--workers", "100000"], f"error: --workers=100000 is larger than the maximum {record.MAX_WORKERS}"),
    (["invariance", "--batches", "129"], "error: --batches: 129 is outside 1..128"),
    (
        ["invariance", "--configs", ""],
        "error: --configs: no configuration given (expected KERNEL:OPTIONS:LAUNCH:COPY,...)",
    ),
    (
        ["invariance", "--configs", "flex:vllm"],
        "error: --configs: kernel configuration 'flex:vllm': expected KERNEL:OPTIONS:LAUNCH:COPY",
    ),
    (
        ["invariance", "--configs", "cudnn:vllm:eager:sliced"],
        "error: --configs: kernel must be one of ('flex', 'analog_row', 'analog_page'), got 'cudnn'",
    ),
    (
        ["invariance", "--configs", "flex:fast:eager:sliced"],
        "error: --configs: kernel options mode must be 'pytorch', 'vllm' or 'batch_invariant', got 'fast'",
    ),
    (
        ["invariance", "--configs", "analog_page:vllm:frozen:sliced,analog_page:vllm:frozen:sliced"],
        "error: --configs: 'analog, page-by-page softmax, frozen, sliced' is listed twice",
    ),
    (
        ["invariance", "--device", "cpu", "--configs", "flex:vllm:graph:sliced"],
        "error: --configs: flex:vllm:graph:sliced needs a CUDA graph, and this run is on cpu",
    ),
    # timing
    (["timing", "--contexts", "0"], "error: --contexts: 0 is outside 1..32768"),
    (["timing", "--contexts", "40000"], "error: --contexts: 40000 is outside 1..32768"),
    (["timing", "--batches", "129"], "error: --batches: 129 is outside 1..128"),
    (
        ["timing", "--device", "cpu"],
        "error: --batches 128 with --contexts 8192: one step reads 8.0 GiB of keys and values (float32); "
        "the limit on cpu is 4 GiB (choose smaller --batches or --contexts)",
    ),
    # engine-sweep
    (["engine-sweep", "--runs", ""], "error: --runs: no engine run given (expected MODEL:bi0|bi1|stock:GRAPHS,...)"),
    (["engine-sweep", "--runs", "  "], "error: --runs: no engine run given (expected MODEL:bi0|bi1|stock:GRAPHS,...)"),
    (
        ["engine-sweep", "--runs", "tiny:full"],
        "error: --runs: engine run 'tiny:full': expected MODEL:bi0|bi1|stock:GRAPHS",
    ),
    (
        ["engine-sweep", "--runs", "huge:bi1:full"],
        "error: --runs: model must be one of ['tiny', 'variance'], got 'huge'",
    ),
    (
        ["engine-sweep", "--runs", "tiny:bi1:cudnn"],
        "error: --runs: graphs must be one of ['eager', 'full', 'piecewise'], got 'cudnn'",
    ),
    (
        ["engine-sweep", "--runs", "tiny:bi1:full,tiny:bi1:full"],
        "error: --runs: 'tiny, BI=1, full graphs' is listed twice",
    ),
    (["engine-sweep", "--repeats", "0"], "error: --repeats must be a positive integer, got 0"),
    (["engine-sweep", "--repeats", "1000"], "error: --repeats=1000 is larger than the maximum 100"),
    (["engine-sweep", "--throughput", "0"], "error: --throughput: 0 is outside 1..256"),
    (["engine-sweep", "--requests", "300"], "error: --requests: 300 is outside 1..256"),
    (["engine-sweep", "--every-request", "17,17"], "error: --every-request: 17 is listed twice"),
    (
        ["engine-sweep", "--requests", ""],
        "error: --requests, --every-request and --throughput are all empty: the engines would measure nothing",
    ),
    # engine
    (
        ["engine", "--scenarios", "zz"],
        "error: --scenarios: unknown scenario 'zz'; expected some of a, b, c, d, threshold",
    ),
    (["engine", "--scenarios", "a,a"], "error: --scenarios: a is listed twice"),
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=[" ".join(a) or "empty" for a, _ in USAGE_ERRORS])
def test_bad_arguments_are_refused_before_any_work(argv, message, out, no_work, capsys):
    line = refused([*argv, "--out", str(out)], capsys)
    assert line.startswith(f"{PROG}: {message}"), line
    assert no_results(out)


GPU_REFUSALS = [
    (
        ["kernel", "--device", "cuda"],
        "--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)",
    ),
    (
        ["invariance", "--device", "cuda"],
        "--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is False)",
    ),
    (["engine"], "record engine needs a CUDA GPU (the vLLM engine); none is usable here"),
    (["engine-sweep"], "record engine-sweep needs a CUDA GPU (the vLLM engine); none is usable here"),
    (["sanitizer"], "record sanitizer needs a CUDA GPU (compute-sanitizer); none is usable here"),
]


@NO_GPU
@pytest.mark.parametrize("argv, message", GPU_REFUSALS, ids=[" ".join(a) for a, _ in GPU_REFUSALS])
def test_a_missing_gpu_is_found_before_any_work(argv, message, out, no_work, capsys):
    assert refused([*argv, "--out", str(out)], capsys) == f"{PROG}: error: {message}"
    assert no_results(out)


def test_out_that_is_a_file(tmp_path, no_work, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    line = refused(["kernel", "--device", "cpu", "--out", str(target)], capsys)
    assert line == f"{PROG}: error: --out {str(target)!r} is a file, not a folder"
    assert target.read_text() == "x"


def test_out_below_a_file(tmp_path, no_work, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    line = refused(["kernel", "--device", "cpu", "--out", str(target / "sub")], capsys)
    assert line == f"{PROG}: error: --out {str(target / 'sub')!r} is not a writable folder: Not a directory"


def test_out_where_nothing_can_be_created(no_work, capsys):
    line = refused(["kernel", "--device", "cpu", "--out", "/proc/flexfix-results"], capsys)
    assert line.startswith(f"{PROG}: error: --out '/proc/flexfix-results' is not a writable folder: ")


def test_out_that_cannot_be_written(tmp_path, monkeypatch, no_work, capsys):
    """A read-only folder (simulated: the tests run as root, who may write anywhere)."""

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(params.tempfile, "NamedTemporaryFile", read_only)
    line = refused(["kernel", "--device", "cpu", "--out", str(tmp_path)], capsys)
    assert line == f"{PROG}: error: --out {str(tmp_path)!r} is not a writable folder: Permission denied"


def rows(n, **extra):
    return [{"copy": "sliced", "batch": 16, "seed": i, "status": "ok", **extra} for i in range(n)]


def test_a_complete_file_with_more_records_is_not_replaced_unasked(out, no_work, capsys):
    path = results.write_results(out, "ima_kernel", rows(84), "cpu", {})
    before = path.read_bytes()
    line = refused(["kernel", "--device", "cpu", "--seeds", "1", "--batches", "16", "--out", str(out)], capsys)
    assert line == (
        f"{PROG}: error: --out: {path} holds 84 records and this run would write 2: pass --replace to replace it, "
        "or choose another --out or --name"
    )
    assert path.read_bytes() == before


def test_a_partial_file_of_an_interrupted_run_is_not_overwritten_unasked(out, no_work, capsys):
    partial = results.write_results(out, "ima_kernel", rows(3), "cpu", {}, partial=True)
    before = partial.read_bytes()
    line = refused(["kernel", "--device", "cpu", "--out", str(out)], capsys)
    assert line == (
        f"{PROG}: error: --out: {partial} holds 3 records of an interrupted run: move it away first, or pass "
        "--replace to overwrite it"
    )
    assert partial.read_bytes() == before


def test_a_cpu_run_never_aims_at_a_gpu_recorded_file(out, no_work, capsys):
    out.mkdir()
    prov = results.provenance("cpu", {})
    (out / "ima_kernel-cpu.json").write_text(
        json.dumps({"provenance": {**prov, "device_kind": "cuda"}, "records": rows(2)})
    )
    line = refused(["kernel", "--device", "cpu", "--out", str(out)], capsys)
    gpu_file = out / "ima_kernel-cpu.json"
    assert line == f"{PROG}: error: --out: {gpu_file} holds a GPU-recorded result; a CPU run does not replace it"


# Runs with fake children (the real one is test_repro's; here the orchestration is under test).


class FakeKernelChildren:
    """Stands for run_kernel_in_child: records the calls, sees the partial file, fails on demand."""

    def __init__(self, out, fail_at=None, exc=KeyboardInterrupt):
        self.out, self.fail_at, self.exc = out, fail_at, exc
        self.calls, self.partial_seen = [], []

    def __call__(self, copy, device, batch, seed, **kw):
        self.partial_seen.append(records_in(results.results_path(self.out, "ima_kernel", "cpu", partial=True)))
        if len(self.calls) == self.fail_at:
            raise self.exc()
        self.calls.append((copy, batch, seed))
        return Outcome("ok", "fake", exit_code=0, records=[{"step": "capture"}])


def records_in(path):
    try:
        return len(json.loads(path.read_text())["records"])
    except OSError:
        return None


def run_kernel(out, monkeypatch, *extra, fail_at=None, exc=KeyboardInterrupt):
    fake = FakeKernelChildren(out, fail_at, exc)
    monkeypatch.setattr(record_kernel, "run_kernel_in_child", fake)
    argv = ["kernel", "--device", "cpu", "--seeds", "3", "--batches", "16,48", "--out", str(out), *extra]
    return record_cli.main(argv), fake


def test_a_complete_run_writes_the_file_and_no_partial(out, monkeypatch, capsys):
    status, fake = run_kernel(out, monkeypatch)
    assert status == 0 and len(fake.calls) == 12
    final = out / "ima_kernel-cpu.json"
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {final}"
    table, prov = results.read_results(final)
    assert len(table) == 12 and prov["parameters"] == {"seeds": [0, 1, 2], "batches": [16, 48], "workers": 1}
    assert not (out / "ima_kernel-cpu.partial.json").exists()


def test_progress_is_saved_after_each_run(out, monkeypatch):
    status, fake = run_kernel(out, monkeypatch)
    assert status == 0 and fake.partial_seen == [None, *range(1, 12)]


@pytest.mark.parametrize(
    "exc, status, name", [(KeyboardInterrupt, 130, "SIGINT"), (children.Terminated, 143, "SIGTERM")]
)
def test_an_interrupt_keeps_the_finished_runs_and_says_where(out, monkeypatch, capsys, exc, status, name):
    code, fake = run_kernel(out, monkeypatch, fail_at=3, exc=exc)
    partial = out / "ima_kernel-cpu.partial.json"
    err = capsys.readouterr().err
    assert code == status and "Traceback" not in err
    assert err.strip() == f"{PROG} kernel: interrupted by {name}; the 3 finished runs are kept in {partial}"
    table, _ = results.read_results(partial)
    assert table.seed.tolist() == [0, 1, 2] and not (out / "ima_kernel-cpu.json").exists()


def test_an_interrupt_before_anything_finished_writes_nothing(out, monkeypatch, capsys):
    code, _ = run_kernel(out, monkeypatch, fail_at=0)
    assert code == 130
    assert (
        capsys.readouterr().err.strip()
        == f"{PROG} kernel: interrupted by SIGINT; no runs had finished: nothing written"
    )
    assert no_results(out)


def test_an_interrupted_rerun_leaves_the_complete_file_alone(out, monkeypatch):
    path = results.write_results(out, "ima_kernel", rows(12, marker="earlier run"), "cpu", {})
    before = path.read_bytes()
    code, _ = run_kernel(out, monkeypatch, fail_at=3)
    assert code == 130 and path.read_bytes() == before
    assert records_in(out / "ima_kernel-cpu.partial.json") == 3


def test_a_rerun_with_as_many_records_replaces_the_file(out, monkeypatch):
    results.write_results(out, "ima_kernel", rows(12, marker="earlier run"), "cpu", {})
    code, _ = run_kernel(out, monkeypatch)
    table, _ = results.read_results(out / "ima_kernel-cpu.json")
    assert code == 0 and len(table) == 12 and "marker" not in table


def test_replace_allows_fewer_records_and_overwrites_a_partial(out, monkeypatch):
    results.write_results(out, "ima_kernel", rows(84), "cpu", {})
    results.write_results(out, "ima_kernel", rows(5), "cpu", {}, partial=True)
    code, fake = run_kernel(out, monkeypatch, "--replace")
    assert code == 0 and fake.partial_seen[1] == 1  # the old partial was overwritten by the first save
    assert records_in(out / "ima_kernel-cpu.json") == 12 and not (out / "ima_kernel-cpu.partial.json").exists()


def test_a_failing_save_stops_the_run_in_one_line_and_keeps_what_was_saved(out, monkeypatch, capsys):
    real = results.write_results
    saves = []

    def disk_full(*args, **kwargs):
        saves.append(kwargs.get("partial"))
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(results, "write_results", disk_full)
    code, fake = run_kernel(out, monkeypatch)
    partial = out / "ima_kernel-cpu.partial.json"
    assert code == 1 and len(fake.calls) == 3  # stopped at once, not after the other 9 runs
    assert capsys.readouterr().err.strip() == (
        f"{PROG} kernel: [Errno 28] No space left on device; the 2 finished runs are kept in {partial}"
    )
    assert records_in(partial) == 2


def test_a_refused_final_write_keeps_everything_in_the_partial_file(out, monkeypatch, capsys):
    """Someone else wrote a bigger file meanwhile: the run's 12 records stay in the partial file."""
    final = out / "ima_kernel-cpu.json"

    class Meanwhile(FakeKernelChildren):
        def __call__(self, *args, **kw):
            if len(self.calls) == 5:
                results.write_results(out, "ima_kernel", rows(50), "cpu", {})
            return super().__call__(*args, **kw)

    fake = Meanwhile(out)
    monkeypatch.setattr(record_kernel, "run_kernel_in_child", fake)
    code = record_cli.main(["kernel", "--device", "cpu", "--seeds", "3", "--batches", "16,48", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and records_in(final) == 50
    assert err == (
        f"{PROG} kernel: {final} holds 50 records and this run has 12: refusing to replace it with fewer (write "
        f"elsewhere, or replace it explicitly); the 12 finished runs are kept in {out / 'ima_kernel-cpu.partial.json'}"
    )


def test_the_kernel_library_call_refuses_empty_seeds():
    with pytest.raises(ValueError, match="seeds must not be empty"):
        record.kernel_outcomes("cpu", [], [48])


def test_the_kernel_library_call_refuses_a_batch_over_the_buffer():
    with pytest.raises(ValueError, match=r"batches\[0\]=129 is larger than the maximum 128"):
        record.kernel_outcomes("cpu", [0], [129])
