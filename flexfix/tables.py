"""Small views of the results tables for the notebooks: what to show, not how it was measured."""
from __future__ import annotations

import random
from typing import Any, Mapping

import pandas as pd

__all__ = ["provenance_line", "batch_records", "outcome_summary", "engine_summary", "threshold_table", "sanitizer_view",
           "outcome_table", "random_shapes"]


def provenance_line(prov: Mapping[str, Any]) -> str:
    return (f"recorded on {prov['device_name']} (driver {prov['driver']}), torch {prov['torch']}, "
            f"vLLM {prov['vllm']}, commit {str(prov['git_commit'])[:10]}, {prov['date']}")


def outcome_summary(table: pd.DataFrame, by: tuple[str, ...] = ("copy", "batch")) -> pd.DataFrame:
    """Per group: how many runs ended in each outcome."""
    counts = table.groupby(list(by))["status"].value_counts().unstack(fill_value=0)
    counts["runs"] = counts.sum(axis=1)
    return counts


def engine_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One line per engine scenario: what it is, what was expected, what happened."""
    out = table[["scenario", "what", "expected", "status"]].copy()
    out["as_expected"] = out["expected"] == out["status"]
    out["completed_batches"] = [", ".join(str(r["requests"]) for r in recs) for recs in table["records"]]
    out["detail"] = [d.split("] ")[-1][:90] for d in table["detail"]]
    return out.set_index("scenario")


def threshold_table(table: pd.DataFrame) -> pd.DataFrame:
    """Stock vLLM 0.20.0 (no patch, VLLM_BATCH_INVARIANT=0): which request counts completed."""
    rows = []
    for _, r in table[table["patch"] == "none"].iterrows():
        if not r["batch_invariant"]:
            done = {rec["requests"] for rec in r["records"]}
            how = "one engine, growing batches" if r["scenario"] == "threshold" else "fresh engine"
            for n in r["requests"]:
                state = "completed" if n in done else (r["status"] if n == min(set(r["requests"]) - done) else "not reached")
                rows.append({"requests": n, "how": how, "scenario": r["scenario"], "outcome": state})
    return pd.DataFrame(rows).sort_values(["how", "requests"]).reset_index(drop=True)


def sanitizer_view(table: pd.DataFrame, lines: int = 6) -> pd.DataFrame:
    out = table[["copy", "status", "sanitizer_errors"]].copy()
    out["first_report"] = [" | ".join(l.strip("= ").strip() for l in ls[1:1 + lines]) for ls in table["sanitizer_lines"]]
    return out.set_index("copy")


def outcome_table(kernel: pd.DataFrame, sanitizer: pd.DataFrame, engine: pd.DataFrame) -> pd.DataFrame:
    """Every recorded GPU outcome in one table."""
    rows = [{"experiment": "torch-only graph replay", "case": f"{r.copy}, batch {r.batch}, seed {r.seed}",
             "outcome": r.status} for r in kernel.itertuples()]
    rows += [{"experiment": "compute-sanitizer memcheck", "case": f"{r.copy} ({r.sanitizer_errors} errors)",
              "outcome": r.status} for r in sanitizer.itertuples()]
    rows += [{"experiment": "vLLM 0.20.0 engine", "case": f"({r.scenario}) {r.what}", "outcome": r.status}
             for r in engine.itertuples()]
    return pd.DataFrame(rows)


def random_shapes(n: int, seed: int = 0, max_rows: int = 12, max_cols: int = 96):
    """``n`` random (persistent shape, source shape) pairs with the source fitting inside."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(n):
        g_max, w_max = rng.randint(1, max_rows), rng.randint(1, max_cols)
        shapes.append(((g_max, w_max), (rng.randint(1, g_max), rng.randint(1, w_max))))
    return shapes


def batch_records(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario x batch that an engine completed."""
    rows = [{"scenario": r["scenario"], **rec} for _, r in table.iterrows() for rec in r["records"]]
    return pd.DataFrame(rows)
