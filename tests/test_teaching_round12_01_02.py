"""Teaching round 12, notebooks 01 and 02: a newcomer's reading of the published GPU edition at fb2ae62 (findings A1,
C1 and D of r0102). Each test ties a sentence, table or figure to the data it states."""

import json

import matplotlib
from test_teaching_01_03 import DATA, cells, text

from flexfix.edition import schemas, tables
from flexfix.measure import record

matplotlib.use("Agg")


def _every():
    return schemas.recorded(DATA, record.RECORDED_EVERY_REQUEST, schemas.ENGINE_SWEEPS)


def _differ(rec):
    return len(set(rec.get("tokens_differ", [])) | set(rec.get("logprobs_differ", [])))


# A1: an engine scenario's `ok` is a run that completed; its answers were not checked.


def test_a1_engine_rows_whose_answers_were_not_checked_do_not_read_ok():
    from flexfix.edition.tables.outcomes import UNCHECKED_OK

    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    gpu_kernel, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    sanitizer, _ = schemas.recorded(DATA, "ima_sanitizer", schemas.SANITIZER_RUNS)
    every, _ = _every()
    table = tables.outcome_table(gpu_kernel, sanitizer, engines, every=every)
    scen = table[table["experiment"] == "vLLM 0.20.0 engine"]
    assert len(scen) == len(engines) and not (scen["outcome"] == "ok").any()
    completed = engines["status"] == "ok"
    assert completed.any() and (scen["outcome"] == UNCHECKED_OK).sum() == completed.sum()
    assert list(scen["outcome"][~completed.to_numpy()]) == list(engines["status"][~completed])
    # the every-request engines were checked against each request alone: their outcome says how many differed
    rows = table[table["experiment"] == "vLLM 0.20.0 engine, every request"]
    for (_, run), outcome in zip(every.iterrows(), rows["outcome"]):
        done = [r for r in run["records"] if r.get("kind") == "every_request"]
        bad, total = sum(map(_differ, done)), sum(int(r["requests"]) for r in done)
        assert f"({bad} of {total} requests differed from alone)" in outcome
        assert outcome.startswith("wrong_result" if run["status"] == "ok" and bad else run["status"])


def test_a1_the_engines_log_line_and_what_it_shows_say_what_ok_means():
    from flexfix.edition.tables.outcomes import ENGINE_OK, ChildLog

    log = ChildLog()
    for i, word in enumerate(["ok", "ok", "illegal_memory_access", "refused"]):
        log(f"engine {i}: {word} (exit 0, 40.0 s)")
    said = log.summary("the engines", ok_as=ENGINE_OK)
    assert f"2 {ENGINE_OK}" in said and "1 illegal_memory_access" in said and "2 ok," not in said
    assert "completed without a fault" in ENGINE_OK
    nb = [text(c) for c in cells("01_reproduce_ima")]
    assert any("ok_as=ENGINE_OK" in c or "ok_as=outcome_tables.ENGINE_OK" in c for c in nb)
    shows = next(c for c in nb if c.startswith("## The crash scenarios in one table"))
    assert "which a correct\none (`ok`)" not in shows and "`completed (request 0 only)`" in shows
    assert "not checked at all" not in shows  # round 18, A1: request 0 was compared with itself alone


# C1: this run's and the recorded error figures share tick labels and, for one tolerance, a y range.


def test_c1_the_error_figures_share_tick_format_and_range():
    from test_plots import live_gpu_wrong_results

    from flexfix.edition import plots

    recorded, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    figs = [plots.replay_errors(recorded, "rec"), plots.replay_errors(live_gpu_wrong_results(), "live")]
    axes = [f.axes[1] for f in figs]
    assert axes[0].get_ylim() == axes[1].get_ylim()
    fmt = [ax.yaxis.get_major_formatter() for ax in axes]
    assert [f(1e-3, 0) for f in fmt] == ["1e-03", "1e-03"]
    lo, hi = axes[0].get_ylim()
    for recs in recorded["records"]:  # every point inside the range
        for r in recs:
            if r.get("max_error"):
                assert lo <= r["max_error"] <= hi
    md = next(
        text(c)
        for c in cells("01_reproduce_ima")
        if text(c).startswith("*How to read it:* as the figure of this run above.")
    )
    assert "share their tick labels" in md and "their y range" in md


# D1: notebook 02 says what notebook 01's live rerun saw, where this edition ran one.


def test_d1_the_live_positive_control_is_stated_from_its_file(tmp_path):
    from flexfix.edition import results
    from flexfix.edition.narrative import workarounds

    every, provs = _every()
    prov = {**provs[0], "device_name": "NVIDIA H200"}
    said = workarounds.live_control_said(every, prov)
    stock = every[every["engine"].str.contains("stock")].iloc[0]
    done = [r for r in stock["records"] if r.get("kind") == "every_request"]
    assert "NVIDIA H200" in said and f"ended `{stock['status']}`" in said
    assert f"{_differ(done[0])} of {done[0]['requests']}" in said
    assert workarounds.live_control_said(None, None) == ""
    assert workarounds.live_control(tmp_path, "cpu") is None and workarounds.live_control(tmp_path, "cuda") is None
    src = "".join(text(c) for c in cells("02_apply_flexfix"))
    assert "workarounds.live_control(RESULTS_DIR, device)" in src
    assert results.results_path(tmp_path, "every_request", "cuda").name == "every_request-cuda.json"


# D2: the same seeds' outcomes in each recording come first, then the caveat.


def test_d2_the_same_seeds_lead_with_each_recordings_outcomes():
    from flexfix.edition.narrative import outcome_cause as oc
    from flexfix.edition.tables import outcome_cause as ct

    kernel, kprov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    cause, cprov = ct.recorded(DATA)
    said = str(oc.same_seeds(kernel, kprov, cause, cprov, None, "cpu")._repr_markdown_())
    lead = said[said.index("On the same runs") :]
    seeds = sorted(set(kernel[kernel["batch"] == 48]["seed"]))
    crashed = kernel[(kernel["batch"] == 48) & (kernel["copy"] == "as_strided")]["status"] == "illegal_memory_access"
    assert f"{crashed.sum()} of {len(seeds)} `illegal_memory_access`" in lead
    assert lead.index("`illegal_memory_access`") < lead.index("The caveat")


# D4: the every-request outcome comes before its caveats.


def test_d4_the_every_request_outcome_comes_first():
    from flexfix.edition.narrative import reproduce

    every, _ = _every()
    said = str(reproduce.every_request_lead(None, DATA, "this run")._repr_markdown_())
    for _, run in every.iterrows():
        done = [r for r in run["records"] if r.get("kind") == "every_request"]
        assert f"{_differ(done[0])} of {done[0]['requests']}" in said
    assert "`illegal_memory_access` before it completed the batch of" in said
    nb = [text(c) for c in cells("01_reproduce_ima")]
    i = next(k for k, c in enumerate(nb) if c.startswith("## Every request checked"))
    assert "every_request_lead" in nb[i + 1] and "What makes a difference telling" in nb[i + 2]


# D5: each torch-only step's longest sequence, from the plan.


def test_d5_each_step_shows_its_longest_sequence():
    from flexfix.mechanism.kernel_repro import KernelScenario

    kernel, _ = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    line, steps = tables.replay_steps(kernel, "as_strided", 48, 0)
    sc = KernelScenario(copy="as_strided", batch=48, seed=0)
    assert list(steps["max_seq_len"]) == [sc.capture_len, *sc.replay_lens]
    assert list(steps["K"]) == [16 * -(-n // 16) for n in steps["max_seq_len"]]
    assert "drawn at random up to it from the seed" in line


# D6: the check-patch probe's shapes are in its table.


def test_d6_the_probe_shapes_are_shown_and_match_the_strides():
    checks, _ = schemas.recorded(DATA, "vllm_release_patch_checks", schemas.PATCH_CHECKS, "cpu")
    table = tables.release_checks(checks)
    probe = table["probe [G, K] into [G_max, W_max]"].iloc[0]
    src, dst = json.loads("[" + probe.replace(" into ", ",") + "]")
    for before, after in zip(table["strides before"], table["strides after"]):
        if before is not None:
            assert before[0] in (src[1], dst[1]) and after == (dst[1], 1)


# D7, D8, D9, D10: pointers and notes.


def test_d7_the_misread_sentence_points_up_to_its_table():
    import inspect

    from flexfix.edition.narrative import outcome_cause

    src = inspect.getsource(outcome_cause.misread_cells)
    assert "`other_page` in the table above" in src and "`other_page` below" not in src


def test_d8_patched_d_names_its_route():
    engines, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    shown = tables.engine_summary(tables.select_scenarios(engines, ["patched_d"]))
    assert "in-process route" in " ".join(map(str, shown.reset_index().to_numpy().ravel()))


def test_d9_d10_notes():
    nb02 = "".join(text(c) for c in cells("02_apply_flexfix"))
    assert "not a throughput measure" in nb02 and "(`patched_d`, on the in-process route below)" in nb02
    nb01 = "".join(text(c) for c in cells("01_reproduce_ima"))
    assert "a batch is rounded up to the next captured size" in nb01
