import pytest
from adversarial_helpers import stop_started

from flexfix.measure import children


@pytest.fixture(autouse=True)
def no_child_outlives_a_test():
    """Every test starts with new children allowed and ends with no registered child group alive."""
    children._closed.clear()  # an interrupted CLI run in-process refuses new children until the next one
    yield
    stop_started()
    assert children.live_groups() == [], "a child process group outlived its test"
    children._closed.clear()
