"""The tree is clean under the linter and formatter configured in pyproject.toml (notebooks included)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["ruff check", "ruff format"])
def test_ruff(command):
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_reads_the_notebooks():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-files", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    listed = out.stdout
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert nb.name in listed, f"ruff does not lint {nb.name}"


def test_pre_commit_hooks_run_ruff_and_strip_notebooks():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for hook in ("id: ruff-check", "id: ruff-format", "id: nbstripout"):
        assert hook in config, hook
    import tomllib

    pinned = [
        r
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
        if r.startswith("ruff==")
    ]
    assert pinned and f"rev: v{pinned[0].split('==')[1]}" in config, "pre-commit runs the ruff the tests run"
