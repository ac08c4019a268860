"""Round 22 (report b, a newcomer's reading of the published GPU edition), notebooks 03-05: each fix tied to the
source that generates the sentence, table or figure, and each checked where it fails before the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from test_teaching_round4_03_05 import _markdown

from flexfix.edition import tables

DATA = Path(__file__).resolve().parents[1] / "data"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _paragraph(text: str, start: str) -> str:
    """The paragraph of ``text`` (flattened) that starts with ``start``."""
    flat = _flat(text.replace("\n\n", "\x00"))
    return next(p.strip() for p in flat.split("\x00") if p.strip().startswith(start))


# A1 (04): the headline words defined *refused* (a launch vLLM or the replay guard refused), and the key that the
# paragraph said gives every outcome's name in each place had no row for it. No kernel sweep runs vLLM or the guard:
# the paragraph now defines only the outcomes of the key, says why none is refused, and a refused cell (were one
# ever recorded) gets its word defined under its own table.


def test_a1_every_headline_word_defined_has_a_row_of_the_key():
    key = tables.invariance.outcome_key()
    heads = " / ".join(key["headline word"])
    said = _paragraph(_markdown("04_batch_invariance"), "**The headlines**")
    defined = re.findall(r"\*([a-z][a-z -]+)\* \(", said.split("The word in parentheses")[0])
    assert defined and "refused" not in defined
    for word in defined:
        assert word in heads, word
    assert "no cell here is *refused*" in said
    assert "a launch the replay guard or vLLM refused" not in said


def test_a1_a_refused_cell_gets_its_word_under_its_table():
    from flexfix.edition.narrative import invariance as story

    cell = {
        "config": "flex, vllm options, graph, as_strided",
        "position": "first",
        "bitwise_equal": None,
        "max_abs_diff": None,
        "max_error_vs_reference": None,
        "detail": "",
    }
    ok = {**cell, "batch": 1, "outcome": "ok", "bitwise_equal": True, "max_abs_diff": 0.0}
    ok["max_error_vs_reference"] = 0.001
    refused = pd.DataFrame([ok, {**cell, "batch": 17, "outcome": "refused"}])
    said = str(story.kernel_sweep(refused, "t", defined_under="x"))
    assert "*refused* a launch vLLM refused" in said
    keyed = pd.DataFrame([ok, {**cell, "batch": 17, "outcome": "error"}])
    assert "The word in parentheses" not in str(story.kernel_sweep(keyed, "t", defined_under="x"))
