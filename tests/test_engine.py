"""The engine scenarios as far as a machine without a GPU can take them."""

import pytest

from flexfix.integration import engine


def test_scenario_environments():
    assert engine.scenario_env(engine.SCENARIOS["a"]) == {
        "VLLM_BATCH_INVARIANT": "1",
        "FLEXFIX_PATCH": "0",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    }
    assert engine.scenario_env(engine.SCENARIOS["b"])["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert engine.scenario_env(engine.SCENARIOS["patched_plugin"])["FLEXFIX_PATCH"] == "1"


def test_unknown_patch_and_config_are_named(tmp_path):
    with pytest.raises(ValueError, match="'both'"):
        engine.Scenario("x", "both", True, (1,), "ok", "")
    with pytest.raises(ValueError, match="'huge'"):
        engine.write_llama(tmp_path, "huge")


def test_a_child_that_cannot_start_an_engine_reports_an_error():
    out = engine.run_scenario("c", "/nonexistent/model", timeout=300)
    assert out.status == "error" and out.exit_code == 1 and out.detail
