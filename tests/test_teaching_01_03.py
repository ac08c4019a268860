"""Teaching round 3 (issue #26), notebooks 01-03: the smallest reproduction, the sentences that answer the review,
and the notebooks' order. Each test states what a reader is told and checks it against the code or the data."""

import json
from pathlib import Path

import pandas as pd
import pytest

from flexfix.edition import glossary, results, schemas, tables
from flexfix.edition.narrative import reproduce, workarounds
from flexfix.edition.tables.workarounds import workaround_table
from flexfix.measure import engine_sweep, record
from flexfix.mechanism import paged, smallest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def cells(stem):
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def text(cell):
    return "".join(cell["source"])


# The smallest reproduction (notebook 01's first section).


def test_the_smallest_reproduction_misreads_every_row_after_the_first_and_the_slice_none():
    seen = smallest.reads("cpu", k_capture=32, k_replay=48)
    buggy, fixed = seen.loc["as_strided (vLLM 0.20.0)"], seen.loc["sliced (fix)"]  # round 20, D6: one label each
    assert buggy.loc[0, "its own entries"] and not buggy.loc[[1, 2], "its own entries"].any()
    assert fixed["its own entries"].all()
    assert buggy.loc[1, "what they hold"] == "row 0: 32-47, row 1: 0-31"  # the capture's stride 32, this step's 48
    # captured at K=32, the kernel reads 48 entries per row: the count is data (kv_num_blocks), not the frozen view
    assert (seen["entries read"] == 48).all()


def test_the_smallest_reproduction_is_shown_as_code_and_refuses_what_it_cannot_draw():
    code = smallest.shown(smallest.as_strided_copy, smallest.slice_copy, smallest.kernel, smallest.replay_cuda_graph)
    assert "buffer.as_strided(src.shape, src.stride())" in code and "torch.cuda.CUDAGraph()" in code
    assert code._repr_markdown_().startswith("```python\n")
    with pytest.raises(ValueError, match="K_capture=48 < K_replay=32"):
        smallest.reads("cpu", k_capture=48, k_replay=32)
    with pytest.raises(ValueError, match="device must be"):
        smallest.reads("gpu")


# vLLM's own lines behind the sentences of notebook 01 (review B1, B2, and where the copy is called).


def test_vllms_own_lines_back_the_capture_batch_the_padding_and_the_call_sites():
    assert "seq_lens = max_query_len" in glossary.dummy_decode_source()
    padding = glossary.padding_source()
    assert "= end" in padding and "for bs in range(start, end)" in padding
    calls = glossary.copy_call_sites()
    kv = calls[calls.code.str.contains("persistent_kv_indices")]
    assert list(kv.function) == ["FlexAttentionMetadata._build_block_mask_direct"]
    built = calls[(calls.calls == "_build_block_mask_direct")]
    assert "FlexAttentionMetadataBuilder.build" in set(built.function)


# What a user of 0.20.x can do without the plugin (notebook 02's first section).


def _workarounds():
    safety, p1 = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, p2 = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    return safety, cost


def test_the_workaround_table_and_sentence_follow_the_recorded_runs():
    safety, cost = _workarounds()
    table = workaround_table(safety, cost)
    speed = engine_sweep.throughput_rows(cost)
    ref = speed[speed.patched].set_index("requests").tokens_per_second
    for r in speed[~speed.patched].itertuples():
        way = table[table["vLLM setting"].str.contains("16" if "max_num_seqs 16" in r.engine else r.graphs.upper()
                                                     if r.graphs == "piecewise" else "enforce_eager")]  # fmt: skip
        assert way[f"vs patched, {r.requests} (variance model)"].item() == round(
            r.tokens_per_second / ref[r.requests], 2
        )
    said = workarounds.without_plugin(table, "here", "there")
    assert "**Without the plugin, no request differed in 3 settings:**" in said
    assert "0 of 48 and 0 of 128 requests differed" in said
    for way, row in table.iterrows():
        if not row["vLLM setting"].startswith("FLEXFIX_PATCH"):
            v48, v128 = row["vs patched, 48 (variance model)"], row["vs patched, 128 (variance model)"]
            assert f"{way} ({v48:.2f} at 48 requests and {v128:.2f}" in said
    # each column names its model (issue #26: checks from the tiny model, costs from the variance model)
    assert all(c.endswith(("(tiny model)", "(variance model)")) for c in table.columns if c != "vLLM setting")
    assert "from the least to the most expensive" not in said and "rank nothing" in said


def test_a_workaround_whose_requests_differed_is_not_called_correct():
    safety, cost = _workarounds()
    broken = safety.copy()
    broken["records"] = [
        [dict(r, tokens_differ=[3, 20]) if r.get("kind") == "every_request" else r for r in recs]
        if "eager" in engine
        else recs
        for engine, recs in zip(broken.engine, broken.records)
    ]
    said = workarounds.without_plugin(workaround_table(broken, cost), "here", "there")
    assert "**no CUDA graphs did not**: 2 of 48 and 2 of 128 requests differed" in said
    assert "no request differed in 2 settings" in said


# The review's findings in the sentences of 01 and 02.


def test_the_release_survey_says_what_it_read():
    releases, prov = schemas.recorded(DATA, "vllm_releases", schemas.RELEASES, "cpu")
    said = workarounds.releases_surveyed(releases, prov)
    first, last = releases.version.iloc[0], releases.version.iloc[-1]
    assert f"the {len(releases)} final releases of vLLM on PyPI from {first} to {last}" in said
    assert prov["parameters"]["older_not_examined"] in said


def test_faces_compare_the_same_seeds_and_do_not_compare_the_cpu_analog_with_a_gpu():
    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    wrong = recorded.assign(
        status=["wrong_result" if c == "as_strided" else s for c, s in zip(recorded["copy"], recorded.status)]
    )
    said = reproduce.faces(wrong, "this run", recorded, "the recorded run", "cuda")
    n = int((recorded["copy"] == "as_strided").sum())
    assert f"**{n} of {n} gave another outcome in this run than in the recorded run**" in said
    assert "a silently wrong result here, an illegal memory access there" in said
    assert "the same outcome in both runs" in reproduce.faces(
        recorded, "this run", recorded, "the recorded run", "cuda"
    )
    assert "This run is the CPU analog" in reproduce.faces(None, "this run", recorded, "the recorded run", "cpu")
    # the rule the review found unsupported (A1) is no longer stated
    assert "depends on what the" not in reproduce.kernel_outcomes(recorded, "x")


def test_the_engine_that_died_is_said_to_die_before_a_batch_not_at_it():
    every, _ = results.recorded_all(DATA, record.RECORDED_EVERY_REQUEST)
    rows = tables.every_request_table(engine_sweep.request_rows(every))
    said = reproduce.every_request(every, rows)
    assert "before it completed the batch of 32" in said and "access at 32 requests" not in said
    engines, _ = results.recorded_all(DATA, record.RECORDED_ENGINE_TABLES)
    said = str(reproduce.crash_threshold(tables.threshold_table(engines)))  # r22 D6: said once, in the short answer
    assert said.startswith("**The short answer:**") and "first faulted at 48 requests" in said.split("\n\n")[0]


def test_the_one_table_holds_this_runs_torch_only_runs():
    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    mine = recorded.assign(launch="frozen")
    table = tables.outcome_table(recorded, sanitizer, engines, this_run=mine, this_run_source="this run (cpu)")
    ours = table[table["from"] == "this run (cpu)"]
    assert set(ours.experiment) == {"torch-only, frozen launch"}
    # one row per copy, batch and outcome, with its count of runs (r0102 D13: a row per run made the table long)
    assert ours["case"].str.extract(r": (\d+) of")[0].astype(int).sum() == len(mine) > len(ours)
    alone = tables.outcome_table(recorded, sanitizer, engines)
    assert alone.iloc[0]["case"] == "not given to this table"


# The notebooks' order (the committed sources).


def test_notebook_01_opens_with_the_mechanism_and_marks_where_the_outcome_cause_goes():
    nb = cells("01_reproduce_ima")
    sources = [text(c) for c in nb]
    # the words come first (a newcomer met query block, G, K and W_max before their definitions), then the bug
    # (r13 D1: the recordings in brief, right under the introduction, come before the words)
    code_after_validation = [s for s in sources[3:] if not s.startswith(("#", "*", "<", "headline.")) and "(" in s]
    assert code_after_validation[0].startswith("glossary.markdown(")
    assert code_after_validation[1].startswith("smallest.shown(")
    order = [next(i for i, s in enumerate(sources) if key in s) for key in (
        "## Words first", "## The bug in a few lines", "plots.read_windows(windows)",
        "**So the bug needs two things at once.**", "layouts.metadata_strides(", "record.kernel_outcomes(",
        "## What compute-sanitizer sees",
        "## Crash or wrong answer: what decides", "## The real vLLM 0.20.0 engine",
    )]  # fmt: skip
    assert order == sorted(order), order
    assert not any("<!-- outcome-cause -->" in s for s in sources)  # the section replaced its marker
    assert "what the misread cells hold" not in "".join(sources)
    # issue #26: the first screen states the mechanism, without the series' symbols or a note about the tooling
    first = sources[0].split("**What you will learn**")[0]
    assert "**The bug in one paragraph.**" in first and "written by code" not in sources[0]
    assert not any(f"`{sym}`" in first for sym in ("G", "K", "W_max", "G_max"))
    # the smallest reproduction's kernel computes its addresses; only the 0.20.0 copy calls as_strided
    assert "as_strided(" not in smallest.source(smallest.kernel)
    assert "g * row_stride" in smallest.source(smallest.kernel)


def test_notebook_03_captures_where_vllm_and_07_capture():
    """A newcomer saw two capture-time layouts (03 captured at K = 32, 07 and vLLM at 16): 03's capture is vLLM's,
    drawn at replay entry by entry, and the one wider capture (for the narrower replay) says why it is not vLLM's."""
    sources = [text(c) for c in cells("03_stride_layouts")]
    assert "Notebook 01 showed" in sources[0]
    params3 = smallest_params("03_stride_layouts")
    params7 = smallest_params("07_replay_guard")
    assert params3["K_CAPTURE"] == params7["K_CAPTURE"] == glossary.k_at_capture()
    assert params3["K_REPLAY"] == params7["K_REPLAY"]
    assert params3["K_REPLAY_SHORT"] < params3["K_CAPTURE_LONG"]  # a narrower replay needs a wider capture
    assert any("plots.read_windows(grow)" in s for s in sources)
    assert any("k_capture=K_CAPTURE_LONG, k_replay=K_REPLAY_SHORT" in s for s in sources)
    why = next(s for s in sources if "## Replay step with a smaller `K`" in s)
    assert "never replayed narrower" in why and "`K_CAPTURE_LONG`" in why
    assert any("glossary.k_at_capture()" in s for s in sources)  # the reader sees vLLM's capture width printed


def smallest_params(stem):
    """A notebook's parameters cell, run: name -> value."""
    source = next(text(c) for c in cells(stem) if "parameters" in c.get("metadata", {}).get("tags", []))
    values: dict = {}
    exec(source, values)  # noqa: S102 - the notebook's own parameters
    return {k: v for k, v in values.items() if k.isupper()}


def test_the_workaround_table_refuses_an_engine_it_cannot_name():
    safety, cost = _workarounds()
    odd = cost.assign(graphs=["full", "eager", "full", "full"], max_num_seqs=[8, 0, 16, 0])
    with pytest.raises(ValueError, match="no way around the bug is known for graphs=full, max_num_seqs=8"):
        workaround_table(safety, odd)
    assert isinstance(workaround_table(safety, cost), pd.DataFrame)


# Teaching round 3 (issue #26): notebooks 01-03 as a newcomer reads them.


def test_a_silently_wrong_replay_inside_a_run_that_failed_is_said():
    """A2: a CPU run with index errors that also answered one replay wrong must not hide that answer."""
    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    runs = recorded[recorded["copy"] == "as_strided"].head(2).copy()
    ok = {"outcome": "ok", "max_error": 1e-3}
    runs["records"] = [[ok, {"outcome": "index_error"}, {"outcome": "wrong_result", "max_error": 2.9}], [ok]]
    runs["status"] = ["index_error", "index_error"]
    said = reproduce.kernel_outcomes(runs, "x")
    assert "1 of these runs also answered a later replay silently wrong" in said
    runs["records"] = [[ok, {"outcome": "index_error"}], [ok]]
    assert "answered a later replay silently wrong" not in reproduce.kernel_outcomes(runs, "x")


def test_engine_tables_tell_repeats_apart_and_carry_no_expectations():
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    summary = tables.engine_summary(engines)
    assert not {"expected", "as_expected"} & set(summary.columns)
    keyed = summary.reset_index()[["scenario", "recorded_in"]]
    assert not keyed.duplicated().any(), keyed[keyed.duplicated(keep=False)]
    assert "unpatched" not in summary.loc["patched_d", "what"]
    one = tables.outcome_table(engines.head(0), engines.head(0), engines)
    assert not one[["case", "recorded_in"]].duplicated().any()
    threshold = tables.threshold_table(engines)
    fresh = threshold[threshold["how"] == "fresh engine"]
    assert (fresh["max_num_seqs"] == fresh["requests"].clip(lower=16)).all()


def test_k_is_shown_as_computed_and_kv_indices_are_checked_against_vllm(monkeypatch):
    shape = paged.PagedShape(max_num_seqs=128, max_model_len=1024, num_pages=8192)
    step = paged.make_step(shape, [200] + [100] * 47, seed=0)
    assert glossary.width_explained(step).startswith("K = 16 * cdiv(max_seq_len, 16) = 16 * cdiv(200, 16) = 16 * 13")
    assert glossary.same_as_vllm(step, shape.num_pages).endswith(": yes")
    # the check can fail: kv_indices that are not vLLM's read NO
    real = paged.build_kv_indices
    monkeypatch.setattr(paged, "build_kv_indices", lambda st: (real(st)[0].flip(1), real(st)[1]))
    assert glossary.same_as_vllm(step, shape.num_pages).endswith(": NO")


def test_the_patch_cycle_is_said_as_what_it_means():
    checks = pd.DataFrame(
        [
            {"check": "before: copy keeps the destination's strides", "value": False},
            {"check": "apply() patched", "value": True},
            {"check": "revert() reverted", "value": False},
        ]
    )
    said = workarounds.patch_cycle(checks)
    assert said.startswith("**1 of 3 checks failed:** **`revert()` undid nothing**")  # meaning first
    assert "In order: before `apply()` the installed copy gave the view the source's strides" in said
    assert "**`revert()` undid nothing**" in said and "True" not in said and "False" not in said


# Teaching round 4: a newcomer's read of the published notebook 01.


def test_the_one_table_holds_the_every_request_engines_and_the_placement_runs():
    """A1: the every-request engines (the lowest fault) and the placement runs are rows of the one table, and
    every row says which recording it comes from."""
    from flexfix.edition.tables import outcome_cause as cause_tables

    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    every, _ = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    placed, prov = cause_tables.recorded(DATA)
    table = tables.outcome_table(recorded, sanitizer, engines, every=every, placements=placed, placements_source="x")
    stock = table[table["experiment"] == "vLLM 0.20.0 engine, every request"]
    assert stock.iloc[0]["case"].endswith("17, 32, 47 planned, 17 completed")
    assert (stock["case"].str.contains("stock") | stock["case"].str.contains("patched")).all()
    rows = table[table["experiment"] == "torch-only, caches placed by hand"]
    assert rows["case"].str.extract(r": (\d+) of")[0].astype(int).sum() == len(placed)
    assert "illegal_memory_access" in set(rows["outcome"])
    assert "torch-only graph replay" not in set(table["experiment"])
    assert not (table["recorded_in"] == "recorded").any()


def test_which_decode_batches_replay_a_full_graph_is_vllms_own_answer():
    """A2/A3: FULL decode graphs only up to max_num_seqs (vLLM's CudagraphDispatcher); a fresh engine of 17 runs its
    batch of 17 without one, so its 'completed' says nothing about the bug, and the threshold sentence says so."""
    table = glossary.decode_dispatch([(17, 17), (128, 17), (48, 48), (17, 17)])
    assert len(table) == 3  # pairs asked twice are shown once
    first = table.iloc[0]
    assert (first["largest FULL decode graph"], first["padded to"], first["runs with"]) == (16, 24, "PIECEWISE")
    assert list(table["runs with"][1:]) == ["FULL", "FULL"]
    assert max(glossary.vllm_capture_sizes(17)) > 17  # the capture list runs past max_num_seqs
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    threshold = tables.threshold_table(engines)
    dispatch = glossary.decode_dispatch(zip(threshold["max_num_seqs"], threshold["requests"]))
    said = reproduce.crash_threshold(threshold, dispatch)
    assert "a decode batch of 17, 44, 45, 46 and 47 requests" in said and "says nothing about the bug" in said
    assert "property of this run" not in said
