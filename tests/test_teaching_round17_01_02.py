"""Round 17 of the newcomer's reading of notebooks 01 and 02 (CPU execution): each sentence, table and heading fixed
here is tied to the data or the definitions it states."""

from __future__ import annotations

import json

from test_teaching_01_03 import DATA, cells, text
from test_teaching_round15_01_02 import _live, _md, _workarounds
from test_teaching_round16_01_02 import _every

from flexfix.edition import schemas
from flexfix.measure import record

# A2: 02's last takeaway names the same nearest positive control as the first section's verdict, in both branches.


def test_a2_the_takeaway_and_the_verdict_name_one_control_either_way():
    from flexfix.edition.narrative import workaround_control as wc

    table, sprov = _workarounds()
    _, cprovs = _every()
    gpu = sprov["device_name"]
    control_gpus = sorted({p["device_name"] for p in cprovs})
    # no live rerun (the CPU run, or a GPU run without engines): both name the recorded check and its GPU
    verdict, take = str(wc.verdict(table, sprov, None)), str(wc.takeaway(sprov, None, cprovs))
    assert "live rerun" not in verdict and "live rerun" not in take
    assert "recorded every-request check" in take and all(g in take for g in control_gpus)
    assert (f"not the {gpu} of these checks" in take) == (control_gpus != [gpu])
    # a live rerun on another GPU is no control for these checks: neither names it
    other = _live("some other GPU")
    assert "live rerun" not in str(wc.verdict(table, sprov, other))
    assert "live rerun" not in str(wc.takeaway(sprov, other, cprovs))
    # a live rerun on the checks' GPU with a stock engine: both name it
    same = _live(gpu)
    verdict, take = str(wc.verdict(table, sprov, same)), str(wc.takeaway(sprov, same, cprovs))
    assert f"live rerun of notebook 01 on the same tiny model and GPU ({gpu})" in verdict
    assert f"live rerun of notebook 01 on the same tiny model and GPU ({gpu})" in take
    assert "recorded every-request check" not in take
    # a live rerun on that GPU without a stock engine: the recorded check, in both
    patched_only = (same[0][~same[0]["engine"].str.contains("stock")].reset_index(drop=True), same[1])
    assert "live rerun" not in str(wc.verdict(table, sprov, patched_only))
    assert "recorded every-request check" in str(wc.takeaway(sprov, patched_only, cprovs))
    # the notebook generates it from the first section's variables, after the Takeaways heading
    nb = [text(c) for c in cells("02_apply_flexfix")]
    heading = next(i for i, s in enumerate(nb) if s.startswith("## Takeaways"))
    assert "workaround_control.takeaway(safety_prov, live, control_provs)" in nb[heading + 1]
    assert "the first section's verdict names the nearest one" not in nb[heading]


# A3: the patched lead cites only the files that hold the patched engines; the stock control's file apart.


def test_a3_the_patched_lead_cites_the_patched_engines_files_only():
    """Round 22, D12: the lead cites no recording at all now; the subsection's cell prints each file's provenance above
    the tables, and the verdict under them names where the runs come from."""
    from flexfix.edition.narrative import patched_lead

    every, provs = _every()
    said = str(patched_lead.lead(every))
    assert not any(str(p["git_commit"])[:10] in said for p in provs)
    cell = next(text(c) for c in cells("02_apply_flexfix") if "workarounds.fix_on_every_request(" in text(c))
    assert "print(tables.provenance_line(prov))" in cell
    assert "record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)" in open(patched_lead.__file__).read()


# B1: what (b) and (d) differ in and their graph mode, read from the scenario definitions.


def test_b1_b_and_d_are_described_from_their_scenario_definitions():
    from flexfix.edition.narrative import graph_path
    from flexfix.integration import engine

    said = graph_path.scenario_difference("b", "d")
    eb, ed = engine.scenario_env(engine.SCENARIOS["b"]), engine.scenario_env(engine.SCENARIOS["d"])
    for k in eb:
        assert (f"`{k}`" in said) == (eb[k] != ed[k])
    assert "neither definition sets a CUDA graph mode" in said and "both run full CUDA graphs" not in said
    assert "the patch (only `supports_batch_invariance` forced True in (b), nothing patched in (d))" in said
    # scenarios of other request counts say so
    assert "the requests" in graph_path.scenario_difference("b", "c")
    # the cross-reference points to a section above the engine's
    md = [text(c) for c in cells("01_reproduce_ima") if c["cell_type"] == "markdown"]
    heads = [i for i, s in enumerate(md) if s.startswith("## ")]
    dispatch = next(i for i in heads if md[i].startswith("## At which `K` vLLM captures its decode graphs"))
    real = next(i for i in heads if md[i].startswith("## The real vLLM 0.20.0 engine"))
    assert dispatch < real
    runs, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    para = str(graph_path.support(runs, DATA))
    assert said in para and "differ only in" not in para
    neither = runs[runs["scenario"] != "b"]
    assert "did not both fault" in str(graph_path.support(neither, DATA))


# D2: 01's every-request table has a key for each of its columns.


def test_d2_every_request_columns_have_a_key_in_01():
    from flexfix.edition import tables
    from flexfix.measure import engine_sweep

    every, _ = _every()
    columns = tables.every_request_table(engine_sweep.request_rows(every)).columns
    nb = cells("01_reproduce_ima")
    i = next(i for i, c in enumerate(nb) if "record.RECORDED_EVERY_REQUEST" in text(c) and c["cell_type"] == "code")
    key = text(nb[i + 1])
    assert nb[i + 1]["cell_type"] == "markdown" and key.startswith("*How to read the every-request table")
    for col in columns:
        assert f"* `{col}`:" in key


# D6: the one table labels the every-request engines of one file by engine, not "run k of n".


def test_d6_the_one_table_labels_sweep_engines_by_engine():
    from flexfix.edition.tables.outcome_rows import _every_request_rows

    every, _ = _every()
    rows = _every_request_rows(every, "recorded")
    where = [r["recorded_in"] for r in rows]
    assert not any(" of 2" in w or "run 1" in w for w in where)
    counts = every["source"].value_counts()
    for r, w, src in zip(rows, where, every["source"]):
        if counts[src] > 1:
            assert w == f"{src}, its {r['case'].split(':')[0]} engine"
        else:
            assert w == src
    assert len(set(where)) == len(where)
    live = every.drop(columns="source")
    assert {r["recorded_in"] for r in _every_request_rows(live, "this run (GPU)")} == {"this run (GPU)"}


# D9: 02 keys the three copy functions before the diff.


def test_d9_the_three_copy_functions_are_keyed():
    from flexfix.mechanism import persistent

    nb = [text(c) for c in cells("02_apply_flexfix")]
    diff = next(s for s in nb if s.startswith("## The fix, as a diff"))
    lines = [line for line in diff.splitlines() if line.startswith("* ")]
    assert len(lines) == 3
    assert "vLLM 0.20.0's `copy_to_persistent`" in lines[0] and "the bug" in lines[0]
    assert "`copy_to_slice`" in lines[1] and "dst[:G, :K]" in lines[1]
    assert "flexfix's `copy_to_persistent`" in lines[2] and "`apply()` installs" in lines[2]
    assert callable(persistent.copy_to_slice) and callable(persistent.copy_to_persistent)


# D10: the recorded torch-only section's heading says what it holds.


def test_d10_the_recorded_heading_says_what_it_holds():
    md = _md("01_reproduce_ima")
    assert "## What an earlier recording shows" not in md
    assert "## The torch-only runs as recorded on a GPU: `as_strided` against the sliced copy" in md
    nb = json.load(open("notebooks/01_reproduce_ima.ipynb"))
    i = next(i for i, c in enumerate(nb["cells"]) if "## The torch-only runs as" in "".join(c["source"]))
    nxt = "".join(nb["cells"][i + 1]["source"])
    assert 'schemas.recorded(DATA_DIR, "ima_kernel"' in nxt  # the section reads the torch-only recording
