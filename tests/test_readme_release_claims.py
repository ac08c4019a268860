"""The README's claims about vLLM releases reach only as far as the releases that were read (round-13, B1/B2)."""

from __future__ import annotations

from pathlib import Path

from flexfix.edition import results
from flexfix.integration import vllm_patch

ROOT = Path(__file__).resolve().parents[1]
README = " ".join((ROOT / "README.md").read_text().split())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_not_affected_row_starts_at_the_first_release_read():
    survey, _ = results.read_results(ROOT / "data" / "vllm_releases-cpu.json")
    unaffected = sorted(survey[survey.copy_class == "no_persistent_buffers"].version, key=_version)
    row = f"| {unaffected[0]} to {unaffected[-1]} | not affected: no persistent FlexAttention buffers | nothing |"
    assert row in README
    assert "and earlier | not affected" not in README
    assert (
        f"as in vLLM {unaffected[0]}-{unaffected[-1]}, read from their wheels"
        in vllm_patch.RELEASE_CLASSES["no_persistent_buffers"]
    )


def test_the_patch_doing_nothing_on_a_fixed_release_is_claimed_where_it_was_run():
    checks, _ = results.read_results(ROOT / "data" / "vllm_release_patch_checks-cpu.json")
    fixed = [v for v, c in zip(checks.version, checks.release_class) if c == "sliced"]
    assert fixed, "the patch checks hold no fixed release"
    said = README.split("the patch detects it by behaviour and does nothing: shown on vLLM ", 1)[1]
    assert said.startswith(" and ".join(sorted(fixed, key=_version)))
    assert "On vLLM 0.21.0 or later the patch detects" not in README


def test_the_fixed_row_ends_at_the_last_release_read_and_later_ones_are_not_claimed():
    """Round 15, B1: "0.21.0 and later | fixed" claimed releases the survey never read."""
    survey, _ = results.read_results(ROOT / "data" / "vllm_releases-cpu.json")
    fixed = sorted(survey[survey.copy_class == "sliced"].version, key=_version)
    assert f"| {fixed[0]} to {fixed[-1]} | fixed (PR #40842) | nothing |" in README
    assert "| later releases | not read here | `flexfix status` classifies the one you have installed |" in README
    assert "and later | fixed" not in README
    assert f"as in vLLM {fixed[0]}-{fixed[-1]}, read from their wheels" in vllm_patch.RELEASE_CLASSES["sliced"]
    newest = max(survey.version, key=_version)
    assert _version(fixed[-1]) == _version(newest), "the survey read a release past the last fixed one"


def test_the_readme_states_the_condition_of_a_misread_not_only_the_count():
    """Round 15, A4: "past 16 decode requests" alone is not the condition: 01 shows batches of 17 that ran PIECEWISE
    and could not misread. The README's lead and its table name the full-graph replay as well."""
    lead = README.split("## Is my vLLM affected?", 1)[0]
    table = README.split("## Is my vLLM affected?", 1)[1].split("The bug is the", 1)[0]
    for text in (lead, table):
        assert "more than 16 decode requests" in text
        assert "full CUDA graph" in text or "full graph" in text
    assert "past 16 decode requests in flight" not in README


def test_the_fixed_releases_carry_one_copy_as_the_readme_says():
    """Round 17, B2: "the later releases ... carry the same sliced copy" is backed by one SHA-256 over them."""
    survey, _ = results.read_results(ROOT / "data" / "vllm_releases-cpu.json")
    sliced = survey[survey.copy_class == "sliced"]
    assert sliced.copy_sha256.nunique() == 1
    assert (
        f"the {len(sliced)} releases of class `sliced` hold one `copy_to_persistent`, by its SHA-256 in "
        "`data/vllm_releases-cpu.json`, as notebook 02's survey prints" in README
    )
    survey_cell = (ROOT / "notebooks" / "02_apply_flexfix.ipynb").read_text()  # round 18, B1: the edition shows it
    assert "print(tables.shared_copies(releases))" in survey_cell
    from flexfix.edition import tables

    said = tables.shared_copies(survey)
    assert "affected releases share one copy_to_persistent: True" in said
    assert "fixed releases share one copy_to_persistent: True" in said
    split = survey.copy(deep=True)
    split.loc[split.index[split.verdict == "fixed"][0], "copy_sha256"] = "another"
    assert "fixed releases share one copy_to_persistent: False" in tables.shared_copies(split)


def test_the_readme_claims_on_0_20_2_only_what_its_runs_checked():
    """Round 17, A1: the README said "the fix [was] recorded on 0.20.2"; its patched runs compare request 0 only."""
    runs, prov = results.read_results(ROOT / "data" / "engine_scenarios_v0_20_2-cuda.json")
    assert prov["vllm"] == "0.20.2"
    status = dict(zip(runs.scenario, runs.status))
    sizes = {s: list(r) for s, r in zip(runs.scenario, runs.requests)}
    assert status["d"] == "illegal_memory_access" and sizes["d"] == [48]
    assert status["patched_d"] == status["patched_plugin"] == "ok"
    plugin = ", ".join(str(n) for n in sizes["patched_plugin"][:-1]) + f" and {sizes['patched_plugin'][-1]}"
    assert f"({sizes['patched_d'][0]} requests in-process; {plugin} through the plugin)" in README
    assert "the fix were recorded on 0.20.2" not in README
    assert "Those runs compare only request 0 with itself alone" in README
