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
