"""Round 21 reading of the published edition (4ded27e): the edition index, notebooks 01 and 02."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat

from flexfix.edition import schemas
from flexfix.measure import record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EDITION = DATA / "notebooks"


def _cells(name: str) -> list[str]:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return [" ".join("".join(c["source"]).split()) for c in nb["cells"]]


def _printed_lines(nb) -> list[str]:
    """Every line of a printed output holding ``recorded on`` (a display's markdown, else its plain text)."""
    lines = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            data = o.get("data", {})
            text = o.get("text", "") if o.get("output_type") == "stream" else data.get("text/markdown") or ""
            lines += [line for line in str(text).splitlines() if "recorded on" in line]
    return lines


def test_a1_the_index_counts_01s_recordings_and_gpus_as_01_prints_them():
    """A1: the index said 4 recordings on the H100 for 01, which prints 6 `recorded on` lines naming 5 recordings,
    one of them on an H200 (a table cell's short form, GPU and commit)."""
    from flexfix.edition import publish

    nb = nbformat.read(EDITION / "01_reproduce_ima.ipynb", as_version=4)
    lines = _printed_lines(nb)
    evidence = publish.about(nb)[1]
    gpus = {re.search(r"recorded on ([^,(|]+?)(?: \(driver|,)", line).group(1) for line in lines}
    assert gpus == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    assert all(gpu in evidence for gpu in gpus)
    # round 22, A1: the count follows what 01 prints (its brief names every recording, each with its time)
    stamps = {m for line in lines for m in re.findall(r"commit (\w{10})\w*, (\d{4}-[\d\-T:+]+)", line)}
    assert evidence.startswith(f"live, except {len(stamps)} recorded results")
    assert f"; {len(lines)} such lines" in evidence
    # a short line with its time tells two recordings of one commit apart; without it, it is the earlier one again
    full = "recorded on G (driver 1), torch 2, vLLM 0.20.0, commit abc, 2026-11-2{d}T00:00:00+00:00"
    text = f"{full.format(d=1)}\n| x | recorded on G, flexfix commit abc, 2026-11-22T00:00:00+00:00 |"
    stream = nbformat.v4.new_output("stream", name="stdout", text=text)
    nb2 = nbformat.v4.new_notebook()
    nb2.cells = [nbformat.v4.new_code_cell("x")]
    nb2.cells[0].outputs = [stream]
    assert publish.about(nb2)[1].startswith("live, except 2 recorded results")
    stream["text"] = f"{full.format(d=1)}\n| x | recorded on G, flexfix commit abc |"
    assert publish.about(nb2)[1].startswith("live, except 1 recorded result shown")
    # D1: the line count sits inside the parenthesis, after the GPUs; `recorded on` is said once
    for path in sorted(EDITION.glob("*.ipynb")):
        assert publish.about(nbformat.read(path, as_version=4))[1].count("recorded on") <= 1


def test_a1_01s_same_seeds_table_names_each_recordings_time():
    """A1: the table's short form names the time too, so the index tells two recordings of one commit apart."""
    from flexfix.edition.narrative import outcome_cause as oc

    prov = {"device_name": "G", "git_commit": "abcdef0123456", "date": "2026-11-25T14:51:13+00:00"}
    assert oc._where(prov, "live") == "recorded on G, flexfix commit abcdef0123, 2026-11-25T14:51:13+00:00"


def test_a2_the_brief_s_lead_agrees_with_its_bullets():
    """A2: the lead said the sections show the live run only where this run repeats a recording, while three of its
    bullets say those recordings are shown again below."""
    from flexfix.edition.narrative import headline

    said = str(headline.recorded_brief(DATA, "cuda", True))
    # round 22, D1: the lead says no more where anything is; each row of the table says it for its own recording
    lead = said.split("\n\n")[0]
    rows = [r for r in said.split("\n") if r.startswith("| ") and not r.startswith("| experiment")]
    assert "show the live run only" not in lead and "section" not in lead.split("One row per experiment")[0]
    alone = [r for r in rows if r.split(" | ")[-1].startswith("here only")]
    assert len(alone) == 1 and "scenarios (b) and (d)" in alone[0]
    assert sum("section" in r.split(" | ")[-1] for r in rows) == len(rows)
    without = str(headline.recorded_brief(DATA, "cuda", False))
    assert "here only" not in without


def test_b1_b_and_d_settings_come_from_their_records_and_the_rest_is_scoped():
    """B1: the multiprocessing setting and the graph mode were said of the runs; their records keep neither."""
    from flexfix.edition.narrative import graph_path

    runs, _ = schemas.recorded(DATA, record.RECORDED_ENGINE_TABLES, schemas.ENGINE_SCENARIOS)
    said = str(graph_path.support(runs, DATA))
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in runs.columns and not any("graph" in c for c in runs.columns)
    assert "(b) `VLLM_BATCH_INVARIANT`=1" in said and "(d) `VLLM_BATCH_INVARIANT`=0" in said
    assert "that rests on these recorded settings alone" in said
    assert "These are this code's settings, not read from the runs" in said
    assert "does not keep `VLLM_ENABLE_V1_MULTIPROCESSING` or a graph mode" in said
    # where the records do not show one with batch invariance and one without, nothing is concluded
    same = runs.copy()
    same.loc[same["scenario"] == "b", "batch_invariant"] = False
    flat = str(graph_path.support(same, DATA))
    assert "does not belong to batch invariance" not in flat and "do not tell" in flat


def test_b2_02s_cost_workload_is_printed_from_the_recording():
    """B2: "the same requests" of the cost comparison was asserted, not shown from the cost recording."""
    from flexfix.edition.narrative import cost_workload

    cost, _ = schemas.recorded(DATA, "stock_workaround_cost", schemas.ENGINE_SWEEPS)
    table = cost_workload.workload_table(cost)
    assert len(table) == len(cost) and "the plugin (patched, full graphs)" in table.index
    for (_, run), (_, row) in zip(cost.iterrows(), table.iterrows(), strict=True):
        assert row["model"] == run["model"] and row["output tokens asked per request"] == run["throughput_tokens"]
    said = str(cost_workload.workload_said(cost))
    assert "does not keep the prompts" in said and "they differ in" not in said
    odd = copy.deepcopy(cost)
    odd.at[odd.index[0], "throughput_tokens"] = 7
    assert "they differ in output tokens asked per request" in str(cost_workload.workload_said(odd))
    cells = _cells("02_apply_flexfix")
    assert any("cost_workload.workload_table(cost)" in c and "cost_workload.workload_said(cost)" in c for c in cells)
    md = " ".join(cells)
    assert "(the variance model below) and the same requests." not in md
    assert "which does not keep the prompts themselves" in md


def test_d8_01s_engine_labels_are_explained_where_they_are_written():
    """D8: `tiny:bi0:full` was said to be the patched engine without saying how the label reads."""
    code = next(c for c in _cells("01_reproduce_ima") if 'parse_runs("tiny:stock:full,tiny:bi0:full"' in c)
    assert "MODEL:COPY:GRAPHS" in code and "`bi0`/`bi1` (patched" in code


def test_d13_02s_plugin_says_column_says_how_its_line_was_produced():
    """D13: "the plugin's one line when vLLM starts" beside "That table shows no engine start"."""
    md = " ".join(_cells("02_apply_flexfix"))
    assert "line when vLLM starts with `FLEXFIX_PATCH=1`" not in md
    assert "the check calls it directly, in the release's child process, without starting an engine" in md
