"""Every relative link of the README and of tests/README.md reaches a file that exists, and its #anchor a heading of
that file (round 15, D8: the suite's history moved from the README to tests/README.md, linked from both sections)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", ["README.md", "tests/README.md"])
def test_relative_links_reach_a_file_and_a_heading(page):
    source = ROOT / page
    checked = 0
    for target in LINK.findall(source.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        path = (source.parent / file_part).resolve() if file_part else source
        assert path.exists(), f"{page} links to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page} links to {target}: {path.name} has no heading #{anchor}"
        checked += 1
    assert checked, f"{page} has no relative link"


def test_the_readme_keeps_the_suites_history_in_tests_readme():
    readme = (ROOT / "README.md").read_text()
    assert "tests/README.md#how-long-the-suite-takes" in readme
    assert "tests/README.md#the-adversarial-suite" in readme
    assert "Round 4 (2026-12-01)" not in readme and "Round one, against de905d6" not in readme
    history = (ROOT / "tests" / "README.md").read_text()
    assert "Round 4 (2026-12-01)" in history and "Round one, against de905d6" in history
