"""How far notebook 06's serving recording can put its moved logprobs down to the batch (r0607 round 20, B1),
against notebook 04's run-to-run finding on the same configuration."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown, plural


def _alone_again(needle: pd.DataFrame, engine: str) -> dict[str, bool]:
    """Per sampling of notebook 04's ``engine``: whether the needle alone a second time (``N = 1``) came out bitwise
    equal (tokens and logprobs)."""
    rows = needle[(needle["engine"] == engine) & (needle["requests"] == 1)]
    equal = rows["tokens_equal"].fillna(False).astype(bool) & rows["logprobs_bitwise_equal"].fillna(False).astype(bool)
    return {str(s): bool(e) for s, e in zip(rows["sampling"], equal)}


def _notebook04(data_dir) -> pd.DataFrame | None:
    """Notebook 04's recorded engine sweep, as :func:`flexfix.measure.engine_sweep.invariance_rows` reads it."""
    from flexfix.edition import schemas
    from flexfix.measure import engine_sweep, record

    try:
        table, _ = schemas.recorded(data_dir, record.RECORDED_SWEEP_TABLES, schemas.ENGINE_SWEEPS)
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return engine_sweep.invariance_rows(table)


def batch_or_run(table: pd.DataFrame, stages: pd.DataFrame, data_dir) -> str:
    """After the recorded scenarios: for each real server whose batched answers differed from the same request
    alone, what that comparison shows (not reproduced bitwise in a batch) and what it does not (that the batch did
    it): its only repeat of a request is the stream stage, and notebook 04 saw the same configuration differ with no
    batch at all. Empty where no real server's batched answers differed."""
    from flexfix.edition.narrative.serving import _counts, is_fake, model_label

    said = []
    for _, sc in table.iterrows():
        c = _counts(stages[stages["scenario"] == sc["scenario"]])
        if is_fake(sc) or not c["batched"] or c["batched_equal"] == c["batched"]:
            continue
        equal = "bitwise equal" if c["streamed_equal"] == c["streamed"] else f"{c['streamed_equal']} bitwise equal"
        repeat = (
            f"its only repeat of a request, the `stream` stage ({plural(c['streamed'], 'answer')}, {equal} to the "
            "non-streamed one), is a single control, no measure of run-to-run variation"
            if c["streamed"]
            else "it repeats no request, so it has no control for run-to-run variation"
        )
        said.append(
            f"`{sc['scenario']}`'s {c['batched'] - c['batched_equal']} differing batched answers each compare one "
            f"run in a batch with one run alone; {repeat}"
        )
        label, bi = model_label(sc), sc.get("VLLM_BATCH_INVARIANT")
        needle = _notebook04(data_dir) if label and pd.notna(bi) else None
        engine = f"{label}, BI={bi}, full graphs"
        again = _alone_again(needle, engine) if needle is not None else {}
        differed = [s for s, equal in again.items() if not equal]
        if differed:
            held = [s for s, equal in again.items() if equal]
            said[-1] += (
                f". Notebook 04 ran this model with `VLLM_BATCH_INVARIANT={bi}` and full graphs as offline engines "
                f"(its `{engine}`): with {listing(differed)} sampling even the same request alone a second time "
                "differed"
                + (f" (with {listing(held)} sampling its one repeat came out equal)" if held else "")
                + "; it did not isolate why, and its *Run to run* paragraph concludes that the batch's share of its "
                "differences is not established"
            )
    if not said:
        return ""
    return markdown(
        "**Batch or run to run?** "
        + "; ".join(said)
        + ". So these answers were not reproduced bitwise in a batch; how much of that the batch did, and how much "
        "any second run would have done, this recording does not establish."
    )
