"""Notebook 05: whether a direction of the engine ratios lies beyond how far one configuration moved between
engines (moved out of cost_devices, r15 D7, which now names the ratio each verdict compares)."""

from __future__ import annotations

import pandas as pd

__all__ = ["beyond_spread"]


def beyond_spread(row: pd.Series, model: str, spread: pd.DataFrame | None) -> tuple[str, bool]:
    """Whether a direction held in every ratio of ``row`` lies beyond ``model``'s largest between-engine spread: its
    ratio nearest 1 above it, or below its inverse, the clause naming both (r15 D7).  ("", True) without a spread."""
    if spread is None or model not in spread.index.get_level_values("model"):
        return "", True
    most = float(spread.xs(model, level="model")["between_engines"].max())
    faster = int(row["below_1"]) == 0
    beyond = float(row["lowest"]) > most if faster else float(row["highest"]) < 1 / most
    near = f"{float(row['lowest'] if faster else row['highest']):.2f}x"
    return (
        f", {row['lowest']:.2f}–{row['highest']:.2f}x; nearest 1, {near}, against up to {most:.2f}x between engines",
        beyond,
    )
