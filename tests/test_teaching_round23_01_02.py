"""Round 23 reading of the published edition: notebooks 01 and 02 (findings A1, A2, B1 and C1).

Each test fails on the sources as they were before its fix."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _md(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return " ".join(" ".join("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_a1_every_request_engines_max_num_seqs_is_compared_per_count():
    """01 A1: the stock every-request engine had the `max_num_seqs` (47) of the fresh engine of 47 requests, so the
    prose may not say these engines' `max_num_seqs` is not the fresh engines'; it says how they differ: a fresh
    engine's is its own count, these keep one for all their batches."""
    md = _md("01_reproduce_ima")
    assert "is not the fresh engines'" not in md
    assert "each fresh engine of the section above had its own count as `max_num_seqs`" in md
    assert "keeps one `max_num_seqs` for all its batches" in md
