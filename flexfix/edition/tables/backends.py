"""What users would run instead (issue #25, item 3): output tokens per second of the same engines -- FlexAttention
and TRITON_ATTN, ``VLLM_BATCH_INVARIANT`` 0 and 1 -- on vLLM 0.20.0 with flexfix and on a fixed release, each as a
ratio to vLLM 0.20.0 + flexfix's FlexAttention at the same setting and request count.

Engines time one after another (``flexfix guard backend_speed`` then ``backend_speed026``), so a ratio compares two
engines' medians over their repetitions; ``lowest`` and ``highest`` divide this engine's slowest and fastest
repetition by the reference's median: how far one repetition can stray, not a confidence interval.  One such run
ranks nothing: :func:`across_runs` puts the runs recorded in ``data/`` side by side (:func:`recorded_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

__all__ = ["REFERENCE", "backend_speed", "recorded_runs", "across_runs"]

REFERENCE = ("0.20.0 + flexfix", "FLEX_ATTENTION")


def backend_speed(recorded: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``recorded``: vLLM label (``"0.20.0 + flexfix"``, ``"0.26.0"``) -> its engine table (rows as
    :func:`flexfix.measure.record.engines.engine_sweep` writes them, with ``throughput`` records).  One row per
    (vLLM, backend, BI, requests): tokens/s (median of the repetitions), its ratio to the reference engine's, and
    the spread of this engine's repetitions against that median.  DataError naming what is missing."""
    from flexfix.edition.checks import DataError
    from flexfix.measure import engine_sweep

    rows = []
    for label, table in recorded.items():
        speed = engine_sweep.throughput_rows(table)
        if speed.empty:
            raise DataError(f"vLLM {label}: no throughput record to compare")
        backend = dict(zip(table["engine"], table["backend"]))
        for r in speed.itertuples():
            seconds = list(r.seconds)
            rows.append(
                {
                    "vLLM": label,
                    "backend": str(backend[r.engine]),
                    "BI": int(bool(r.batch_invariant)),
                    "requests": int(r.requests),
                    "tokens/s": float(r.tokens_per_second),
                    "fastest": r.output_tokens / min(seconds),
                    "slowest": r.output_tokens / max(seconds),
                    "repetitions": len(seconds),
                }
            )
    table = pd.DataFrame(rows)
    reference = table[(table["vLLM"] == REFERENCE[0]) & (table["backend"] == REFERENCE[1])]
    base = reference.set_index(["BI", "requests"])["tokens/s"]
    missing = sorted(set(zip(table["BI"], table["requests"])) - set(base.index))
    if missing:
        raise DataError(f"no {' '.join(REFERENCE)} engine at (BI, requests) {missing}: nothing to compare with")
    ref = [base[(b, n)] for b, n in zip(table["BI"], table["requests"])]
    table["vs 0.20.0 + flexfix FLEX"] = (table["tokens/s"] / ref).round(3)
    table["lowest"] = (table.pop("slowest") / ref).round(3)
    table["highest"] = (table.pop("fastest") / ref).round(3)
    table["tokens/s"] = table["tokens/s"].round().astype(int)
    return table.sort_values(["BI", "requests", "vLLM", "backend"]).reset_index(drop=True)


FILES = {"0.20.0 + flexfix": "backend_speed", "0.26.0": "backend_speed026"}


def recorded_runs(folder) -> dict[str, dict[str, pd.DataFrame]]:
    """The runs of issue #25 item 3 recorded in ``folder``: each pair ``backend_speed{S}-cuda.json`` and
    ``backend_speed026{S}-cuda.json`` (``S`` empty for the newest, ``_<commit>`` for earlier ones), as
    {run label: the mapping :func:`backend_speed` takes}, oldest first.  The label is the commit of the 0.20.0
    file's provenance.  DataError for a file without its pair, and for two runs at one commit (one would hide the
    other under the same label)."""
    from pathlib import Path

    from flexfix.edition import results
    from flexfix.edition.checks import DataError

    folder = Path(folder)
    runs = []
    for path in sorted(folder.glob(f"{FILES['0.20.0 + flexfix']}*-cuda.json")):
        suffix = path.name[len(FILES["0.20.0 + flexfix"]) : -len("-cuda.json")]
        if suffix.startswith("026"):
            continue
        pair = folder / f"{FILES['0.26.0']}{suffix}-cuda.json"
        if not pair.is_file():
            raise DataError(f"{path.name} has no {pair.name} beside it: a run is both files")
        old, prov = results.read_results(path)
        new, _ = results.read_results(pair)
        label = prov["git_commit"][:7]
        if any(label == other for _, other, _ in runs):
            raise DataError(f"{path.name}: a second run recorded at commit {label}; each run is labelled by its commit")
        runs.append((prov["date"], label, {"0.20.0 + flexfix": old, "0.26.0": new}))
    return {label: tables for _, label, tables in sorted(runs, key=lambda r: r[0])}


def across_runs(runs: Mapping[str, Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """Each engine's ratio to 0.20.0 + flexfix's FlexAttention (:func:`backend_speed`) in every run, one column per
    run (in ``runs``' order), with the lowest and highest of those ratios: what survives from one run to the next.
    The reference's own rows are left out (1.0 in every run)."""
    columns = []
    for label, recorded in runs.items():
        table = backend_speed(recorded)
        table = table[(table["vLLM"] != REFERENCE[0]) | (table["backend"] != REFERENCE[1])]
        columns.append(table.set_index(["vLLM", "backend", "BI", "requests"])["vs 0.20.0 + flexfix FLEX"].rename(label))
    out = pd.concat(columns, axis=1)
    out["lowest"] = out.min(axis=1)
    out["highest"] = out.max(axis=1)
    return out.sort_index().reset_index()


def markdown_rows(across: pd.DataFrame) -> list[str]:
    """data/README.md's table of :func:`across_runs`: one row per engine and setting, the ratio of each run (``-``
    where a run did not record the engine), then the lowest and highest over the runs."""
    runs = [c for c in across.columns if c not in ("vLLM", "backend", "BI", "requests", "lowest", "highest")]
    rows = []
    for _, r in across.sort_values(["vLLM", "backend", "BI", "requests"]).iterrows():
        cells = ["-" if pd.isna(r[c]) else f"{r[c]:.2f}" for c in runs]
        engine = f"{str(r['vLLM']).removesuffix(' + flexfix')} {r['backend']}"
        extremes = f"{r['lowest']:.2f}-{r['highest']:.2f}"
        rows.append(f"| {engine} | BI={r['BI']}, {r['requests']} | {' | '.join(cells)} | {extremes} |")
    return rows
