"""How far notebook 06's serving recording can put its moved logprobs down to the batch (r0607 round 20, B1),
against notebook 04's run-to-run finding on the same configuration; the requests a server was sent in more than one
batch are counted as the repeats they are (round 22, A2), and notebook 04's two paragraphs are each cited for what
it says (round 22, A3)."""

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


def _in_every_batch(mine: pd.DataFrame, sizes: list[int]) -> tuple[list[int], int, int]:
    """The concurrent batch sizes a server ran (``sizes``; ``mine``: its together rows of
    :func:`flexfix.edition.tables.serving.differences`), and, of the
    requests sent in every one of them (requests 0 to the smallest batch), how many came out with another largest
    logprob difference from alone, or other tokens, in one batch than in another (so their batched answers differed
    from each other too), and how many with the same in every batch (the same maximum: not shown to be one answer).
    A request not among the differences was bitwise equal to alone in that batch."""
    sizes = sorted(sizes)
    if len(sizes) < 2:
        return sizes, 0, 0
    said: dict[int, dict[int, tuple[bool, float]]] = {n: {} for n in sizes}
    for _, d in mine.iterrows():
        said[int(d["requests"])][int(d["index"])] = (bool(d["tokens_equal"]), float(d["max_abs_logprob_diff"]))
    apart = same = 0
    for i in range(sizes[0]):
        seen = {said[n].get(i, (True, 0.0)) for n in sizes}
        apart, same = (apart + 1, same) if len(seen) > 1 else (apart, same + 1)
    return sizes, apart, same


def _repeats(sizes: list[int], apart: int, same: int) -> str:
    """The requests sent in every batch of ``sizes``, in words (empty where the server ran one batch size)."""
    if len(sizes) < 2:
        return ""
    batches = listing([str(n) for n in sizes])
    text = (
        f"Its requests 0–{sizes[0] - 1} ran {len(sizes) + 1} times, alone and in each batch (of {batches}), "
        "but the recording compares each batched answer with the alone one only, not the batched answers with each "
        f"other; of these {sizes[0]} requests, {apart} came out with another largest logprob difference from alone, "
        "or other tokens, in one batch than in another, so their batched answers differed from each other too"
    )
    if same:
        text += f", and {same} with the same in every batch (the same maximum, not shown to be the same answer)"
    return text


def batch_or_run(table: pd.DataFrame, stages: pd.DataFrame, data_dir) -> str:
    """After the recorded scenarios: for each real server whose batched answers differed from the same request
    alone, what that comparison shows (not reproduced bitwise in a batch) and what it does not (that the batch did
    it): its requests sent in more than one batch, compared with alone only; its one repeat alone, the stream stage;
    and notebook 04, which saw the same configuration differ with no batch at all (greedy) and could not tell the
    batch's share (seeded). Empty where no real server's batched answers differed."""
    from flexfix.edition.narrative.serving import _counts, is_fake, model_label
    from flexfix.edition.tables.serving import differences

    found = differences(table)
    sampling = _sampling(data_dir)
    said = []
    for _, sc in table.iterrows():
        c = _counts(stages[stages["scenario"] == sc["scenario"]])
        if is_fake(sc) or not c["batched"] or c["batched_equal"] == c["batched"]:
            continue
        mine = found[(found["scenario"] == sc["scenario"]) & (found["stage"] == "together")]
        ran = stages[(stages["scenario"] == sc["scenario"]) & (stages["stage"] == "together")]
        sizes = [int(n) for n, s in zip(ran["requests"], ran["skipped"].fillna("")) if not s]
        again = _repeats(*_in_every_batch(mine, sizes))
        equal = "bitwise equal" if c["streamed_equal"] == c["streamed"] else f"{c['streamed_equal']} bitwise equal"
        alone = (
            f"its only repeat of a request alone, the `stream` stage ({plural(c['streamed'], 'answer')}, {equal} to "
            "the non-streamed one), is a single control, no measure of run-to-run variation"
            if c["streamed"]
            else "it repeats no request alone, so it has no control for run-to-run variation"
        )
        said.append(
            f"`{sc['scenario']}`'s {c['batched'] - c['batched_equal']} differing batched answers each compare one "
            f"run in a batch with one run alone. " + (f"{again}. " if again else "") + alone[0].upper() + alone[1:]
        )
        label, bi = model_label(sc), sc.get("VLLM_BATCH_INVARIANT")
        needle = _notebook04(data_dir) if label and pd.notna(bi) else None
        engine = f"{label}, BI={bi}, full graphs"
        again_04 = _alone_again(needle, engine) if needle is not None else {}
        differed = [s for s, equal in again_04.items() if not equal]
        if differed:
            held = [s for s, equal in again_04.items() if equal]
            mode = next((s for s in again_04 if sampling.startswith(s)), None)
            said[-1] += (
                f". Notebook 04 ran this model with `VLLM_BATCH_INVARIANT={bi}` and full graphs as offline engines "
                f"(its `{engine}`): with {listing(differed)} sampling even the same request alone a second time "
                "differed, so its *Run to run* paragraph does not put those rows' differences down to the batch alone"
                + (
                    f"; with {listing(held)} sampling its one repeat alone came out equal, and its *With the batch* "
                    "paragraph concludes that the batch's share of those rows' differences is not established"
                    if held
                    else ""
                )
                + (f" (this recording's requests sampled {mode}, as those rows did)" if mode in held else "")
            )
    if not said:
        return ""
    return markdown(
        "**Batch or run to run?** "
        + ". ".join(said)
        + ". So these answers were not reproduced bitwise in a batch; how much of that the batch did, and how much "
        "any second run would have done, this recording does not establish."
    )


def _sampling(data_dir) -> str:
    """How the recorded run's requests sampled, as its provenance saved it (``seeded, seed 2000+i, ...``), or ""."""
    from flexfix.integration.serving.recording import recorded_run

    loaded = recorded_run(data_dir) if data_dir is not None else None
    return str(((loaded[1].get("parameters") or {}).get("sampling") or "") if loaded is not None else "")
