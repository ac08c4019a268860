"""Teaching round 15, notebooks 01 and 02: a newcomer's reading of the published GPU edition (findings A1-A3, A5, A6,
B2, C1, D4-D7, D9, D10 of r0102). Each test ties a sentence, table or figure to the data it states."""

import matplotlib
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas
from flexfix.measure import record

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _md(stem):
    return " ".join(" ".join(text(c).split()) for c in cells(stem) if c["cell_type"] == "markdown")


def _code(stem):
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "code")


def _workarounds():
    from flexfix.edition.tables.workarounds import workaround_table

    safety, sprov = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    return workaround_table(safety, cost), sprov


def _live(device="NVIDIA H200"):
    """A stand-in for notebook 01's live every-request file: its stock engine and its BI=0 patched engine."""
    every, provs = schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)
    keep = every["engine"].str.contains("stock") | (every["batch_invariant"].astype(int) == 0)
    return every[keep].reset_index(drop=True), {**provs[0], "device_name": device}


# A1: the brief says, for each recording, where the notebook shows it: on a GPU run the live engines and placement
# runs replace the recorded ones in their sections, so those recordings are shown only in the brief.


def test_a1_the_brief_says_where_each_recording_is_shown_on_gpu_and_cpu():
    from flexfix.edition.narrative import headline

    cpu, gpu = str(headline.recorded_brief(DATA, "cpu", True)), str(headline.recorded_brief(DATA, "cuda", True))
    off = str(headline.recorded_brief(DATA, "cuda", False))
    assert "each section below shows this run's own outcome beside" not in cpu + gpu

    def row(brief, word):  # round 22, D1: one table row per experiment
        return next(r for r in brief.split("\n") if r.startswith("| ") and word in r)

    engine_cpu, place_cpu = row(cpu, "scenarios (b) and (d)"), row(cpu, "placed by hand")
    engine_gpu, place_gpu = row(gpu, "scenarios (b) and (d)"), row(gpu, "placed by hand")
    assert "here only" in engine_gpu
    # round 20, A1: the recorded placement runs' `default` arm is a row of the same-seeds table on a GPU
    assert "Which recordings ran the same seeds" in place_gpu
    assert "here only" not in cpu and "in place of a live run" in engine_cpu and "in place of a live run" in place_cpu
    # RUN_ENGINE off on a GPU: the engines are the recorded ones again, the placements still live
    assert "in place of a live run" in row(off, "scenarios (b) and (d)") and "this run repeats" in row(off, "by hand")
    # the counts stay those of the files
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    d = engines[engines["scenario"] == "d"]
    assert f": `illegal_memory_access` {int((d['status'] == 'illegal_memory_access').sum())} of {len(d)}" in gpu
    assert "headline.recorded_brief(DATA_DIR, device, RUN_ENGINE" in _code("01_reproduce_ima")


# A2, A3, A6: the wording of 01's captions and definitions.


def test_a2_a3_a6_captions_and_definition_match_the_edition():
    said = _md("01_reproduce_ima")
    assert "the outcome figures further down (the errors per step and the outcome grid) colour outcomes" not in said
    # round 22, D9: no tour of the later figures' colours, only that each has its own legend
    assert "kinds of cell, not outcomes; every figure of this notebook has a legend of its own" in said
    assert "sets the two recordings side by side" not in said
    assert "sets every run of these seeds with the caches where PyTorch put them side by side" in said
    assert "that an earlier GPU run wrote" not in said
    assert "the CPU-only release survey and patch checks of notebook 02" in said
    # the CPU recordings that the definition now covers exist and say so in their provenance
    for name, schema in (("vllm_releases", schemas.RELEASES), ("vllm_release_patch_checks", schemas.PATCH_CHECKS)):
        _, prov = schemas.recorded(DATA, name, schema, "cpu")
        assert prov.get("device") == "cpu" or "cpu" in str(prov.get("device_name", "")).lower()


# B2: (b) and (d) rule out batch invariance only; the graph path is supported by 02's recorded engines without full
# graphs, counted from their file.


def test_b2_graph_path_support_is_counted_from_the_workaround_checks():
    from flexfix.edition.narrative import graph_path
    from flexfix.measure import engine_sweep

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    said = str(graph_path.support(engines, DATA))
    assert "does not belong to batch invariance" in said and "follows from the mechanism" in said
    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    rows = engine_sweep.request_rows(safety)
    for graphs in ("piecewise", "eager"):
        for r in rows[rows["graphs"] == graphs].itertuples():
            assert f"{len(set(r.tokens_differ) | set(r.logprobs_differ))} of {r.requests}" in said
    assert " agree:" not in said and "no positive control in their own run" in said  # round 20, B3
    # where (b) did not fault, nothing is concluded
    calm = engines.copy()
    calm.loc[calm["scenario"] == "b", "status"] = "ok"
    assert "do not tell" in str(graph_path.support(calm, DATA))
    md = _md("01_reproduce_ima")
    assert "(if both fault, it is the graph path)" not in md and "graph_path.support(engine_runs, DATA_DIR)" in _code(
        "01_reproduce_ima"
    )


# C1: the ring legend counts run-steps, not steps.


def test_c1_ring_legend_counts_run_steps():
    from flexfix.edition import plots
    from flexfix.edition.tables import outcome_cause as cause_tables

    runs, _ = cause_tables.recorded(DATA)
    arm = runs[(runs["placement"] == "default") & runs["touch"].isna()]
    arm = arm[["copy", "batch", "seed", "device", "status", "records"]]
    fig = plots.replay_errors(arm, "t")
    labels = [str(ln.get_label()) for ax in fig.axes for ln in ax.get_lines()]
    ring = [lb for lb in labels if lb.startswith("silently wrong answer (")]
    wrong = [(i, k) for i, r in enumerate(arm["records"]) for k, s in enumerate(r) if s["outcome"] == "wrong_result"]
    plt.close(fig)
    if wrong:
        n_runs, n_steps = len({i for i, _ in wrong}), len({k for _, k in wrong})
        assert ring and ring[0].startswith(f"silently wrong answer ({len(wrong)} run-step")
        assert f"{n_runs} run" in ring[0] and f"{n_steps} step" in ring[0]


# D4: the sanitizer's tile in one plain clause.


def test_d4_sanitizer_tile_without_nested_arithmetic():
    from flexfix.edition.narrative.sanitizer import sanitizer_read

    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    said = str(sanitizer_read(sanitizer))
    assert "// (" not in said and "), batch " not in said and "launch tile" in said  # round 22, D4


# D5: the crash threshold opens with a one-line answer naming the first faults of the table.


def test_d5_threshold_opens_with_the_short_answer():
    from flexfix.edition import tables
    from flexfix.edition.narrative import reproduce

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    table = tables.threshold_table(engines)
    said = str(reproduce.crash_threshold(table))
    assert said.startswith("**The short answer:**")
    first = said.split("\n\n")[0]
    died = table[table["outcome"] != "completed"]
    assert f"first faulted at {int(died['requests'].min())} requests" in first


# D6: the fault the dispatcher does not explain is tied back to the placement section.


def test_d6_unexplained_fault_points_to_what_decides():
    import inspect

    from flexfix.edition.narrative import reproduce

    src = inspect.getsource(reproduce.every_request)
    assert "does not explain this fault: not every misreading replay faults" in src  # round 22, D5
    assert "Crash or wrong answer: what decides" in src


# A5, D7: 02's verdict first, the nearest positive control named from the files; the takeaway agrees.


def test_a5_d7_verdict_names_the_nearest_control():
    from flexfix.edition.narrative import workaround_control

    table, sprov = _workarounds()
    none = str(workaround_control.verdict(table, sprov, None))
    assert none.startswith("**In short:** all 3 ways") and "no positive control in their own run" in none
    live = _live(sprov["device_name"])
    said = str(workaround_control.verdict(table, sprov, live))
    stock = [r for r in live[0].itertuples() if "stock" in r.engine]
    differ = sum(
        len(set(x.get("tokens_differ", [])) | set(x.get("logprobs_differ", [])))
        for r in stock
        for x in r.records
        if x.get("kind") == "every_request"
    )
    assert f"same tiny model and GPU ({sprov['device_name']})" in said and f"{differ} request" in said
    assert f"ended `{stock[0].status}`" in said
    other = str(workaround_control.verdict(table, sprov, _live("another GPU")))
    assert "live rerun" not in other  # a rerun on another GPU is not named as the control on this one
    md = _md("02_apply_flexfix") + workaround_control.takeaway(sprov, None, None)  # r17 A2: generated takeaway
    assert "positive control of its own on that model and GPU" not in md
    assert "without a positive control of its own; the nearest, as the first section's verdict says" in md  # r22
    code = _code("02_apply_flexfix")
    assert code.index("workaround_control.verdict(") < code.index("workarounds.without_plugin(")


# D10: the live rerun's coverage on the patched engine, batch by batch, with the graph mode of each batch.


def test_d10_live_rerun_coverage_in_02():
    from flexfix.edition import glossary
    from flexfix.edition.narrative import workaround_control
    from flexfix.edition.tables.outcomes import every_request_dispatch

    assert "none read back here" in str(workaround_control.live_coverage(None))
    live = _live()
    said = str(workaround_control.live_coverage(live))
    patched = live[0][~live[0]["engine"].str.contains("stock")]
    d = glossary.decode_dispatch(every_request_dispatch(patched))
    full = d[d["runs with"] == "FULL"]["decode batch"].astype(int).tolist()
    assert f"FULL-graph batch{'es' if len(full) > 1 else ''} of" in said and all(str(b) in said for b in full)
    # a narrower engine: its batch of 47 runs without a FULL graph and is said to test nothing
    narrow = patched.copy()
    narrow["max_num_seqs"] = 47
    from flexfix.edition.tables.outcomes import engine_max_num_seqs

    if engine_max_num_seqs(narrow.iloc[0]) == 47:
        said = str(workaround_control.live_coverage((narrow, live[1])))
        assert "47 ran without a FULL graph and tests nothing" in said
    assert "workaround_control.live_coverage(" in _code("02_apply_flexfix")


# D9: the glossary defines the variance model and the needle, with the model's numbers from its configuration.


def test_d9_glossary_defines_variance_model_and_needle():
    from flexfix.edition import glossary
    from flexfix.integration.engine import LLAMA_CONFIGS

    said = str(glossary.markdown())
    assert "* **tiny model / variance model**:" in said and "* **needle**:" in said
    big = LLAMA_CONFIGS["variance"]
    assert f"{big['num_hidden_layers']} layers, hidden size {big['hidden_size']}" in said
