import os
import signal
from pathlib import Path

import pytest

from flexfix.edition.run_notebooks import describe_failure, execute, parameters_for

os.environ.setdefault("MPLBACKEND", "agg")

# A background job of a non-interactive shell (`make test &`, nohup) starts with SIGINT ignored, and Python then
# leaves it ignored: the interrupt tests, which send SIGINT as a notebook kernel or a terminal does, would wait
# for their children instead (and the CLIs they start would inherit the ignored signal). Ctrl-C as usual.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds per notebook cell
ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"


def pytest_collection_modifyitems(items):
    """Everything under tests/adversarial/ belongs to the adversarial suite (marker ``adversarial``), with the
    cases elsewhere that carry the marker themselves: `pytest -m adversarial` runs the whole suite."""
    for item in items:
        if ADVERSARIAL in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.adversarial)


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Execute each notebook once (lazily, once per test session, whichever test file asks first) with CPU
    parameters and hand back its results folder."""
    done = {}

    def run(stem):
        if stem not in done:
            out = tmp_path_factory.mktemp(stem)
            nb = ROOT / "notebooks" / f"{stem}.ipynb"
            try:
                execute(nb, out / "executed", parameters_for(nb.name, "cpu", out / "results"), timeout=TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - name the notebook and the failing cell
                pytest.fail(f"{nb.name} failed at {describe_failure(exc)}")
            done[stem] = out / "results"
            import nbformat

            from flexfix.edition import publish

            executed_nb = nbformat.read(out / "executed" / nb.name, as_version=4)
            problems = publish.problems(publish.normalise(executed_nb), nb.name, allow_cpu=True)  # the edition rules
            assert not problems, problems
        return done[stem]

    return run
