import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "agg")

# A background job of a non-interactive shell (`make test &`, nohup) starts with SIGINT ignored, and Python then
# leaves it ignored: the interrupt tests, which send SIGINT as a notebook kernel or a terminal does, would wait
# for their children instead (and the CLIs they start would inherit the ignored signal). Ctrl-C as usual.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"


def pytest_collection_modifyitems(items):
    """Everything under tests/adversarial/ belongs to the adversarial suite (marker ``adversarial``), with the
    cases elsewhere that carry the marker themselves: `pytest -m adversarial` runs the whole suite."""
    for item in items:
        if ADVERSARIAL in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.adversarial)
