"""Notebooks 06 and 07 as a newcomer read them (review r0607, round 16): one test per finding fixed, each tying the
sentence to the data, code or heading order it states."""

import inspect
import re

import pandas as pd
import pytest
from test_teaching_round4_06_07 import DATA, _nb

from flexfix.edition import tables
from flexfix.edition.narrative import guard_information, guard_result, guard_servers, serving_manager
from flexfix.edition.narrative import serving as serving_story
from flexfix.edition.tables import guard as guard_tables
from flexfix.integration.serving import demo as serving_demo
from flexfix.integration.serving.recording import recorded_run
from flexfix.measure.engine_sweep import PROMPT_LENGTHS


def _flat(text) -> str:
    return re.sub(r"\s+", " ", str(text))


def _cells(name: str) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"])) for c in _nb(name)["cells"]]


def _headings(name: str) -> list[tuple[int, str]]:
    """(cell index, heading text) of every markdown heading, in notebook order."""
    out = []
    for i, (kind, src) in enumerate(_cells(name)):
        if kind == "markdown":
            out += [(i, m.group(1).strip()) for m in re.finditer(r"^#{1,4} (.+)$", src, re.M)]
    return out


def _heading_at(name: str, ref: str) -> int:
    """The cell index of the heading ``ref`` names (a heading, or the start of one, as *Planted bugs of the class*)."""
    found = [i for i, h in _headings(name) if h == ref or h.startswith(ref + ",")]
    assert len(found) == 1, f"{name}: *{ref}* names no heading (or several): {[h for _, h in _headings(name)]}"
    return found[0]


# references in italics to other documents: not this notebook's headings
_ELSEWHERE = re.compile(r"(notebook\s+0\d[^*.;]{0,40}|README,)\s*$")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\n]+(?:\n[^*\n]+)?)\*(?![*\w])")
_NOT_A_SECTION = {"What to see:", "and"}


def _italic_refs(name: str, text: str, before: str = "") -> list[str]:
    refs, end, elsewhere = [], -1, False
    for m in _ITALIC.finditer(text):
        ref = _flat(m.group(1))
        chained = elsewhere and text[end : m.start()].strip() == "and"  # "notebook 01, *A* and *B*": both 01's
        elsewhere = chained or bool(_ELSEWHERE.search(before + text[max(0, m.start() - 60) : m.start()]))
        end = m.end()
        if ref not in _NOT_A_SECTION and not elsewhere:
            refs.append(ref)
    return refs


# D1: every cross-reference of 06 and 07 against the heading order


@pytest.mark.parametrize("name", ["06_serving", "07_replay_guard"])
def test_d1_every_section_the_prose_names_in_italics_is_a_heading_of_the_notebook(name):
    for kind, src in _cells(name):
        if kind == "markdown":
            for ref in _italic_refs(name, src):
                _heading_at(name, ref)


@pytest.mark.parametrize("name", ["06_serving", "07_replay_guard"])
def test_d1_above_below_and_after_claims_hold_in_the_heading_order(name):
    for i, (kind, src) in enumerate(_cells(name)):
        if kind != "markdown":
            continue
        text = _flat(src)
        for ref in re.findall(r"\*([^*]+)\*, above", text):
            assert _heading_at(name, ref) < i, (name, ref)
        for ref in re.findall(r"\*([^*]+)\*, below", text):
            assert _heading_at(name, ref) > i, (name, ref)
        for a, b in re.findall(r"\*([^*]+)\*, after \*([^*]+)\*", text):
            assert _heading_at(name, b) < _heading_at(name, a), (name, a, b)


def test_06_d1_the_evidence_is_right_after_the_scenarios_not_the_model_directory():
    cells = _cells("06_serving")
    headings = [h for _, h in _headings("06_serving") if not h.startswith(("06 ", "#"))]
    top = [h for h in headings if h in ("The scenarios", "The recorded GPU run") or h.startswith("A model directory")]
    assert top[-2:] == ["The scenarios", "The recorded GPU run"]  # the recorded run comes right after the scenarios
    everything = _flat("\n".join(src for _, src in cells))
    assert "right after the model directory" not in everything and "the recorded run at the end" not in everything
    assert "*The recorded GPU run*, after *The scenarios*" in _flat(cells[0][1])
    fake = _heading_at("06_serving", "Harness self-test")
    assert "(*The recorded GPU run*, above)" in _flat(cells[fake][1])
    assert _heading_at("06_serving", "The recorded GPU run") < fake
    # the generated leads say the same order
    lead = _flat(serving_story.result_lead(DATA))
    run = {"fake_server": "../tests/fake_vllm_server.py"}
    said = _flat(serving_story.what_runs("cpu", run, DATA))
    for text in (lead, said):
        assert "after the model directory" not in text and "*The recorded GPU run*, after *The scenarios*" in text
        for ref in _italic_refs("06_serving", text):
            if ref != "Serving":  # notebook 07's, named as such
                _heading_at("06_serving", ref)


def test_07_d1_the_result_lead_names_only_sections_of_notebook_07():
    lead = str(guard_result.result(guard_tables.recorded(DATA)))
    refs = re.findall(r"\(\*([^*]+)\*\)", lead)  # each line ends naming its section: (*Section*)
    assert len(refs) >= 5
    for ref in refs:
        _heading_at("07_replay_guard", ref)


# D5


def test_07_d5_which_steps_is_pointed_to_as_a_paragraph_of_its_section_not_as_a_heading():
    cells = _cells("07_replay_guard")
    phrase = "Which steps replay a FULL graph at all"
    assert all(phrase != h for _, h in _headings("07_replay_guard"))
    words = next(i for i, (_, s) in enumerate(cells) if "Words of these tables" in s)
    assert f"*{phrase}*" not in cells[words][1]
    said = _flat(cells[words][1])
    # round 23 (07 D10): the pointer names the output paragraph that holds the capture list, by its bold lead
    lead = "The capture sizes the recorded engines ran with"
    section = re.search(r"in \*([^*]+)\*, the output paragraph \*\*" + lead + r"\*\*", said).group(1)
    start = _heading_at("07_replay_guard", section)
    paragraph = next(i for i, (k, s) in enumerate(cells) if k == "code" and "guard_serving.capture_sizes(" in s)
    later = [i for i, _ in _headings("07_replay_guard") if i > start]
    assert start <= paragraph < later[0]  # the cell whose output holds the paragraph sits inside the section named


# B1


def test_07_b1_the_requests_own_steps_are_an_inference_with_the_arithmetic_from_the_recording():
    mutants, prov = guard_tables.recorded(DATA)["guard026_mutants"]
    said = _flat(guard_information.mutant_settings(mutants, tables.recorded_where([prov])))
    assert "The alarm stands for the requests' own steps too" not in said
    assert "is an inference, not a recorded alarm" in said
    lo, hi = PROMPT_LENGTHS["tiny"]
    tokens = int(max(mutants["max_tokens"]))
    width = int(re.search(r"named at capture is (\d+) blocks wide", said).group(1))
    size = int(re.search(r"KV blocks of (\d+) tokens", said).group(1))
    assert f"rows would be {-(-lo // size)} to {-(-(hi + tokens) // size)} entries wide" in said
    assert f"never the capture's {width}" in said and f"at most {hi + tokens}" in said


def test_07_b1_the_inference_is_said_only_where_the_lengths_support_it():
    assert "is an inference" in guard_information.own_steps((64, 16), (20, 200), 32)
    reached = guard_information.own_steps((8, 16), (20, 200), 32)  # rows of 2 to 15 entries: 8 is among them
    assert "is an inference" not in reached and "is not recorded" in reached and "reaches the capture's 8" in reached
    assert "is an inference" in guard_information.own_steps((1, 16), (20, 200), 32)  # all wider than at capture


# D7


def test_07_d7_the_result_lead_counts_the_0_20_2_engines_from_their_recording():
    recorded = guard_tables.recorded(DATA)
    lead = _flat(guard_result.result(recorded))
    later, later_prov = recorded["guard_v0_20_2"]
    engines = guard_tables.engine_guard(later)
    errors = engines[engines["guard"] == "error"]
    refused = int((errors["outcome"] == "guard_refused").sum())
    equal = guard_tables.eager_vs_reference(later.query("guard == 'eager'"), recorded["guard_patched_reference"][0])
    version = later_prov["vllm"]
    assert f"on vLLM {version} it stopped {refused} of {len(errors)} engine" in lead
    assert f"and {int(equal['bitwise equal'].sum())} of {int(equal['of'].sum())} on vLLM {version}" in lead
    assert "patched engine on vLLM 0.20.0" in lead
    without = {k: v for k, v in recorded.items() if k != "guard_v0_20_2"}
    assert version not in _flat(guard_result.result(without))  # not recorded: nothing said of it


# D10


def test_07_d10_the_serving_opening_names_stock_under_the_guard_and_patched_without_it_from_the_data():
    served, _ = guard_tables.served(DATA)
    said = _flat(guard_servers.servers(served))
    assert f"**The servers**: {len(served)} `vllm serve` servers" in said
    stock = served[served["FLEXFIX_PATCH"].astype(str) == "0"]
    for _, r in stock.iterrows():
        assert f"`{r['scenario']}`: stock under the guard (`FLEXFIX_GUARD={r['FLEXFIX_GUARD']}`)" in said
    patched = served[served["FLEXFIX_PATCH"].astype(str) == "1"]
    assert "patched without the guard" in said and all(f"`{n}`" in said for n in patched["scenario"])
    assert "the same batches planned for each" in said
    other = served.copy()
    other.at[other.index[0], "requests"] = [16]
    assert "not all planned the same batches" in _flat(guard_servers.servers(other))
    cells = _cells("07_replay_guard")
    serving = _heading_at("07_replay_guard", "Serving")
    assert "`vllm serve` on stock vLLM 0.20.0 with the plugin's guard" not in cells[serving][1]
    assert "guard_servers.servers(served)" in cells[serving + 1][1]


# D3, D2


def test_06_d3_the_stage_is_defined_before_the_result_bullets():
    lead = str(serving_story.result_lead(DATA))
    assert lead.index("a **stage** is one of these three") < lead.index("* **")


def test_06_d2_the_result_lead_says_why_the_recorded_servers_ran_different_models_from_the_data():
    table = recorded_run(DATA)[0]
    lead = _flat(serving_story.result_lead(DATA))
    if table["model"].nunique() > 1:
        for model, rows in table.groupby("model"):
            names = " and ".join(f"`{n}`" for n in rows["scenario"])
            assert f"{names} the {model} model, {serving_story.MODEL_REASONS[model]}" in lead
    one = pd.DataFrame({"scenario": ["a", "b"], "model": ["tiny", "tiny"]})
    assert serving_story.why_models(one) == ""
    two = pd.DataFrame({"scenario": ["a", "b"], "model": ["tiny", "variance"]})
    assert "they ran different models" in serving_story.why_models(two)


# D8


def _demo(imports, before):
    demo = pd.DataFrame(
        [
            {"case": "healthy", "seconds importing openai": imports[0], "seconds of the completion": 0.9},
            {"case": "ignore_sigterm", "seconds importing openai": imports[1], "seconds of the completion": 0.15},
        ]
    )
    demo.attrs["openai imported before"] = before
    return _flat(serving_manager.manager_times(demo))


def test_06_d8_the_sentence_says_openai_was_imported_before_the_first_case_only_where_it_was():
    said = "was already loaded in this kernel when the demo began (the demo found it in `sys.modules`"
    assert said in _demo((0.0, 0.0), True)
    assert "which earlier import loaded it is not recorded" in _demo((0.0, 0.0), True)  # round 18, B1
    assert "by an earlier cell" not in _demo((0.0, 0.0), True)
    assert "already loaded" not in _demo((0.0, 0.0), False)
    assert "already loaded" not in _demo((0.9, 0.0), True)  # the first case paid the import
    source = inspect.getsource(serving_demo.manager_demo)
    assert source.index('"openai" in sys.modules') < source.index("for case, extra, timeout in cases")
    glossary = _flat(next(s for _, s in _cells("06_serving") if "`seconds importing openai` is" in s))
    assert "the first case's import is the notebook's first" not in glossary
    assert "says whether it was imported before the first case" in glossary


# D9


def test_07_d9_batch_descriptor_is_defined_with_fields_vllm_has():
    cells = _cells("07_replay_guard")
    said = _flat(next(s for _, s in cells if "An engine's name lists its settings" in s))  # r22 D10: before it
    assert "`BatchDescriptor`" in said and "is vLLM's key for a captured graph" in said
    try:
        from vllm.forward_context import BatchDescriptor
    except Exception:  # noqa: BLE001 - vLLM absent: the sentence is still checked above
        return
    fields = set(BatchDescriptor.__dataclass_fields__)
    for field in re.findall(r"`(num_tokens|num_reqs|uniform)`", said):
        assert field in fields


def test_07_the_servers_line_refuses_a_server_that_planned_no_batch():
    """A recording whose `requests` list was emptied must not be told as "not all planned the same batches"."""
    import pandas as pd
    import pytest

    from flexfix.edition.checks import DataError
    from flexfix.edition.narrative import guard_servers

    rows = pd.DataFrame(
        {
            "scenario": ["guard_error", "patched_tiny"],
            "model": ["tiny", "tiny"],
            "FLEXFIX_PATCH": ["0", "1"],
            "FLEXFIX_GUARD": ["error", "0"],
            "requests": [[48, 128], [48, 128]],
        }
    )
    assert "the same batches planned for each (48 and 128 requests at once)" in guard_servers.servers(rows)
    rows.at[1, "requests"] = []
    with pytest.raises(DataError, match="patched_tiny planned no batch"):
        guard_servers.servers(rows)
