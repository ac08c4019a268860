"""Teaching round 3 (issue #26), notebooks 04-06 as a reader runs them: what the text explains is shown by an
output of the same notebook, and the FAKE server is never mistaken for the real one."""

import json

import pytest

from flexfix.edition import results


@pytest.mark.notebook
def test_04_the_cpu_analogs_that_explain_the_reduction_order_are_in_the_results(executed):
    table, prov = results.read_results(executed("04_batch_invariance") / "kernel_invariance-cpu.json")
    by = {name: cells for name, cells in table.groupby("config")}
    row, page = by["analog, row softmax, eager, sliced"], by["analog, page-by-page softmax, eager, sliced"]
    assert page.bitwise_equal.all() and (page.outcome == "ok").all()  # the page-by-page order: invariant
    assert (row.outcome == "ok").all() and not row.bitwise_equal.all()  # one softmax over the row: it moves


@pytest.mark.notebook
def test_06_a_fake_run_is_saved_as_the_fake_and_exits_as_the_recorded_server(executed):
    folder = executed("06_serving")
    assert not (folder / "serve-cpu.json").exists()
    table, prov = results.read_results(folder / "serve_fake-cpu.json")
    assert prov["parameters"]["server"].startswith("FAKE")
    stock = table.set_index("scenario").loc["stock"]
    recorded = json.loads((results.results_path("data", "serve", "cuda")).read_text())["records"]
    real = next(r for r in recorded if r["scenario"] == "stock")
    assert stock["status"] == real["status"] == "illegal_memory_access"
    assert stock["server_exited_with"] == real["server_exited_with"] == 0
