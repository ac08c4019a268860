import json
from pathlib import Path

import pandas as pd
import pytest

from flexfix.edition import results

ROOT = Path(__file__).resolve().parent.parent


def gpu_provenance():
    prov = results.provenance("cpu", {"x": 1})
    prov.update(device_kind="cuda", device_name="NVIDIA H100 80GB HBM3")
    return prov


def test_round_trip_with_provenance(tmp_path):
    table = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = results.write_results(tmp_path, "t", table, "cpu", {"n": 2})
    back, prov = results.read_results(path)
    assert back.equals(table)
    assert prov["parameters"] == {"n": 2} and prov["device_kind"] == "cpu"
    assert set(results.PROVENANCE_KEYS) <= set(prov)


def test_recorded_all_names_the_file_of_every_row(tmp_path):
    results.write_results(tmp_path, "first", [{"a": 1}, {"a": 2}], "cuda", prov=gpu_provenance())
    results.write_results(tmp_path, "second", [{"a": 3}], "cuda", prov=gpu_provenance())
    table, provs = results.recorded_all(tmp_path, ["second", "first"])
    assert table["a"].tolist() == [3, 1, 2] and table["source"].tolist() == ["second", "first", "first"]
    assert len(provs) == 2


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = results.write_results(tmp_path, "t", [{"a": 1}], "cpu")
    old = path.read_text()

    def broken_dumps(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(results.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError):
        results.write_results(tmp_path, "t", [{"a": 2}], "cpu")
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_cpu_run_never_replaces_a_gpu_result(tmp_path):
    gpu = results.write_results(tmp_path, "t", [{"a": 1}], "cuda", prov=gpu_provenance())
    cpu = results.write_results(tmp_path, "t", [{"a": 2}], "cpu")
    assert gpu != cpu and json.loads(gpu.read_text())["records"] == [{"a": 1}]
    # even a CPU provenance aimed at the GPU file name is refused
    sneaky = results.provenance("cpu")
    gpu.rename(tmp_path / "t-cpu.json")
    with pytest.raises(results.ResultsError, match="GPU-recorded"):
        results.write_results(tmp_path, "t", [{"a": 3}], "cpu", prov=sneaky)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"records": []}, "no provenance"),
        ({"provenance": {"device_kind": "cuda"}, "records": []}, "lacks"),
        ({"provenance": gpu_provenance()}, "no records"),
    ],
)
def test_missing_provenance_fails_loudly(tmp_path, payload, message):
    path = tmp_path / "x-cuda.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(results.ResultsError, match=message):
        results.read_results(path)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x-cuda.json").write_text("{")
    with pytest.raises(results.ResultsError, match="not valid JSON"):
        results.read_results(tmp_path / "x-cuda.json")
    with pytest.raises(results.ResultsError, match="no results file"):
        results.recorded(tmp_path, "absent")


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="plain file stem"):
        results.write_results(tmp_path, name, [], "cpu")


def test_every_recorded_gpu_result_carries_gpu_provenance():
    files = sorted((ROOT / "data").glob("*-cuda.json"))
    assert files
    for path in files:
        _, prov = results.read_results(path)
        assert prov["device_kind"] == "cuda" and prov["device_name"].startswith("NVIDIA H") and prov["driver"], path
        assert prov["torch"].startswith("2.11.0") and prov["git_commit"], path
        # every file ran vLLM 0.20.0 but those recorded on purpose on 0.20.2 (an affected release as well), for
        # the replay guard on a fixed release, 0.26.0 (files named guard026_*), and the torch-only measurements run
        # on a machine without vLLM (the copy benchmark, the crash-or-wrong-answer placements): no vLLM at all
        # (and the fixed release's side of the backend speeds, backend_speed026)
        fixed = path.name.startswith(("guard026_", "backend_speed026"))
        expected = "0.20.2" if "v0_20_2" in path.name else "0.26.0" if fixed else "0.20.0"
        if path.name.startswith(("copy_speed-", "outcome_cause-")):
            expected = None
        assert prov["vllm"] == expected, path


def test_recorded_engine_outcomes():
    """What the H100 recorded (data/): refusal, crashes, control and the patched runs."""
    from flexfix.measure.record import RECORDED_ENGINE_TABLES

    table, _ = results.recorded_all(ROOT / "data", RECORDED_ENGINE_TABLES)
    status = dict(zip(table.scenario, table.status))
    # Repeated in fresh engines: 47 requests completed 3 times of 3, 48 crashed 3 times of 3 (scenario d).
    assert list(table[table.scenario == "stock_47"].status) == ["ok"] * 3
    assert list(table[table.scenario == "d"].status) == ["illegal_memory_access"] * 3
    assert status["a"] == "refused"
    assert status["b"] == status["d"] == "illegal_memory_access"
    assert status["c"] == "ok"
    for name in ("patched_inprocess", "patched_d", "patched_plugin"):
        assert status[name] == "ok"
        runs = table[table.scenario == name].records.item()
        assert all(r["completed"] == r["requests"] for r in runs)


def test_recorded_kernel_invariance():
    """The H100 needle sweep: 16 x 16 tiles are bitwise-invariant; as_strided under a graph dies past 16."""
    from flexfix.measure.record import RECORDED_KERNEL_INVARIANCE

    table, provs = results.recorded_all(ROOT / "data", RECORDED_KERNEL_INVARIANCE)
    assert all(p["parameters"]["needle_len"] == 300 and p["parameters"]["capture_len"] == 500 for p in provs)
    assert len(table) == 12 * 14 * 3 and not table.duplicated(["config", "batch", "position"]).any()
    for options in ("vllm", "batch_invariant"):
        for launch, copy in (("eager", "sliced"), ("eager", "as_strided"), ("graph", "sliced")):
            cells = table[(table.options == options) & (table.launch == launch) & (table["copy"] == copy)]
            assert len(cells) == 42 and (cells.outcome == "ok").all() and cells.bitwise_equal.all(), (options, launch)
    for options in ("vllm", "batch_invariant"):
        bug = table[(table.options == options) & (table.launch == "graph") & (table["copy"] == "as_strided")]
        assert (bug[bug.batch <= 16].bitwise_equal == True).all()  # noqa: E712 - None would be a crash
        assert (bug[bug.batch > 16].outcome == "illegal_memory_access").all() and len(bug[bug.batch > 16]) == 21
    pytorch = table[table.options == "pytorch"]
    assert pytorch[pytorch.batch <= 8].bitwise_equal.all()
    assert set(pytorch[pytorch.batch > 16].outcome) == {"error"}  # the compiler refused these block sizes
    assert (table[table.outcome == "ok"].max_error_vs_reference < 1e-3).all()


def test_recorded_decode_timing():
    table, _ = results.recorded(ROOT / "data", "decode_timing")
    assert len(table) == 6 * 4 * 5 and (table.reps == 30).all()
    from flexfix.edition.tables import timing_ratios

    ratios = timing_ratios(table)
    assert (ratios.graph_speedup > 1).all()  # a replay never lost to an eager launch
    assert ratios.bi_overhead.between(0.95, 1.05).all()  # batch-invariant options: no measurable cost
    big = ratios[(ratios.batch >= 32) & (ratios.context >= 2048)]
    assert (big.flex_bw_fraction < 0.2).all() and (
        big.sdpa_bw_fraction > 0.85
    ).all()  # the shortfall notebook 05 explains


def test_recorded_engine_batch_invariance():
    from flexfix.edition.tables import engine_verdicts
    from flexfix.measure import engine_sweep
    from flexfix.measure.record import RECORDED_SWEEP_TABLES

    table, _ = results.recorded_all(ROOT / "data", RECORDED_SWEEP_TABLES)
    assert (table.status == "ok").all()
    verdict = engine_verdicts(engine_sweep.invariance_rows(table))
    invariant = verdict["invariant"]
    assert invariant[("variance, BI=1, full, patched", "greedy")]
    assert invariant[("variance, BI=1, full, patched", "seeded")]
    assert not invariant[("variance, BI=0, full, patched", "greedy")]
    assert not invariant[("variance, BI=0, full, patched", "seeded")]
    tiny = verdict.loc[[e.startswith("tiny") for e, _ in verdict.index]]
    assert tiny["invariant"].all() and len(tiny) == 12
    seeded = verdict.xs("seeded", level="sampling")
    assert (seeded.fewest_distinct_tokens >= 30).all()  # not a degenerate token stream


def test_recorded_every_request_check():
    """Stock 0.20.0 at 17 requests: completed, and the one request of query block 1 was wrong; patched: none."""
    from flexfix.measure import engine_sweep
    from flexfix.measure.record import RECORDED_EVERY_REQUEST

    table, _ = results.recorded_all(ROOT / "data", RECORDED_EVERY_REQUEST)
    rows = engine_sweep.request_rows(table)
    stock, patched = rows[~rows.patched], rows[rows.patched]
    assert stock.requests.tolist() == [17] and stock.tokens_differ.item() == [16]
    assert stock.logprobs_differ.item() == [16] and (stock.engine_status == "illegal_memory_access").all()
    assert sorted(patched.requests) == [17, 17, 32, 32, 47, 47]
    assert all(not d for d in patched.tokens_differ) and all(not d for d in patched.logprobs_differ)


def test_recorded_engine_throughput():
    """Notebook 05's engine claims, from the files: every run timed all six configurations of its model
    back to back; full graphs won every variance comparison; BI=1 cost the variance model in most
    ratios; and one configuration moved by more than 1.4x between engines (the noise the notebook warns of)."""
    from flexfix.edition import tables
    from flexfix.measure import engine_sweep
    from flexfix.measure.record import RECORDED_SWEEP_TABLES, RECORDED_THROUGHPUT_TABLES

    for name in RECORDED_THROUGHPUT_TABLES:
        table, prov = results.recorded(ROOT / "data", name)
        rows = engine_sweep.throughput_rows(table)
        assert (table.status == "ok").all() and len(table) == 6, name
        assert set(zip(rows.graphs, rows.batch_invariant)) == {
            (g, b) for g in ("full", "piecewise", "eager") for b in (True, False)
        }, name
        assert sorted(set(rows.requests)) == [48, 128] and (rows.output_tokens == rows.requests * 128).all()
        assert {len(s) for s in rows.seconds} == {prov["parameters"].get("repeats", 3)}, name
    table, _ = results.recorded_all(ROOT / "data", RECORDED_THROUGHPUT_TABLES + RECORDED_SWEEP_TABLES)
    speed = engine_sweep.throughput_rows(table)
    summary = tables.ratio_summary(speed)
    variance = summary.loc["variance"]
    assert variance.loc["full/eager", "ratios"] == 8 and variance.loc["full/eager", "below_1"] == 0
    assert variance.loc["full/piecewise", "ratios"] == 8 and variance.loc["full/piecewise", "below_1"] == 0
    assert variance.loc["BI1/BI0", "ratios"] == 16 and variance.loc["BI1/BI0", "below_1"] == 13
    assert 0.85 < variance.loc["BI1/BI0", "median"] < 0.92
    assert summary.loc[("tiny", "full/piecewise"), "below_1"] == 0
    spread = tables.throughput_spread(speed)
    assert spread.between_engines.max() > 1.4 and (spread.engines >= 2).all()
    # The figures notebook 05 and data/README.md quote, to two decimals.
    quoted = {
        ("variance", "full/eager"): (1.06, 1.34, 1.54),
        ("variance", "full/piecewise"): (1.01, 1.15, 1.30),
        ("variance", "piecewise/eager"): (0.91, 1.20, 1.36),
        ("variance", "BI1/BI0"): (0.65, 0.89, 1.27),
    }
    for key, figures in quoted.items():
        assert tuple(summary.loc[key, ["lowest", "median", "highest"]].round(2)) == figures, key
    assert round(summary.loc[("tiny", "BI1/BI0"), "median"], 2) == 1.01
    worst = spread.groupby(level="model")[["between_engines", "within_engine"]].max().round(2)
    assert worst.loc["variance"].tolist() == [1.49, 1.40] and worst.loc["tiny"].tolist() == [1.60, 2.01]


# Issue #13: results replaced by less, empty files, NaN, file modes, incomplete provenance.


@pytest.mark.adversarial
def test_a_run_with_fewer_records_does_not_replace_a_complete_file(tmp_path):
    path = results.write_results(tmp_path, "t", [{"a": i} for i in range(84)], "cpu")
    with pytest.raises(results.ResultsError, match="holds 84 records and this run has 3"):
        results.write_results(tmp_path, "t", [{"a": i} for i in range(3)], "cpu")
    assert len(json.loads(path.read_text())["records"]) == 84
    results.write_results(tmp_path, "t", [{"a": 1}], "cpu", replace=True)
    assert len(json.loads(path.read_text())["records"]) == 1


@pytest.mark.adversarial
def test_progress_goes_to_a_partial_file_and_the_final_write_removes_it(tmp_path):
    final = results.write_results(tmp_path, "t", [{"a": i} for i in range(10)], "cpu")
    partial = results.write_results(tmp_path, "t", [{"a": 0}], "cpu", partial=True)
    assert partial.name == "t-cpu.partial.json" and len(json.loads(final.read_text())["records"]) == 10
    results.write_results(tmp_path, "t", [{"a": i} for i in range(12)], "cpu")
    assert not partial.exists() and len(json.loads(final.read_text())["records"]) == 12


@pytest.mark.adversarial
@pytest.mark.parametrize("table", [[], pd.DataFrame()])
def test_an_empty_table_is_never_written(tmp_path, table):
    with pytest.raises(results.ResultsError, match="no records"):
        results.write_results(tmp_path, "t", table, "cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.adversarial
def test_nan_and_infinity_are_written_as_standard_json(tmp_path):
    table = pd.DataFrame({"x": [1.0, float("nan"), float("inf")], "y": [[float("nan")], [2.0], [-float("inf")]]})
    path = results.write_results(tmp_path, "t", table, "cpu")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    records = json.loads(text)["records"]  # the standard parser, no NaN extension needed
    assert records[1]["x"] is None and records[2]["x"] == "inf" and records[0]["y"] == [None]


@pytest.mark.adversarial
def test_a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    path = results.write_results(tmp_path, "t", [{"a": 1}], "cpu")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    path.chmod(0o644)
    results.write_results(tmp_path, "t", [{"a": 2}], "cpu")
    assert path.stat().st_mode & 0o777 == 0o644


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.adversarial
@pytest.mark.parametrize(
    "change, message",
    [
        ({"device_kind": None}, "device_kind"),
        ({"device_name": None}, "no value for device_name"),
        ({"torch": ""}, "no value for torch"),
        ({"date": "yesterday"}, "not an ISO date"),
        ({"parameters": None}, "parameters must be a mapping"),
        ({k: None for k in results.PROVENANCE_KEYS}, "device_kind"),
    ],
)
def test_incomplete_provenance_is_refused_by_name(tmp_path, change, message):
    path = tmp_path / "x-cuda.json"
    path.write_text(json.dumps({"provenance": {**gpu_provenance(), **change}, "records": [{"a": 1}]}))
    with pytest.raises(results.ResultsError, match=message):
        results.read_results(path)


@pytest.mark.adversarial
@pytest.mark.parametrize(
    "records, message",
    [([], "no records"), ({"a": 1}, "list of objects"), ([1, 2], "list of objects"), ([{"b": 1}], "lacks a")],
)
def test_records_of_another_schema_are_refused(tmp_path, records, message):
    path = tmp_path / "x-cuda.json"
    path.write_text(json.dumps({"provenance": gpu_provenance(), "records": records}))
    with pytest.raises(results.ResultsError, match=message):
        results.read_results(path, columns=["a"])


@pytest.mark.adversarial
@pytest.mark.parametrize("payload", ["[]", "3", '"text"', "\xff\xfe"])
def test_a_file_that_is_not_a_results_object_is_refused(tmp_path, payload):
    path = tmp_path / "x-cuda.json"
    path.write_bytes(payload.encode("latin-1"))
    with pytest.raises(results.ResultsError, match="x-cuda.json"):
        results.read_results(path)


@pytest.mark.adversarial
def test_recorded_all_refuses_a_missing_or_empty_member(tmp_path):
    results.write_results(tmp_path, "first", [{"a": 1}], "cuda", prov=gpu_provenance())
    (tmp_path / "second-cuda.json").write_text(json.dumps({"provenance": gpu_provenance(), "records": []}))
    with pytest.raises(results.ResultsError, match="second-cuda.json has no records"):
        results.recorded_all(tmp_path, ["first", "second"])
    with pytest.raises(results.ResultsError, match="no results file"):
        results.recorded_all(tmp_path, ["first", "third"])
    with pytest.raises(ValueError, match="at least one"):
        results.recorded_all(tmp_path, [])


@pytest.mark.adversarial
def test_every_recorded_file_is_strict_json():
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    for path in sorted((ROOT / "data").glob("*.json")):
        try:
            json.loads(path.read_text(), parse_constant=refuse)
        except ValueError as e:
            pytest.fail(f"{path.name}: {e}")


def test_recorded_on_vllm_0_20_2_too():
    """The other affected release: the same refusal, the same crash at 48, and the fix through both routes."""
    table, prov = results.recorded(ROOT / "data", "engine_scenarios_v0_20_2", columns=["scenario", "status", "records"])
    assert prov["vllm"] == "0.20.2"
    status = dict(zip(table.scenario, table.status))
    assert status == {"a": "refused", "d": "illegal_memory_access", "patched_d": "ok", "patched_plugin": "ok"}
    for name in ("patched_d", "patched_plugin"):
        runs = table[table.scenario == name].records.item()
        assert runs and all(r["completed"] == r["requests"] for r in runs), name


def test_recorded_serving_run():
    """vllm serve 0.20.0: stock dies of the illegal memory access at 48 concurrent completions (every request an
    HTTP 500); under the plugin every completion succeeds, bitwise equal to itself alone with BI=1."""
    from flexfix.edition import tables

    table, prov = results.recorded(ROOT / "data", "serve", columns=["scenario", "status", "records", "ima_in_log"])
    assert prov["vllm"] == "0.20.0"
    by = table.set_index("scenario")
    assert by.loc["stock", "status"] == "illegal_memory_access" and by.loc["stock", "ima_in_log"]
    assert by.loc["patched_bi1", "status"] == "ok" and by.loc["patched_bi0", "status"] == "differs"
    assert by.loc["patched_bi1", "plugin_lines"] == 2 and by.loc["patched_bi0", "plugin_lines"] == 2
    assert by.loc["stock", "plugin_lines"] == 0
    stages = tables.stage_table(table).set_index(["scenario", "stage", "requests"])
    stock = stages.loc[("stock", "together", 48)]
    assert (stock.ok, stock.errored, stock.errors) == (0, 48, "48 x HTTP 500")
    for n in (48, 128):
        bi1, bi0 = stages.loc[("patched_bi1", "together", n)], stages.loc[("patched_bi0", "together", n)]
        assert bi1.ok == bi1.compared == bi1.bitwise_equal == n and bi1.errored == 0
        assert bi0.ok == n and bi0.bitwise_equal < n
    assert stages.loc[("patched_bi1", "stream", 1)].bitwise_equal == 1
    assert "H100" in prov["device_name"]  # the README says where it was recorded
    bi0 = [stages.loc[("patched_bi0", "together", n)] for n in (48, 128)]
    assert [(b.bitwise_equal, b.tokens_differ) for b in bi0] == [(0, 7), (0, 13)]  # data/README.md's figures


def test_recorded_gpu_main_job_meets_its_budget_and_the_readme_says_so():
    """`make notebooks` on one H100 (issue #15, the six notebooks of commit 83debf5): at most 480 s in all, no
    notebook over 180 s, every notebook ok; data/README.md quotes the file's figures."""
    from flexfix.edition import tables

    times, prov = results.recorded(ROOT / "data", "notebook_times_h100_83debf5", columns=["notebook", "seconds", "ok"])
    assert "H100" in prov["device_name"] and prov["git_commit"].startswith("83debf5") and times.ok.all()
    assert times.notebook.tolist() == [f"0{i}_{n}" for i, n in enumerate(SERIES_OF_83DEBF5, 1)]
    assert times.seconds.sum() <= 480 and times.seconds.max() <= 180
    readme = " ".join((ROOT / "data" / "README.md").read_text().split())
    assert tables.notebook_times_line(times) in readme


SERIES_OF_83DEBF5 = ["reproduce_ima", "apply_flexfix", "stride_layouts", "batch_invariance", "cost", "serving"]


def test_the_published_editions_own_run_is_timed_and_quoted():
    """notebook_times-cuda.json is the run data/notebooks was published from (same commit, every notebook of the
    series, every one ok); data/README.md quotes it and the README links there."""
    import json

    from flexfix.edition import tables

    times, prov = results.recorded(ROOT / "data", "notebook_times", columns=["notebook", "seconds", "ok"])
    series = [p.stem for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert times.notebook.tolist() == series and times.ok.all()
    published = json.loads((ROOT / "data" / "notebooks" / "01_reproduce_ima.ipynb").read_text())
    outputs = [o for c in published["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    header = next("".join(o["text"]) for o in outputs if "this run:" in "".join(o.get("text", "")))
    assert prov["git_commit"][:7] in header, "the times are not the published run's"
    readme = " ".join((ROOT / "data" / "README.md").read_text().split())
    assert tables.notebook_times_line(times) in readme
    assert "data/README.md#how-long-it-takes" in (ROOT / "README.md").read_text()
