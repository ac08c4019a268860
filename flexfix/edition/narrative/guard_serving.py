"""The guard's served scenarios in words (notebook 07's *Serving* section): what ``FLEXFIX_GUARD=error`` and
``eager`` did to a server, and which servers answered bitwise the same, every number and name read from the
recorded serving rows (:func:`flexfix.edition.tables.guard.served`) and their comparison
(:func:`flexfix.edition.tables.guard.servers_agree`)."""

from __future__ import annotations

import re

import pandas as pd

from flexfix.edition.narrative import guard_dispatch, guard_servers, listing, markdown
from flexfix.edition.narrative.guard import WORDS, _need, equal_in_batches

__all__ = ["serving", "DISPATCH_NOW", "capture_sizes", "recorded_sizes", "in_short", "PAIRS"]

# the servers notebook 07 compares, answer by answer: the guarded stock server in eager mode with a patched one, and
# two patched servers with each other
PAIRS = (("guard_eager", "patched_tiny"), ("patched_tiny", "patched_tiny_again"))

# said before the dispatch table of the recorded servers: that table is not in the recording
DISPATCH_NOW = (
    "what vLLM's CudagraphDispatcher runs each batch with: computed now, from the recorded arguments, by the "
    "installed vLLM (the servers recorded no dispatch)"
)


def serving(table: pd.DataFrame, agree: pd.DataFrame, data_dir=None, served_prov: dict | None = None) -> str:
    """``table``: the guard's serving rows; ``agree``: :func:`flexfix.edition.tables.guard.servers_agree`;
    ``data_dir``: where notebook 06's recording is, whose stock server without the guard the ``error`` server's
    clients' errors are compared with (without it, or without such a server, they are not compared);
    ``served_prov``: the provenance of ``table``'s recording, to say where the two servers compared ran."""
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
        + ". "
        + guard_servers.clients(
            table, data_dir, served_prov
        ),  # r20 D8: what each mode is for, said once, before the tables
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
        f"batch without making it: on the {models} model no request answered otherwise in these batches than alone, "
        "where notebook 06's `patched_bi0` server, on the `variance` model (on which notebook 04 saw "
        "`VLLM_BATCH_INVARIANT=0` engines vary even for the same request alone run again), answered its batched "
        "requests with other logprobs than alone (how much of that was the batch's doing, its recording does not "
        "establish: notebook 06's *Batch or run to run?*)."
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
    of the table, and why they reach past it: they count a step's tokens, not its requests.  Where the recorded
    engines ran another list, :func:`recorded_sizes` says so, under it."""
    _need(cases, ["max_num_seqs"], "capture_sizes")
    if cases.attrs.get("capture_sizes"):  # computed with the engines' own list: that list, and the default in brief
        return guard_dispatch.engine_sizes(cases)
    lists = []
    for m in dict.fromkeys(int(v) for v in cases["max_num_seqs"]):
        sizes = _default_sizes(m)
        lists.append(f"`max_num_seqs` {m}: {', '.join(str(x) for x in sizes)}")
    return markdown(
        "**The capture sizes of vLLM's default rule** (asked now of the installed vLLM, for each `max_num_seqs` of "
        "the table): "
        + "; ".join(lists)
        + ". A capture size counts a step's tokens, not its requests (a decode step holds one token per request). "
        "vLLM's default rule captures sizes up to twice `max_num_seqs` (at most 512, and at most "
        "`max_num_batched_tokens`, the most tokens vLLM schedules into one step, another `vllm serve` argument): "
        "a step that mixes decode requests with prompt (prefill) tokens holds more "
        "tokens than it has requests, and such a step runs PIECEWISE graphs; FULL decode graphs exist only for the "
        "sizes up to `max_num_seqs`. With these lists, each row's `padded to` is the next size at or above its batch."
    )


def _default_sizes(max_num_seqs: int) -> list[int]:
    from flexfix.edition.glossary import _configured

    return sorted(_configured(max_num_seqs).compilation_config.cudagraph_capture_sizes)


def _next(sizes, batch: int) -> int | None:
    return next((s for s in sorted(sizes) if s >= batch), None)


def recorded_sizes(cases: pd.DataFrame, engines) -> str:
    """What the recorded engines' own capture list (:data:`flexfix.measure.engine_sweep.CAPTURE_SIZES`, passed as
    ``cudagraph_capture_sizes``, which replaces vLLM's default rule) gives: FULL decode graphs at its sizes up to
    ``max_num_seqs``, compared with the FULL graphs each engine's guard counted (``graphs_captured``); and each row of
    ``cases`` padded and dispatched with that list instead of the default one.  ``engines``: recorded engine tables
    (rows with ``records``)."""
    from flexfix.edition.tables.guard import guard_summary, max_num_seqs
    from flexfix.measure.engine_sweep import CAPTURE_SIZES

    _need(cases, ["max_num_seqs", "decode batch", "padded to", "runs with"], "recorded_sizes")
    if cases.attrs.get("capture_sizes"):  # the table is that list's already: only the engines' counts to check
        return guard_dispatch.graph_counts(cases, engines)
    sizes = sorted(CAPTURE_SIZES)
    counted: dict[int, set[int]] = {}
    wrong = []
    for table in engines:
        for _, r in table.iterrows():
            captured = guard_summary(r["records"]).get("graphs_captured")
            if not captured:
                continue  # no guard, or it saw no capture: nothing to check
            m = max_num_seqs(r)
            counted.setdefault(m, set()).add(int(captured))
            if int(captured) != len([s for s in sizes if s <= m]):
                wrong.append(f"{r.get('engine')} counted {captured}")
    per = [f"{len([s for s in sizes if s <= m])} for `max_num_seqs` {m}" for m in sorted(counted)]
    default = [f"{len([s for s in _default_sizes(m) if s <= m])}" for m in sorted(counted)]
    agree = (
        f"the guard counted exactly that many FULL graphs captured in every engine of the table below and of *No "
        f"false alarms* (the `graphs captured` column of its tables): {listing(per)}, where the default lists "
        f"would give {listing(default)}"
        if counted and not wrong
        else "the guard's counts of captured FULL graphs differ from that list in " + listing(wrong)
        if wrong
        else "no engine here recorded how many graphs it captured"
    )
    changed = []
    for _, r in cases.iterrows():
        m, b = int(r["max_num_seqs"]), int(r["decode batch"])
        padded = _next(sizes, b)
        mode = "NONE" if padded is None else "FULL" if padded <= m else "PIECEWISE"
        if padded != r["padded to"] or mode != r["runs with"]:
            changed.append(f"{b} in max_num_seqs {m} pads to {padded} and runs with {mode}")
    redone = (
        "With that list every row's batch pads to the same size, and runs with the same graph, as the table says"
        if not changed
        else "With that list the table's rows change: " + listing(changed)
    )
    return markdown(
        "**The recorded engines did not run with the default lists**: flexfix's engine runs pass vLLM "
        f"`cudagraph_capture_sizes` = {sizes} (`flexfix.measure.engine_sweep.CAPTURE_SIZES`), which replaces the "
        "default rule, so an engine holds a FULL decode graph only at those of its sizes up to `max_num_seqs`; "
        f"{agree}. {redone}."
    )


def in_short(data_dir) -> str:
    """Notebook 06's takeaway of notebook 07's *Serving* recording, read from it: the plain answer first (where this
    notebook's recorded stock server and notebook 07's patched servers ran the same model: what each answered, and
    where each was recorded, the guarded stock server in ``error`` mode among its table's rows), then how many
    requests the compared servers answered alike."""
    from flexfix.edition.tables import guard as guard_tables

    table, prov = guard_tables.served(data_dir)
    agree = guard_tables.servers_agree(table, [p for p in PAIRS if set(p) <= set(table["scenario"])])
    _need(agree, ["servers", "concurrent requests", "bitwise equal", "of"], "in_short")
    rows = table.set_index("scenario")
    patched = [n for n in rows.index if str(n).startswith("patched")]
    models = listing([f"`{m}`" for m in dict.fromkeys(table["model"])])
    pairs = (  # r22 D1: the guarded stock server's errors are the table's row, not said again under it
        f" Notebook 07's *Serving* recording ran every server on the {models} model, with the same requests, and "
        "compared pairs of them request by request (`guard_eager`: the stock server under the guard in `eager` "
        f"mode; {listing([f'`{n}`' for n in patched], ' / ')}: the fix, `FLEXFIX_PATCH=1`): {_pairs_said(agree)}."
        if len(agree)
        else ""
    )
    return markdown(
        "**Does the fix remove the crash, on one model?** " + _plain_answer(data_dir, rows, patched, prov) + pairs
    )


def _pairs_said(agree: pd.DataFrame) -> str:
    """The compared pairs of servers in one clause: where every pair answered every request of every batch bitwise
    alike, the pairs and the counts once; otherwise each pair with its counts."""
    names = list(dict.fromkeys(agree["servers"]))
    one = agree.drop_duplicates(["concurrent requests", "of"])
    if bool((agree["bitwise equal"] == agree["of"]).all()) and len(one) * len(names) == len(agree):
        both = "both pairs" if len(names) == 2 else ("the pair" if len(names) == 1 else f"all {len(names)} pairs")
        return f"{both} ({listing(names)}) answered every request bitwise alike, in each pair " + equal_in_batches(
            one, "concurrent requests"
        )
    return "; ".join(
        f"{servers}, {equal_in_batches(pair, 'concurrent requests')}"
        for servers, pair in agree.groupby("servers", sort=False)
    )


def _where(prov: dict) -> str:
    return f"on {guard_servers._where(prov)}"


def _together(records) -> list[dict]:
    return [s for s in records if s.get("stage") == "together" and not s.get("skipped")]


def _plain_answer(data_dir, guarded: pd.DataFrame, patched: list[str], guard_prov: dict) -> str:
    """Yes or not shown, from this notebook's recorded stock server (``serve-cuda.json``) and notebook 07's patched
    servers on the same model: what each answered its concurrent batches, and where each was recorded."""
    from flexfix.edition.results import results_path

    stock_path = results_path(data_dir, "serve", "cuda")
    if not stock_path.exists() or not patched:
        return "This notebook's stock server or notebook 07's patched servers are not recorded: not answered here."
    from flexfix.edition import schemas  # what flexfix.integration.serving.recorded_run reads: no import cycle

    served, prov = schemas.recorded(data_dir, "serve", schemas.SERVING)
    stock = served[served["scenario"] == "stock"]
    if not len(stock):
        return "This notebook's recording has no stock server: not answered here."
    stock = stock.iloc[0]
    mine = [n for n in patched if guarded.loc[n, "model"] == stock["model"]]
    if not mine:
        return f"Notebook 07's patched servers ran no `{stock['model']}` model, the stock server's: not answered here."
    crashed = [s for s in _together(stock["records"]) if s.get("errored")]
    answered = [s for n in mine for s in _together(guarded.loc[n, "records"])]
    whole = all(s.get("ok") == s["requests"] and not s.get("errored") for s in answered)
    alone = all(s.get("compared") and s.get("bitwise_equal") == s["compared"] for s in answered)
    sizes = listing(sorted({str(s["requests"]) for s in answered}, key=int))
    stock_said = (
        "the stock server (`stock`) failed "
        + listing([f"{s['errored']} of {s['requests']} concurrent requests" for s in crashed])
        + (", its log naming CUDA's illegal memory access" if str(stock.get("ima_in_log")) == "True" else "")
        if crashed
        else "the stock server (`stock`) failed no concurrent request"
    )
    patched_said = (
        f"the patched {'servers' if len(mine) > 1 else 'server'} ({listing([f'`{n}`' for n in mine], ' / ')}) "
        + ("answered every request of the batches of " if whole else "did not answer every request of the batches of ")
        + sizes
        + (", each bitwise the same as the same request alone" if whole and alone else "")
    )
    lead = "Yes, by combining two recordings, on" if crashed and whole else "Not shown by these recordings, on"
    rows = [("`stock`, this notebook's recorded run", prov, stock_said.split(") ", 1)[-1])]
    for n in mine:
        got = _together(guarded.loc[n, "records"])
        said = listing([f"{s.get('ok', 0)} of {s['requests']}" for s in got]) + " concurrent requests answered"
        equal = all(s.get("compared") and s.get("bitwise_equal") == s["compared"] for s in got)
        rows.append((f"`{n}`, notebook 07's *Serving*", guard_prov, said + (", bitwise as alone" * equal)))
    same = ""
    if "guard_error" in guarded.index:
        refused = [s for s in _together(guarded.loc["guard_error", "records"]) if s.get("errored")]
        moved = _moved(guarded.loc["guard_error"].get("guard_lines"))
        if refused:
            said = listing([f"{s['errored']} of {s['requests']} concurrent requests {_errors(s)}" for s in refused])
            rows.insert(
                1,
                (
                    "`guard_error` (stock, guard in `error` mode), notebook 07's *Serving*",
                    guard_prov,
                    f"{said}: its guard refused a FULL replay" + (f" ({moved})" if moved else ""),
                ),
            )
            same = (
                " On the machine and commit of the patched servers, a stock server (`guard_error`, the same model and "
                "requests, its replay guard in `error` mode) refused a FULL graph replay"
                + (f" whose {moved}" if moved else "")
                + ": the same-machine evidence that a stock engine there would replay a graph that misreads."
            )
    table = "| server | recorded on | result |\n|---|---|---|\n" + "\n".join(
        f"| {who} | {_where(p)[3:]} | {what} |" for who, p, what in rows
    )
    apart = (
        "The crash and the fix come from two recordings, on different machines or commits (the table's `recorded on`)."
        if _where(prov) != _where(guard_prov)
        else "The crash and the fix come from two recordings, on the same machine and commit."
    )
    return (
        f"{lead} the `{stock['model']}` model: {stock_said} (this notebook's recorded run, {_where(prov)}); "
        f"{patched_said} (notebook 07's *Serving* recording, {_where(guard_prov)}). {apart}{same}"
        f"{guard_servers.same_gpu_crash(data_dir, stock['model'], guard_prov)}\n\n{table}\n\n"
        "The recordings this answer reads, each by its provenance line:\n\n"
        + guard_servers.provenance_lines(
            [("`stock`, this notebook's *The recorded GPU run*", prov), ("notebook 07's *Serving*", guard_prov)],
            data_dir,
            stock["model"],
        )
        + "\n\n"
    )


def _moved(lines) -> str:
    """The first field a guard line says moved, with its strides then and now (``kv_indices: strides (..) -> (..)``
    in the recorded log lines), or "" where no line says so."""
    for line in lines if isinstance(lines, list) else []:
        found = re.search(r"(\w+): strides (\([\d, ]+\)) -> (\([\d, ]+\))", str(line))
        if found:
            return f"`{found[1]}` strides moved from {found[2]} to {found[3]}"
    return ""
