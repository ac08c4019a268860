"""The guard's served scenarios in words (notebook 07's *Serving* section): what ``FLEXFIX_GUARD=error`` and
``eager`` did to a server, and which servers answered bitwise the same, every number and name read from the
recorded serving rows (:func:`flexfix.edition.tables.guard.served`) and their comparison
(:func:`flexfix.edition.tables.guard.servers_agree`)."""

from __future__ import annotations

import pandas as pd

from flexfix.edition.narrative import listing, markdown
from flexfix.edition.narrative.guard import WORDS, _need, equal_in_batches

__all__ = ["serving", "DISPATCH_NOW", "capture_sizes", "in_short", "PAIRS"]

# the servers notebook 07 compares, answer by answer: the guarded stock server in eager mode with a patched one, and
# two patched servers with each other
PAIRS = (("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again"))

# said before the dispatch table of the recorded servers: that table is not in the recording
DISPATCH_NOW = (
    "what vLLM's CudagraphDispatcher runs each batch with: computed now, from the recorded arguments, by the "
    "installed vLLM (the servers recorded no dispatch)"
)


def serving(table: pd.DataFrame, agree: pd.DataFrame) -> str:
    """``table``: the guard's serving rows; ``agree``: :func:`flexfix.edition.tables.guard.servers_agree`."""
    _need(table, ["scenario", "model", "status", "guard_refused_in_log", "ima_in_log", "records"], "serving")
    _need(agree, ["servers", "concurrent requests", "bitwise equal", "of"], "serving")
    rows = table.set_index("scenario")
    said = []
    if "guard_error" in rows.index:
        r = rows.loc["guard_error"]
        together = [s for s in r["records"] if s.get("stage") == "together"]
        refused = [s for s in together if s.get("errored")]
        skipped = [s["requests"] for s in together if s.get("skipped")]
        said.append(
            f"under `FLEXFIX_GUARD=error` the server {WORDS.get(r['status'], r['status'])}: "
            + listing(
                [f"{s['errored']} of {s['requests']} concurrent completions answered {_errors(s)}" for s in refused]
            )
            + (f" (the batch of {listing(skipped)} was not sent: the server had stopped)" if skipped else "")
            + f"; its log {'has' if r['guard_refused_in_log'] else 'lacks'} the guard's refusal and "
            f"{'names' if r['ima_in_log'] else 'names no'} CUDA illegal memory access"
        )
    same = bool((agree["bitwise equal"] == agree["of"]).all())
    if same:  # the conclusion only: the counts are the agreement table's
        sizes = listing([str(int(n)) for n in dict.fromkeys(agree["concurrent requests"])])
        agreed = (
            f"every request of every batch ({sizes} at once) was answered bitwise the same by both servers of each "
            "pair compared (" + "; ".join(dict.fromkeys(agree["servers"])) + "; the agreement table counts them)"
        )
    else:
        per_pair = []
        for servers, pair in agree.groupby("servers", sort=False):
            per_pair.append(f"{servers}: {equal_in_batches(pair, 'concurrent requests')}")
        agreed = "; ".join(per_pair)
    return markdown(
        "**Served, `error` stops the engine, and with it the server, at the first refused replay; `eager` keeps the "
        "server answering, with the patched server's answers**: "
        + "; ".join(said)
        + ". Its clients got the HTTP 500 that a stock server without the guard gives (notebook 06's stock scenario); "
        "what the guard changed is the log, which names the field instead of an illegal memory access. `error` is "
        "for finding the bug; `eager` is for a server that must keep answering.",
        f"Requests answered bitwise the same by two servers (same requests, same batches): {agreed}."
        + (" Two servers agreeing is not batch invariance: each pair answered the same batch the same way." * same)
        + _alone(rows),
    )


def _alone(rows: pd.DataFrame) -> str:
    """What each server's comparison of every request of a batch with the same request sent alone found (the stage
    table's ``compared`` and ``bitwise_equal``), on the model its row names; the servers that compared none."""
    equal, other, none, servers, sizes = [], [], [], [], []
    for name, r in rows.iterrows():
        together = [s for s in r["records"] if s.get("stage") == "together" and not s.get("skipped")]
        for s in together:
            count = f"{name} {s.get('bitwise_equal', 0)} of {s['compared']} in a batch of {s['requests']}"
            if s.get("compared"):
                (equal if s.get("bitwise_equal") == s["compared"] else other).append(count)
                servers += [name] * (name not in servers)
                sizes += [str(s["requests"])] * (str(s["requests"]) not in sizes)
        if together and not any(s.get("compared") for s in together):
            answered = listing([f"{s.get('ok', 0)} of {s['requests']}" for s in together])
            none.append(f"{name} compared none ({answered} concurrent requests answered)")
    if not equal and not other and not none:
        return ""
    models = listing([f"`{m}`" for m in dict.fromkeys(rows["model"])])
    if equal and not other:  # the conclusion only: the counts are the stage table's
        every = f"all {len(servers)} answering servers" if len(servers) > 2 else "both answering servers"
        every = every if len(servers) > 1 else "the answering server"
        parts = [
            f"every batched answer was bitwise equal to the same request alone in {every} "
            f"({listing(servers)}, batches of {listing(sizes)})"
        ]
    else:
        parts = [f"bitwise equal: {listing(equal)}"] * bool(equal)
        parts += [f"not all bitwise equal: {listing(other)}"] * bool(other)
    return (
        " The servers also compared each request of a batch with the same request sent alone (the stage table's "
        f"`compared` and `bitwise_equal`), on the {models} model{'s' * (len(set(rows['model'])) > 1)}; "
        + "; ".join(parts + none)
        + "."
        + _no_variance(rows, bool(equal) and not other)
    )


def _no_variance(rows: pd.DataFrame, all_equal: bool) -> str:
    """Where every server that compared ran ``VLLM_BATCH_INVARIANT=0`` and every compared request came out bitwise
    equal: why that is no contradiction of notebook 06, whose ``VLLM_BATCH_INVARIANT=0`` server moved logprobs."""
    if not all_equal or "VLLM_BATCH_INVARIANT" not in rows:
        return ""
    compared = [n for n, r in rows.iterrows() if any(s.get("compared") for s in r["records"])]
    if not compared or {str(rows.loc[n, "VLLM_BATCH_INVARIANT"]) for n in compared} != {"0"}:
        return ""
    models = listing([f"`{m}`" for m in dict.fromkeys(rows.loc[compared, "model"])])
    return (
        f" Every one of these servers ran with `VLLM_BATCH_INVARIANT=0`, which lets a request's answer depend on its "
        f"batch without making it: on the {models} model these batches showed no batch variance, where notebook 06's "
        "`patched_bi0` server, on the `variance` model (the config made so that batch variance shows, notebook 04), "
        "moved the logprobs of its batched requests."
    )


def _errors(stage: dict) -> str:
    """``HTTP 500`` (every failed request got it), or each answer with how many got it."""
    errors = stage.get("errors") or {}
    if len(errors) == 1 and next(iter(errors.values())) == stage.get("errored"):
        return next(iter(errors))
    return ", ".join(f"{what} ({n})" for what, n in errors.items()) or "errors"


def capture_sizes(cases: pd.DataFrame) -> str:
    """Under a dispatch table (:func:`flexfix.edition.glossary.decode_dispatch`, its ``max_num_seqs`` column): the
    capture sizes the installed vLLM's own rule (``VllmConfig._set_cudagraph_sizes``) sets for each ``max_num_seqs``
    of the table, and why they reach past it: they count a step's tokens, not its requests."""
    from flexfix.edition.glossary import _configured

    _need(cases, ["max_num_seqs"], "capture_sizes")
    lists = []
    for m in dict.fromkeys(int(v) for v in cases["max_num_seqs"]):
        sizes = sorted(_configured(m).compilation_config.cudagraph_capture_sizes)
        lists.append(f"`max_num_seqs` {m}: {', '.join(str(x) for x in sizes)}")
    return markdown(
        "**The capture sizes** (asked now of the installed vLLM's rule, for each `max_num_seqs` of the table): "
        + "; ".join(lists)
        + ". A capture size counts a step's tokens, not its requests. vLLM's default rule captures sizes up to "
        "twice `max_num_seqs` (at most 512, and at most `max_num_batched_tokens`): a step that mixes decode "
        "requests with prompt (prefill) tokens holds more tokens than it has requests, and such a step runs "
        "PIECEWISE graphs; FULL decode graphs exist only for the sizes up to `max_num_seqs`. With these lists, "
        "each row's `padded to` is the next size at or above its batch."
    )


def in_short(data_dir) -> str:
    """Notebook 06's takeaway of notebook 07's *Serving* recording, read from it: what the guarded stock server in
    ``error`` mode answered its concurrent batches, and how many requests the compared servers answered alike."""
    from flexfix.edition.tables import guard as guard_tables

    table, _ = guard_tables.served(data_dir)
    agree = guard_tables.servers_agree(table, [p for p in PAIRS if set(p) <= set(table["scenario"])])
    _need(agree, ["servers", "concurrent requests", "bitwise equal", "of"], "in_short")
    rows = table.set_index("scenario")
    said = []
    if "guard_error" in rows.index:
        stages = [s for s in rows.loc["guard_error", "records"] if s.get("stage") == "together" and s.get("errored")]
        said.append(
            "the stock 0.20.0 server under the guard in `error` mode answered "
            + (
                listing([f"{s['errored']} of {s['requests']} concurrent requests {_errors(s)}" for s in stages])
                or "no concurrent request with an error"
            )
        )
    pairs = [f"{servers}, {equal_in_batches(pair, 'concurrent requests')}" for servers, pair in
             agree.groupby("servers", sort=False)]  # fmt: skip
    if pairs:
        said.append(
            "requests answered bitwise the same by two servers (`guard_eager`: the stock server under the guard in "
            "`eager` mode; `patched_`: the fix, `FLEXFIX_PATCH=1`): " + "; ".join(pairs)
        )
    models = listing([f"`{m}`" for m in dict.fromkeys(table["model"])])
    return markdown(
        f"**Does the fix remove the crash, on one model?** Notebook 07's *Serving* recording answers it on the "
        f"{models} model, with the same requests for every server: " + "; ".join(said) + "."
    )
