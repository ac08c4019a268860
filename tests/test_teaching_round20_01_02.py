"""Round 20 reading of the published edition (fea6d72): the edition index, notebooks 01 and 02."""

from __future__ import annotations

import json
from pathlib import Path

from flexfix.edition import schemas

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _cells(name: str) -> list[str]:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return [" ".join("".join(c["source"]).split()) for c in nb["cells"]]


def _cell(name: str, start: str) -> str:
    return next(c for c in _cells(name) if start in c)


def test_a1_the_same_seeds_table_holds_the_recorded_placement_runs_where_they_ran_live():
    """A1: on a GPU the placement runs ran live; the recorded ones, listed in the brief, were left out of the count."""
    from flexfix.edition.narrative import headline
    from flexfix.edition.narrative import outcome_cause as oc
    from flexfix.edition.tables import outcome_cause as ct

    runs, prov = ct.recorded(DATA)
    kernel, kernel_prov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    said = str(oc.same_seeds(kernel, kernel_prov, runs, None, None, "cuda", (runs, prov)))
    assert "3 recordings of this edition" in said and "recorded on NVIDIA H200, flexfix commit" in said
    assert "the recorded plain `default` runs of the placement experiment, listed at the top" in said
    # recorded placements only (a CPU run): the one recording, not twice
    assert "2 recordings of this edition" in str(oc.same_seeds(kernel, kernel_prov, runs, prov, None, "cpu", None))
    assert "recorded_placements)" in _cell("01_reproduce_ima", "cause_story.same_seeds(")
    brief = str(headline.recorded_brief(DATA, "cuda", True))
    assert "shown only here: this run repeats the placement runs" not in brief


def test_a2_the_engine_log_says_the_scenario_engines_compared_request_0():
    """A2: the log said only the every-request engines compared answers; the scenario engines compared request 0."""
    from flexfix.edition.tables.outcomes import ENGINE_OK

    assert "only the every-request engines compared" not in ENGINE_OK
    assert "compared only request 0 with itself alone" in ENGINE_OK
    engines, _ = schemas.recorded(DATA, "engine_scenarios", schemas.ENGINE_SCENARIOS)
    completed = engines[engines["status"] == "ok"]
    assert all("request0_tokens_equal_alone" in r for recs in completed["records"] for r in recs)
    c = _cell("01_reproduce_ima", "What the scenarios are for:")
    assert "whose answers were not checked" not in c and "compared only request 0 with itself alone" in c


def test_a3_patched_is_defined_as_both_changes():
    """A3: *patched* was the sliced copy only, yet 01 shows patched engines with VLLM_BATCH_INVARIANT=1."""
    intro = _cells("01_reproduce_ima")[0]
    assert "with flexfix's sliced copy in place of its own" not in intro
    assert "the sliced copy in place of vLLM's own, and FlexAttention declared batch-invariant-capable" in intro
    assert "accepts `VLLM_BATCH_INVARIANT=1`" in intro


def test_a4_the_index_gives_its_cpu_sections_as_examples_from_several_notebooks():
    """A4: the index named only 06 and 07 as computing on the CPU by design."""
    from flexfix.edition import publish

    text = " ".join(publish.readme([], False).split())
    assert "(06's FAKE server, 07's guard steps)" not in text
    assert "for example 01's count of the cells a replay misreads, 04's CPU analogs" in text
    assert "wherever in the line it sits" not in text  # D1: the evidence rule in plain words


def test_b1_the_0_20_2_install_method_is_not_claimed():
    """B1: "from an offline bundle of its packages" is in no output of the recording."""
    c = _cell("02_apply_flexfix", "### The same on vLLM 0.20.2")
    assert "offline bundle" not in c and "how 0.20.2 was installed is not part of the recording" in c


def test_b2_the_sanitizer_recording_shows_its_launch_and_not_its_allocator_setting():
    """B2: the launch mode and the allocator setting were claimed, neither shown."""
    from flexfix.edition.tables import sanitizer_view

    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    view = sanitizer_view(sanitizer)
    assert list(view["launch"]) == list(sanitizer["launch"]) == ["frozen", "frozen"]
    c = _cell("01_reproduce_ima", "`flexfix repro --sanitizer` runs")
    assert "the table's `launch` column" in c and "not a value read back from the recording" in c


def test_b3_02s_checks_are_not_said_to_agree_on_the_cause():
    """B3: checks without a positive control were said to "agree" with the full-graph path as the cause."""
    from flexfix.edition.narrative import graph_path
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    said = str(graph_path.support(engines, DATA))
    assert " agree:" not in said
    assert "no positive control in their own run" in said and "do not show it" in said


def test_d6_one_label_per_copy_and_copy_to_persistent_names_only_vllms_in_01():
    """D6: "slice (fix)" beside "sliced (fix)", and 01's code bound flexfix's fix to vLLM's buggy function's name."""
    from flexfix.mechanism import smallest

    code = "\n".join(c for c in _cells("01_reproduce_ima") if "import" in c or "copies =" in c)
    assert "slice (fix)" not in code and "as_strided (0.20.0)" not in code
    assert "copy_to_persistent as copy_sliced" in code and ", copy_to_persistent}" not in code
    seen = smallest.reads("cpu", k_capture=32, k_replay=48)
    assert {"as_strided (vLLM 0.20.0)", "sliced (fix)"} <= set(seen.index.get_level_values(0))


def test_d9_the_misread_tables_per_pad_column_says_it_is_not_summed():
    """D9: `front_bytes_read` stood among the sums over the seeds, though it is the same for every pad."""
    from flexfix.edition.tables import outcome_cause as ct
    from flexfix.measure import outcome_cause

    columns = ct.misread_summary(outcome_cause.reads_table([0], 48)).columns
    assert "front_bytes_read" not in columns and "front_bytes_per_pad" in columns
    key = _cell("01_reproduce_ima", "One row per replay;")
    assert "columns up to `missed` are sums over `SEEDS`" in key and "(not a sum:" in key


def test_d12_02s_first_table_has_its_key_right_under_it():
    """D12: the key to the ways-around table came after the verdict, two paragraphs and a second table."""
    cells = _cells("02_apply_flexfix")
    table = next(i for i, c in enumerate(cells) if "display(ways)" in c)
    assert cells[table + 1].startswith("*How to read it:* `differed` counts")
    assert "workaround_control.verdict(" in cells[table + 2]
    assert "The table under the sentence" not in cells[table + 1]


def test_d4_d5_what_the_graph_freezes_and_the_crash_rule_are_not_restated_after_the_code():
    """D4: what a graph freezes was told four times; D5: the crash-or-wrong rule again under the error figure."""
    md = "\n".join(_cells("01_reproduce_ima"))
    assert md.count("What a captured graph freezes") == 1 and "What the graph freezes, and what it does not" not in md
    toy = _cell("01_reproduce_ima", "**So the bug needs two things at once.**")
    assert "replays each kernel with the arguments it had at capture" not in toy and "K_replay != K_capture" in toy
    assert "A captured kernel keeps the pointer and the strides" not in _cell("01_reproduce_ima", "## Takeaways")
    caption = _cell("01_reproduce_ima", "*How to read it:* a point is one step's largest error")
    assert "whether the memory in front of the KV cache they point at" not in caption


def test_d13_02_says_why_request_0s_tokens_matter_once():
    """D13: "a stream that repeats one token would match itself trivially" five times; a takeaway said a thing twice."""
    from flexfix.edition.narrative import workarounds
    from flexfix.measure import record

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    patched = engines[engines["scenario"].astype(str).str.startswith("patched")]
    first, again = str(workarounds.patched_batches(patched)), str(workarounds.patched_batches(patched, again=True))
    assert first.count("would match itself trivially") == 1 and "match itself trivially" not in again
    # round 22, D11: the 0.20.2 lines point back to the one place that says why
    assert "never misreads (notebook 01): its match says" not in again and "under the 0.20.0 runs above" in again
    assert "again=True)" in _cell("02_apply_flexfix", "workarounds.patched_batches(tables.select_scenarios(v0_20_2")
    takeaways = _cell("02_apply_flexfix", "## Takeaways")
    assert "covers every request of the batches checked: the patched engine" not in takeaways
