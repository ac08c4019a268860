"""Issue #25 item 3: tokens/s of FlexAttention and TRITON_ATTN on 0.20.0 + flexfix and on a fixed release, as
ratios to 0.20.0 + flexfix's FlexAttention (flexfix.edition.tables.backends)."""

import pandas as pd
import pytest

from flexfix.edition.checks import DataError
from flexfix.edition.tables.backends import backend_speed


def _engine(backend: str, bi: bool, seconds: dict[int, list[float]], status: str = "ok") -> dict:
    name = f"variance, BI={int(bi)}, full graphs" + ("" if backend == "FLEX_ATTENTION" else f", stock, {backend}")
    records = [
        {"kind": "throughput", "requests": n, "output_tokens": 128 * n, "seconds": s, "tokens_per_second": 0.0}
        for n, s in seconds.items()
    ]
    for r in records:  # as the engine child computes it: output tokens over the median repetition
        r["tokens_per_second"] = r["output_tokens"] / sorted(r["seconds"])[len(r["seconds"]) // 2]
    return {
        "engine": name,
        "model": "variance",
        "batch_invariant": bi,
        "graphs": "full",
        "patched": backend == "FLEX_ATTENTION",
        "backend": backend,
        "status": status,
        "records": records,
    }


def test_each_engine_is_a_ratio_to_the_patched_flex_engine_at_its_setting():
    old = pd.DataFrame(
        [
            _engine("FLEX_ATTENTION", False, {48: [1.0, 1.0, 1.0]}),
            _engine("TRITON_ATTN", False, {48: [0.5, 0.5, 0.6]}),
            _engine("FLEX_ATTENTION", True, {48: [2.0, 2.0, 2.0]}),
        ]
    )
    new = pd.DataFrame([_engine("FLEX_ATTENTION", False, {48: [0.9, 1.0, 1.1]})])
    table = backend_speed({"0.20.0 + flexfix": old, "0.26.0": new}).set_index(["vLLM", "backend", "BI"])
    assert table.loc[("0.20.0 + flexfix", "FLEX_ATTENTION", 0), "vs 0.20.0 + flexfix FLEX"] == 1.0
    assert table.loc[("0.20.0 + flexfix", "TRITON_ATTN", 0), "vs 0.20.0 + flexfix FLEX"] == 2.0
    upstream = table.loc[("0.26.0", "FLEX_ATTENTION", 0)]
    assert upstream["vs 0.20.0 + flexfix FLEX"] == 1.0  # medians equal
    assert (upstream["lowest"], upstream["highest"]) == (round(1 / 1.1, 3), round(1 / 0.9, 3))
    assert table.loc[("0.20.0 + flexfix", "FLEX_ATTENTION", 1), "tokens/s"] == 48 * 128 // 2  # BI=1: its own reference


def test_a_setting_without_the_reference_engine_is_refused_by_name():
    old = pd.DataFrame([_engine("FLEX_ATTENTION", False, {48: [1.0]})])
    new = pd.DataFrame([_engine("TRITON_ATTN", True, {128: [1.0]})])
    with pytest.raises(
        DataError, match=r"no 0.20.0 \+ flexfix FLEX_ATTENTION engine at \(BI, requests\) \[\(1, 128\)\]"
    ):
        backend_speed({"0.20.0 + flexfix": old, "0.26.0": new})
    with pytest.raises(DataError, match="vLLM 0.26.0: no throughput record"):
        backend_speed(
            {"0.20.0 + flexfix": old, "0.26.0": pd.DataFrame([{**_engine("TRITON_ATTN", True, {}), "records": []}])}
        )


def test_data_readme_quotes_the_recorded_backend_speeds():
    """data/README.md's table of issue #25 item 3 says what the recorded runs hold, every engine's ratio in every run
    and their extremes; the README's summary quotes the extremes of both backends."""
    from pathlib import Path

    from flexfix.edition.tables.backends import across_runs, markdown_rows, recorded_runs

    root = Path(__file__).resolve().parent.parent
    runs = recorded_runs(root / "data")
    assert len(runs) >= 2
    across = across_runs(runs)
    text = (root / "data" / "README.md").read_text()
    for row in markdown_rows(across):
        assert row in text, row
    assert text.count(" | BI=") == len(across)  # no row left from an earlier set of runs
    runs_only = across[list(runs)]
    triton, flex026 = (
        across["backend"] == "TRITON_ATTN",
        (across["vLLM"] == "0.26.0") & (across["backend"] != "TRITON_ATTN"),
    )
    ahead = f"{int((runs_only[triton] > 1).sum().sum())} of {int(runs_only[triton].notna().sum().sum())}"
    behind = f"{int((runs_only[flex026] < 1).sum().sum())} of {int(runs_only[flex026].notna().sum().sum())}"
    moved = f"{(across['highest'] / across['lowest']).max():.2f}x"
    flat = " ".join(text.split())
    assert f"in {ahead} comparisons" in flat and f"slower in {behind}" in flat and f"up to {moved}" in flat
    readme = " ".join((root / "README.md").read_text().split())
    assert f"in {ahead} comparisons" in readme and f"slower in {behind}" in readme and f"up to {moved}" in readme
    for vllm, backend in (("0.20.0 + flexfix", "TRITON_ATTN"), ("0.26.0", "TRITON_ATTN"), ("0.26.0", "FLEX_ATTENTION")):
        mine = across[(across["vLLM"] == vllm) & (across["backend"] == backend)]
        assert f"{mine['lowest'].min():.2f}-{mine['highest'].max():.2f}x" in readme, (vllm, backend)


def test_runs_side_by_side_keep_each_runs_ratio_and_their_extremes(tmp_path):
    """across_runs: one column per run, the lowest and highest ratio over the runs; recorded_runs pairs the files by
    suffix, oldest first, and refuses a 0.20.0 file without its fixed-release pair by name, and two runs at one
    commit (their label)."""
    from flexfix.edition import results
    from flexfix.edition.tables.backends import across_runs, recorded_runs

    def run(triton_seconds: float):
        old = pd.DataFrame(
            [_engine("FLEX_ATTENTION", False, {48: [1.0]}), _engine("TRITON_ATTN", False, {48: [triton_seconds]})]
        )
        return {"0.20.0 + flexfix": old, "0.26.0": pd.DataFrame([_engine("FLEX_ATTENTION", False, {48: [2.0]})])}

    table = across_runs({"first": run(0.5), "second": run(0.25)}).set_index(["vLLM", "backend"])
    triton = table.loc[("0.20.0 + flexfix", "TRITON_ATTN")]
    assert (triton["first"], triton["second"], triton["lowest"], triton["highest"]) == (2.0, 4.0, 2.0, 4.0)
    assert table.loc[("0.26.0", "FLEX_ATTENTION"), "highest"] == 0.5
    assert ("0.20.0 + flexfix", "FLEX_ATTENTION") not in table.index  # the reference is 1.0 in every run

    import json
    from pathlib import Path

    provenance = results.read_results(Path(__file__).resolve().parent.parent / "data" / "backend_speed-cuda.json")[1]
    for suffix, tables, commit, day in (("", run(0.25), "b" * 40, "02"), ("_aaaaaaa", run(0.5), "a" * 40, "01")):
        for label, name in (("0.20.0 + flexfix", "backend_speed"), ("0.26.0", "backend_speed026")):
            prov = {**provenance, "git_commit": commit, "date": f"2026-11-{day}T00:00:00+00:00"}
            records = json.loads(tables[label].to_json(orient="records"))
            (tmp_path / f"{name}{suffix}-cuda.json").write_text(json.dumps({"provenance": prov, "records": records}))
    runs = recorded_runs(tmp_path)
    assert list(runs) == ["aaaaaaa", "bbbbbbb"]  # oldest first, whatever the file names' order
    assert across_runs(runs).set_index(["vLLM", "backend"]).loc[("0.20.0 + flexfix", "TRITON_ATTN"), "bbbbbbb"] == 4.0
    for name in ("backend_speed", "backend_speed026"):  # a third run recorded at the first run's commit
        copy = json.loads((tmp_path / f"{name}_aaaaaaa-cuda.json").read_text())
        copy["provenance"]["date"] = "2026-11-03T00:00:00+00:00"
        (tmp_path / f"{name}_again-cuda.json").write_text(json.dumps(copy))
    with pytest.raises(DataError, match="a second run recorded at commit aaaaaaa"):
        recorded_runs(tmp_path)
    for name in ("backend_speed", "backend_speed026"):
        (tmp_path / f"{name}_again-cuda.json").unlink()
    (tmp_path / "backend_speed026_aaaaaaa-cuda.json").unlink()
    with pytest.raises(DataError, match="backend_speed_aaaaaaa-cuda.json has no backend_speed026_aaaaaaa-cuda.json"):
        recorded_runs(tmp_path)
