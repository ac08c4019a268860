"""What notebook 05's engine recordings hold of the timed workload, and on which commits they ran (r22 A2: the
sampling of the timed requests, which no throughput record holds, told apart from the samplings of notebook 04's
needle check that each engine's record lists)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.checks import DataError, require
from flexfix.edition.narrative import listing, markdown, plural

__all__ = ["engine_workload", "engine_commits"]


def _samplings(speed: pd.DataFrame, engines: pd.DataFrame | None) -> str:
    """What the records say of the timed requests' sampling: a ``sampling`` field of the throughput records where
    they have one; else that none holds it, and, from the engines' records (``engines``), whose ``samplings`` those
    listed are: the needle check's, which only the engines with needle ``requests`` ran (notebook 04's rows)."""
    if "sampling" in speed and speed["sampling"].notna().all():
        return f"the timed requests' sampling: {listing(sorted(set(speed['sampling'].astype(str))))}"
    said = "no throughput record holds the sampling of the timed requests"
    if engines is None or "samplings" not in engines:
        return said
    listed = sorted({str(s) for ss in engines["samplings"] for s in (ss or [])})
    checked = engines[[bool(list(r or [])) for r in engines["requests"]]] if "requests" in engines else engines[:0]
    bare = checked[[not list(ss or []) for ss in checked["samplings"]]]
    if len(bare):  # an engine that ran the needle check with no sampling listed: what it sampled is not recorded
        first = bare.iloc[0]
        raise DataError(
            f"the engine records: `samplings` is empty for {len(bare)} engine(s) that ran the needle check (first: "
            f"{first.get('engine')!r} in {first.get('source', 'its file')!r}): refusing to say what they sampled"
        )
    files = listing([f"`{f}`" for f in dict.fromkeys(checked["source"])]) if "source" in checked else ""
    where = f" (in {files}: notebook 04's needle table, a row per sampling)" if files else ""
    return (
        f"{said}: the `samplings` each engine's record lists ({' and '.join(listed)}) are those of notebook 04's "
        f"needle check, which {len(checked)} of these {plural(len(engines), 'engine')} ran{where}, not of the timed "
        "requests"
    )


def engine_workload(speed: pd.DataFrame, engines: pd.DataFrame | None = None) -> str:
    """What the timed engines were given, per model, from the throughput records (request counts, output tokens per
    request), what the records say of the sampling (with ``engines``, the engine records, whose ``samplings`` are
    told apart from the timed requests'), and this code's settings (:mod:`flexfix.measure.engine_sweep`: greedy
    sampling of the timed requests, prompt lengths), said as this code's."""
    from flexfix.measure.engine_sweep import PROMPT_LENGTHS

    require(speed, "the throughput records", values=("model", "requests", "output_tokens"))
    parts, code = [], []
    for model, rows in speed.groupby("model", sort=False):
        per = sorted({round(t / n, 1) for t, n in zip(rows["output_tokens"], rows["requests"])})
        requests = sorted(int(n) for n in rows["requests"].unique())
        tokens = " to ".join(f"{p:g}" for p in (per[0], per[-1])) if len(per) > 1 else f"{per[0]:g}"
        lo, hi = PROMPT_LENGTHS[model]
        parts.append(f"{model}: {' and '.join(map(str, requests))} concurrent requests, {tokens} output tokens each")
        code.append(f"{model} prompts of {lo} to {hi} random token ids (seeded)")
    sampling = _samplings(speed, engines)
    greedy = [] if sampling.startswith("the timed") else ["the timed requests sampled greedily (temperature 0)"]
    return markdown(
        "**The workload timed**, from these records: " + "; ".join(parts) + f"; {sampling}. This code's settings "
        "(`flexfix.measure.engine_sweep`), which the records do not keep: " + ", ".join(greedy + code) + "."
    )


def engine_commits(names: list[str], provs: list[dict]) -> str:
    """Which commit each engine recording ran on (r0305 D19): runs compared side by side that come from different
    commits are said to, since what changed between them is not part of the records."""
    commits: dict[str, list[str]] = {}
    for name, prov in zip(names, provs):
        commits.setdefault(str(prov.get("git_commit") or "unknown")[:10], []).append(f"`{name}`")
    if len(commits) == 1:
        return markdown(f"**Commits**: every recording above ran on commit {next(iter(commits))}.")
    said = "; ".join(f"{c} ({listing(n)})" for c, n in commits.items())
    return markdown(
        f"**Commits**: the recordings above ran on {plural(len(commits), 'commit')} of flexfix: {said}. The records do "
        "not say what changed between those commits, so a difference between runs of different commits (the spread "
        "between engines below, for one) may carry that change as well as run-to-run noise; each ratio below is taken "
        "inside one run, on one commit.",
        _reversed_runs(names, provs),
    )


def _reversed_runs(names: list[str], provs: list[dict]) -> str:
    """Each ``X_repeat`` recording (the same engines in the reverse order) against ``X``: where they ran on other
    commits, the order was reversed together with a code change (r0305 B9), said with the minutes between them."""
    at = dict(zip(names, provs))
    said = []
    for name in names:
        first, again = at.get(name.removesuffix("_repeat")), at[name]
        if not name.endswith("_repeat") or first is None:
            continue
        a, b = (str(p.get("git_commit") or "unknown")[:10] for p in (first, again))
        if a == b:
            continue
        when = " after"
        try:
            minutes = (pd.Timestamp(again["date"]) - pd.Timestamp(first["date"])).total_seconds() / 60
            when = f" {minutes:.0f} minutes after"
        except (KeyError, TypeError, ValueError):
            pass
        # r22 D15: the commits are the Commits line's, just before; not listed again here
        said.append(f"`{name}` ran{when} `{name.removesuffix('_repeat')}`, on another commit")
    if not said:
        return ""
    return (
        "**The reverse-order runs are not the same setup again**: "
        + "; ".join(said)
        + ". Reversing the order came with a change of code, so a difference between a run and its reverse cannot be "
        "put on the order alone."
    )
