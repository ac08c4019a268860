import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "agg")

ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"


def pytest_collection_modifyitems(items):
    """Everything under tests/adversarial/ belongs to the adversarial suite (marker ``adversarial``), with the
    cases elsewhere that carry the marker themselves: `pytest -m adversarial` runs the whole suite."""
    for item in items:
        if ADVERSARIAL in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.adversarial)
