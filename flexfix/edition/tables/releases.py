"""The releases and the patch (notebook 02): the survey as ranges, the patch checks, and the two copies' sources."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["release_ranges", "release_checks", "shared_copies", "source_diff", "random_shapes"]


def release_ranges(releases: pd.DataFrame) -> pd.DataFrame:
    """The recorded release survey as runs of consecutive releases that share a class: first, last, how many,
    the class of their ``copy_to_persistent``, the verdict, and whether ``supports_batch_invariance`` is
    overridden."""
    from packaging.version import Version

    ordered = releases.assign(_v=[Version(v) for v in releases["version"]]).sort_values("_v")
    rows: list[dict[str, Any]] = []
    for _, r in ordered.iterrows():
        key = (r["copy_class"], r["verdict"], bool(r["bi_override"]))
        if rows and rows[-1]["_key"] == key:
            rows[-1].update(last=r["version"], releases=rows[-1]["releases"] + 1)
        else:
            rows.append(
                {
                    "_key": key,
                    "first": r["version"],
                    "last": r["version"],
                    "releases": 1,
                    "copy_to_persistent": r["copy_class"],
                    "verdict": r["verdict"],
                    "supports_batch_invariance overridden": bool(r["bi_override"]),
                }
            )
    return pd.DataFrame(rows).drop(columns="_key")


def probe_shapes() -> str:
    """The source and buffer shapes of the check-patch probe (``flexfix.integration.releases.probe``), read by running
    it on a recording copy (r0102 round 12, D6: a row stride is read against the probe's `K` and `W_max`)."""
    from flexfix.integration.releases.probe import _copy_semantics

    seen = []

    def copy(dst, src):
        seen.append((list(src.shape), list(dst.shape)))
        return dst[: src.shape[0], : src.shape[1]]

    _copy_semantics(copy)
    (src, dst), *_ = seen
    return f"{src} into {dst}"


def shared_copies(releases: pd.DataFrame) -> str:
    """One line per verdict that has a copy (affected, fixed): whether all its releases hold one
    ``copy_to_persistent``, by the SHA-256 the survey read from each wheel (the README's "the same sliced copy")."""
    lines = []
    for verdict in ("affected", "fixed"):
        hashes = releases.loc[releases.verdict == verdict, "copy_sha256"]
        lines.append(f"{verdict} releases share one copy_to_persistent: {len(hashes) > 0 and hashes.nunique() == 1}")
    return "\n".join(lines)


def release_checks(checks: pd.DataFrame) -> pd.DataFrame:
    """flexfix's patch against each release's real module: release class, what apply() returned, the strides
    of a [2, 3] copy into a [4, 8] buffer before and after, supports_batch_invariance() before and after, and
    the plugin's line with FLEXFIX_PATCH=1, and whether the release behaved as its class predicts (each way it did
    not, named)."""

    def strides(copy):
        return None if not isinstance(copy, Mapping) else tuple(copy["strides"])

    return pd.DataFrame(
        {
            "vLLM": checks["version"],
            "release class": checks["release_class"],
            "apply()": checks["apply"],
            "probe [G, K] into [G_max, W_max]": probe_shapes(),
            "strides before": [strides(c) for c in checks["copy_before"]],
            "strides after": [strides(c) for c in checks["copy_after"]],
            "batch invariance before": checks["bi_before"],
            "after": checks["bi_after"],
            "plugin says": [
                " ".join(row.get("plugin_log", row.get("plugin_stderr")) or []) for row in checks.to_dict("records")
            ],
            # what its release class predicts (patched where affected, untouched elsewhere), or how it differed
            "behaved as its class predicts": [
                "yes" if not g else "no: " + "; ".join(map(str, g)) for g in checks["gaps"]
            ],
        }
    ).set_index("vLLM")


def source_diff(
    original: str,
    fixed: str,
    fixed_name: str = "flexfix.mechanism.persistent.copy_to_slice: flexfix's restatement of the rule of vLLM PR "
    "#40842 (0.21.0), without flexfix's checks",
    original_name: str = "vLLM 0.20.0: copy_to_persistent",
) -> str:
    """A unified diff from vLLM 0.20.0's source to the fixed one, for reading side by side."""
    import difflib

    return "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            fixed.splitlines(keepends=True),
            fromfile=original_name,
            tofile=fixed_name,
        )
    )


def random_shapes(n: int, seed: int = 0, max_rows: int = 12, max_cols: int = 96):
    """``n`` random (persistent shape, source shape) pairs with the source fitting inside."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(n):
        g_max, w_max = rng.randint(1, max_rows), rng.randint(1, max_cols)
        shapes.append(((g_max, w_max), (rng.randint(1, g_max), rng.randint(1, w_max))))
    return shapes
