"""Round 23 reading of the published edition: notebooks 01 and 02 (findings A1, A2, B1 and C1).

Each test fails on the sources as they were before its fix."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _md(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return " ".join(" ".join("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_a1_every_request_engines_max_num_seqs_is_compared_per_count():
    """01 A1: the stock every-request engine had the `max_num_seqs` (47) of the fresh engine of 47 requests, so the
    prose may not say these engines' `max_num_seqs` is not the fresh engines'; it says how they differ: a fresh
    engine's is its own count, these keep one for all their batches."""
    md = _md("01_reproduce_ima")
    assert "is not the fresh engines'" not in md
    assert "each fresh engine of the section above had its own count as `max_num_seqs`" in md
    assert "keeps one `max_num_seqs` for all its batches" in md


def _workaround_settings() -> list[str]:
    """02's words for each recorded stock setting of ``stock_workarounds`` (as its workaround table names them)."""
    from flexfix.edition import schemas
    from flexfix.edition.tables.workarounds import WAYS, workaround_key

    safety, _ = schemas.recorded(DATA, "stock_workarounds", schemas.ENGINE_SWEEPS)
    return [WAYS[workaround_key(r)][0] for _, r in safety.iterrows() if not bool(r["patched"])]


def test_a2_01_names_every_setting_of_02s_recorded_checks():
    """01 A2: 01's summary table and its paragraph on (b) and (d) quote notebook 02's recorded checks; they named
    only the settings without full graphs and called the whole file "without full graphs", though it also holds a
    stock engine with full graphs and `max_num_seqs` 16. Each setting of the file is named now, with its counts."""
    import pandas as pd

    from flexfix.edition.narrative import graph_path, headline

    settings = _workaround_settings()
    assert len(settings) > 2
    row = [
        line for line in str(headline.recorded_brief(DATA, "cuda", True, False)).splitlines() if "02's checks" in line
    ]
    assert len(row) == 1
    assert "without full graphs" not in row[0]
    said = str(graph_path.support(pd.DataFrame({"scenario": [], "status": []}), DATA))
    assert "stock vLLM 0.20.0 without full graphs" not in said
    for words in settings:
        assert words in row[0], words
        assert words in said, words
    assert "full graphs but at most 16 requests at once (`max_num_seqs=16`)" in said


def test_b1_printed_docstring_claims_no_cost_it_does_not_show():
    """02 B1: notebook 02 prints the installed copy's docstring, which said its checks "cost about as much as upstream
    spends building its index tuple", a measurement nothing in the edition shows. The docstring now says the cost is
    not shown there and names the command that measures it and where its recorded runs are described."""
    import inspect

    from flexfix.mechanism import persistent

    doc = " ".join(inspect.getdoc(persistent.copy_to_persistent).split())
    assert "cost about as much" not in doc
    assert "is not shown here: ``flexfix copy-speed`` measures it" in doc
    assert "``data/README.md``" in doc
    assert (ROOT / "flexfix" / "measure" / "copy_speed.py").exists()
    assert sorted(p.name for p in DATA.glob("copy_speed-*.json"))
    readme = (DATA / "README.md").read_text()
    assert all(p.name in readme for p in DATA.glob("copy_speed-*.json"))


def test_c1_recorded_replay_figure_title_says_recorded_commit_and_batch():
    """01 C1: the recorded torch-only run's figure was titled "<GPU>, CUDA-graph replay: max error per step", with
    neither "recorded", its commit nor its batch, beside this run's companion titled "<GPU>: max error per step,
    batch 48". The title is built from the recording's provenance and batches now."""
    from flexfix.edition import schemas, tables

    nb = json.loads((ROOT / "notebooks" / "01_reproduce_ima.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    cell = [c for c in cells if "plots.replay_errors(gpu_kernel" in c]
    assert len(cell) == 1
    title_code = cell[0].split("plots.replay_errors(gpu_kernel")[0]
    gpu_kernel, kernel_prov = schemas.recorded(DATA, "ima_kernel", schemas.KERNEL_RUNS)
    scope = {"gpu_kernel": gpu_kernel, "kernel_prov": kernel_prov, "tables": tables, "device": "cuda"}
    exec(title_code, scope)
    title = scope["recorded_title"]
    assert "recorded run" in title
    assert f"commit {kernel_prov['git_commit'][:10]}" in title and kernel_prov["date"][:10] in title
    assert kernel_prov["device_name"] in title
    batches = sorted(int(b) for b in gpu_kernel["batch"].unique())
    assert title.endswith(f"max error per step, batch {', '.join(map(str, batches))}")
    assert "plots.replay_errors(gpu_kernel, recorded_title)" in cell[0]
