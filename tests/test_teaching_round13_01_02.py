"""Teaching round 13, notebooks 01 and 02: a newcomer's reading of the published GPU edition at b84a418 (findings
B1/B2 as 02 states them, and D1, D3-D8, D10 of r0102). Each test ties a sentence or table to the data it states."""

import pandas as pd
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import glossary, results, schemas, tables
from flexfix.measure import record


def _every():
    return schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)


def _differ(rec):
    return len(set(rec.get("tokens_differ", [])) | set(rec.get("logprobs_differ", [])))


def _code(nb):
    return "\n".join(text(c) for c in cells(nb) if c["cell_type"] == "code")


def _md(nb):
    return "\n".join(text(c) for c in cells(nb) if c["cell_type"] == "markdown")


# D1: the recordings in brief, under the introduction, counted from their files.


def test_d1_the_brief_counts_each_recording_and_names_its_gpu():
    from flexfix.edition.narrative import headline
    from flexfix.edition.tables import outcome_cause as cause_tables

    said = str(headline.recorded_brief(DATA))
    kernel, kprov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    for copy, g in kernel[kernel["batch"] > 16].groupby("copy"):
        for status, n in g["status"].value_counts().items():
            assert f"`{copy}`: " in said and f"`{status}` {n} of {len(g)}" in said  # round 22: a table row
    _, cprov = cause_tables.recorded(DATA)
    assert kprov["device_name"] in said and cprov["device_name"] in said
    nb = cells("01_reproduce_ima")
    first = next(i for i, c in enumerate(nb) if "headline.recorded_brief(DATA_DIR" in text(c))
    words = next(i for i, c in enumerate(nb) if text(c).startswith("## Words first"))
    assert first < words


# D3: the paragraph on the ways without the plugin: checked, positive control, caveat.


def test_d3_without_the_plugin_reads_checked_control_caveat():
    from flexfix.edition.narrative import workarounds
    from flexfix.edition.tables.workarounds import workaround_table

    safety, sprov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    every, provs = _every()
    live = (every, {**provs[0], "device_name": "NVIDIA H200"})
    said = str(workarounds.without_plugin(workaround_table(safety, cost), "a", "b", sprov, provs, live))
    first = said.split("\n\n")[0]
    assert first.index("no request differed") < first.index("**Positive control**") < first.index("**Caveat:**")
    stock = every[every["engine"].str.contains("stock")].iloc[0]
    done = [r for r in stock["records"] if r.get("kind") == "every_request"]
    # round 22, D10: what the live control did is the verdict's, said once; here where it comes from
    if live[1]["device_name"] == sprov["device_name"]:
        assert "(the verdict above says what it did)" in first and f"`{stock['status']}`" not in first
    else:
        assert f"{_differ(done[0])} of {done[0]['requests']}" in first and f"`{stock['status']}`" in first
    assert "where there was one" not in first and first.count("(") < 12


# D4: negative control (patched) and positive control (stock, full graphs), named alike in 01 and 02.


def test_d4_controls_are_named_alike():
    md01, md02 = _md("01_reproduce_ima"), _md("02_apply_flexfix")
    assert "(the control)" not in md01 and "as the control" not in md01
    assert "negative control" in md01 and "positive control" in md01
    assert "negative control" in md02 and ("positive control" in md02 or "positive\ncontrol" in md02)
    assert "one query block: the control" not in _code("01_reproduce_ima")


# D5: ENGINE_OK is imported under a module, so the run header does not list it as a parameter.


def test_d5_the_run_header_lists_no_imported_constant():
    from flexfix.edition.tables import outcomes as outcome_tables

    code = _code("01_reproduce_ima")
    assert "import ENGINE_OK" not in code and "outcome_tables.ENGINE_OK" in code
    header = results.run_header("cpu", {"BATCH": 48, "outcome_tables": outcome_tables})
    assert "ENGINE_OK" not in header and "BATCH=48" in header


# D6: the every-request row counts only FULL-graph batches and names a batch run PIECEWISE, from the dispatch.


def test_d6_the_summary_row_counts_full_graph_batches_only():
    from flexfix.edition.tables.outcome_rows import _every_request_rows
    from flexfix.edition.tables.outcomes import every_request_dispatch, every_request_engine

    every, _ = _every()
    every = every.assign(max_num_seqs=47)  # as the live H200 engines: batch 47 pads past it
    dispatch = glossary.decode_dispatch(every_request_dispatch(every, with_engine=True))
    rows = _every_request_rows(every, "this run")
    for (_, run), row in zip(every.iterrows(), rows):
        done = [r for r in run["records"] if r.get("kind") == "every_request"]
        modes = dispatch[dispatch["engine"] == every_request_engine(run)] if "engine" in dispatch else dispatch
        mode = dict(zip(modes["decode batch"], modes["runs with"]))
        full = [r for r in done if mode[int(r["requests"])] == "FULL"]
        other = [r for r in done if mode[int(r["requests"])] != "FULL"]
        if other:
            n = sum(int(r["requests"]) for r in full)
            assert f"{sum(map(_differ, full))} of {n} requests in FULL-graph batches" in row["outcome"]
            for r in other:
                assert f"batch {r['requests']} ran {mode[int(r['requests'])]}" in row["outcome"]
        else:
            assert "FULL-graph" not in row["outcome"]
    assert any("PIECEWISE" in r["outcome"] for r in rows)


# D7: the recorded section's heading names no GPU; its printed provenance line does.


def test_d7_the_recorded_heading_names_no_gpu():
    md = _md("01_reproduce_ima")
    assert "## What the GPU recorded" not in md and "## The torch-only runs as recorded on a GPU" in md
    _, prov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    assert prov["device_name"] in tables.provenance_line(prov)


# D8: a key to the engine labels comes before the outcome line that uses them.


def test_d8_the_key_comes_before_the_outcome():
    from flexfix.edition.narrative import reproduce

    said = str(reproduce.every_request_lead(None, DATA, "this run"))
    assert said.index("*Key:*") < said.index("**The outcome first**")
    assert "`BI=`" in said and "`stock`" in said and "`patched`" in said and "notebook 02" in said


# D10: notebook 02 says where the variance model's config is: in the table under the sentence.


def test_d10_the_variance_config_is_in_the_table_below():
    md = _md("02_apply_flexfix")
    assert "its config is printed in that notebook's section" not in md and "its config is in the table below" in md
    assert "display(model_table())" in _code("02_apply_flexfix")


# B1/B2 as 02 states them: a recorded plugin line's open range is set against what the survey read.


def test_b1_b2_recorded_plugin_lines_claim_only_what_was_read():
    from packaging.version import Version

    from flexfix.edition.narrative import release_checks

    checks, _ = schemas.recorded(DATA, "vllm_release_patch_checks", schemas.PATCH_CHECKS, "cpu")
    releases, _ = schemas.recorded(DATA, "vllm_releases", schemas.RELEASES, "cpu")
    said = str(release_checks.plugin_lines(checks, releases))
    versions = sorted(releases["version"], key=Version)
    lines = [" ".join(r.get("plugin_log") or r.get("plugin_stderr") or []) for r in checks.to_dict("records")]
    if any("and earlier" in line for line in lines):
        assert f"the survey read no release before {versions[0]}" in said
    if any("and later" in line for line in lines):
        assert f"-{versions[-1]} from their wheels" in said and "the patch itself was run only on" in said
    plain = checks.assign(plugin_stderr=[["flexfix: patched"]] * len(checks))
    assert str(release_checks.plugin_lines(plain, releases)).strip() == ""
    assert "release_story.plugin_lines(release_checks, releases)" in _code("02_apply_flexfix")
    md = _md("02_apply_flexfix")
    assert "changes nothing on a vLLM that already carries the fix" not in md
    assert isinstance(checks, pd.DataFrame)
