import fcntl
import os
import signal
from pathlib import Path

import pytest

from flexfix.edition.run_notebooks import describe_failure, execute, parameters_for
from flexfix.measure import children

os.environ.setdefault("MPLBACKEND", "agg")

# A background job of a non-interactive shell (`make test &`, nohup) starts with SIGINT ignored, and Python then
# leaves it ignored: the interrupt tests, which send SIGINT as a notebook kernel or a terminal does, would wait
# for their children instead (and the CLIs they start would inherit the ignored signal). Ctrl-C as usual.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# nohup leaves SIGHUP ignored the same way, and the CLIs the hang-up tests start inherit it and (as a program under
# nohup should) keep ignoring it: those tests failed under `nohup bash .ci/run`. Their children get the default back.
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

# Under pytest-xdist (`make test`: -n auto) the workers share the cores: each worker, the notebook kernels and the
# children it starts get their share of torch's threads (flexfix.measure.children.threads_per_child, for the same
# reason: torch's intra-op threads default to every core, and two workers of a 2-core machine with two threads
# each spend their time waiting for one another). A value the user set is left alone.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in children.THREAD_VARIABLES:
        os.environ.setdefault(_name, _share)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds per notebook cell
ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"


# `make test` runs the tests marked ``alone`` after the others, from this file only (a pytest that collects every
# module spends 14 s importing them for two tests of 2 s): an ``alone`` test elsewhere is refused at collection.
ALONE_FILE = "test_copy_speed.py"


def pytest_collection_modifyitems(items):
    """Everything under tests/adversarial/ belongs to the adversarial suite (marker ``adversarial``), with the
    cases elsewhere that carry the marker themselves: `pytest -m adversarial` runs the whole suite.  A test marked
    ``alone`` outside ``ALONE_FILE`` is a usage error: `make test` would run it nowhere."""
    for item in items:
        if ADVERSARIAL in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.adversarial)
        if item.get_closest_marker("alone") is not None and Path(item.path).name != ALONE_FILE:
            raise pytest.UsageError(
                f"{item.nodeid} is marked alone: `make test` runs those from tests/{ALONE_FILE} only"
            )


@pytest.fixture(autouse=True)
def _alone_under_xdist(request, tmp_path_factory):
    """Under pytest-xdist a test marked ``alone`` (a timing bound) runs while no other test runs: every test holds a
    shared lock of the session while it runs, a test marked ``alone`` the exclusive one. A turnstile in front of it
    keeps the other workers from taking the shared lock again and again while one waits for the exclusive one."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    alone = request.node.get_closest_marker("alone") is not None
    base = tmp_path_factory.getbasetemp().parent
    with open(base / "alone.gate", "a") as gate, open(base / "alone.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Execute each notebook once (lazily, once per test session, whichever test file asks first) with CPU
    parameters and hand back its results folder.

    Under pytest-xdist (`make test` runs ``-n auto``) every worker has a session of its own: the notebooks are
    executed into a folder that the workers share, the first worker that asks for a notebook executes it while
    holding that notebook's lock, the others wait for it and read the same results (or fail with the same
    message), so each notebook still runs once per ``pytest`` command."""
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = (tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()) / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    done = {}

    def run(stem):
        if stem not in done:
            out, nb = root / stem, ROOT / "notebooks" / f"{stem}.ipynb"
            failed, finished = root / f"{stem}.failed", root / f"{stem}.done"
            with open(root / f"{stem}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
                if not finished.exists() and not failed.exists():
                    why = _execute(nb, out)
                    if why:
                        failed.write_text(why)
                    else:
                        finished.touch()
            if failed.exists():
                pytest.fail(failed.read_text())
            done[stem] = out / "results"
        return done[stem]

    return run


def _execute(nb: Path, out: Path) -> str:
    """Execute ``nb`` into ``out`` with CPU parameters: what failed, or "" when it ran and keeps the edition
    rules."""
    try:
        execute(nb, out / "executed", parameters_for(nb.name, "cpu", out / "results"), timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - name the notebook and the failing cell
        return f"{nb.name} failed at {describe_failure(exc)}"
    import nbformat

    from flexfix.edition import publish

    executed_nb = nbformat.read(out / "executed" / nb.name, as_version=4)
    problems = publish.problems(publish.normalise(executed_nb), nb.name, allow_cpu=True)  # the edition rules
    return f"{nb.name} breaks the edition rules: {problems}" if problems else ""


@pytest.fixture(scope="session")
def _manager_demo_table(tmp_path_factory):
    import contextlib
    import io

    from flexfix.integration import serving

    base = tmp_path_factory.mktemp("manager-demo")
    with contextlib.redirect_stdout(io.StringIO()):
        return serving.manager_demo(
            serving.prepare_model("tiny", base / "models"), ROOT / "tests" / "fake_vllm_server.py", base / "logs"
        )


@pytest.fixture
def manager_demo_table(_manager_demo_table):
    """Notebook 06's server-manager demo against the FAKE server (``serving.manager_demo``: four servers, about 5 s
    of waiting out start-up timeouts and grace periods), run once per session for the tests that read its table:
    a copy of it each."""
    return _manager_demo_table.copy()
