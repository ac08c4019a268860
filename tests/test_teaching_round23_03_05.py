"""Round 23 (report b, a newcomer's reading of the published GPU edition), notebooks 03-05: each fix checked where
it fails before the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_teaching_round4_03_05 import _code, _markdown

ROOT = Path(__file__).resolve().parents[1]
EDITION = ROOT / "data" / "notebooks"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _md_cell(stem: str, start: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    found = [
        "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown" and start in "".join(c["source"])
    ]
    assert len(found) == 1, (start, len(found))
    return found[0]


def _vllm_source_in_02() -> list[str]:
    """The lines of vLLM 0.20.0's copy_to_persistent as the published 02 prints them (the '-' side of its diff)."""
    nb = json.loads((EDITION / "02_apply_flexfix.ipynb").read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            if "--- vLLM 0.20.0: copy_to_persistent" in text:
                block = text.split("--- vLLM 0.20.0: copy_to_persistent")[1].split("\n---")[0]
                return [line[1:].strip() for line in block.splitlines() if line.startswith("-")]
    raise AssertionError("02's diff of copy_to_persistent not found")


# A1 (03): 03 showed a two-line copy_to_persistent as vLLM 0.20.0's code, while 02 prints the real one (a try/except
# around the as_strided line, and it returns the view); and 03 called flexfix's copy_to_persistent "that sliced copy"
# where 02 says it is the rule plus checks of its inputs.


def test_a1_03_quotes_only_lines_of_the_real_vllm_function():
    cell = _md_cell("03_stride_layouts", "## The buggy side is the real vLLM function")
    real = _vllm_source_in_02()
    quoted = re.findall(r"```python\n(.*?)```", cell, re.S)
    assert quoted
    for block in quoted:
        for line in block.strip().splitlines():
            assert line.strip() in real, line
    flat = _flat(cell)
    assert "`try`/`except`" in flat and "returns the re-strided view" in flat
    assert "notebook 02 prints its whole source" in flat


def test_a1_03_says_flexfix_copy_is_the_sliced_copy_plus_checks():
    md = _flat(_markdown("03_stride_layouts"))
    assert "is that sliced copy);" not in md
    assert md.count("plus checks of its inputs") >= 2
    assert "copy_to_slice" in md


# A2 (05): 05 called notebook 02's table of the workarounds "a ranking taken from one run"; 02 says of it that it is
# a rough size of each cost, not a ranking.


def test_a2_05_does_not_call_02s_workaround_table_a_ranking():
    md = _flat(_markdown("05_cost"))
    assert "ranking taken from one run" not in md
    said = md.split("*How to read it:*")[1].split("\n")[0]
    assert "notebook 02" in said and "not a ranking, as notebook 02 says" in said
    nb02 = json.loads((EDITION / "02_apply_flexfix.ipynb").read_text())
    printed = " ".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
        for c in nb02["cells"]
        for o in c.get("outputs", [])
    )
    assert "a rough size of the cost, not a ranking" in _flat(printed)


# Review note (05): a code comment named an internal review round ("r22 D11"), meaningless to a reader.


def test_05_code_names_no_review_round():
    assert not re.search(r"\br\d+ [A-D]\d+\b", _code("05_cost"))


# B1 (05): "The evidence: the runs" stated greedy sampling, warm-up and "one command" as facts of the recorded runs;
# the records keep neither the sampling nor the warm-up, and nothing recorded says how the runs were started.


def test_b1_05_runs_paragraph_scopes_sampling_warmup_and_command_to_this_code():
    said = _flat(_md_cell("05_cost", "**The evidence: the runs.**"))
    assert "(sampled greedily:" not in said and "untimed warm-up, then timed" not in said
    assert "in one command" not in said and "in a later command" not in said
    assert "the records keep neither" in said and "this code's settings, not recorded facts" in said
    assert "whether a run was one command the records do not say" in said


# B2 (04): the H100 figure's `as_strided` + CUDA graph bullet said how the recording ran (child processes, a child
# replaced after a crash); the records keep each cell's outcome, not the processes, and no cell of that sweep crashed.


def test_b2_04_child_processes_are_this_codes_not_the_records():
    said = _flat(_md_cell("04_batch_invariance", "* **`as_strided` + CUDA graph**: the cells past"))
    assert "(run in child processes, as every cell:" not in said
    assert "this code runs every cell in child processes" in said
    assert "the records keep each cell's outcome, not the processes that ran it" in said
