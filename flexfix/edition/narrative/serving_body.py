"""Notebook 06's HTTP 500 bodies: the one the FAKE server writes, printed raw, against the errors the clients of
this run and of the recorded real server printed, and the ``openai`` client versions known of each.

What is shown, no more: the FAKE body (``ENGINE_DEAD_BODY`` of the FAKE server's script), whether the recorded
error's object equals it, in which form each run's client printed its errors (the whole object or its message
only), this run's ``openai`` version, and the recorded run's where its provenance kept one."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from importlib import metadata

import pandas as pd

from flexfix.edition.narrative import listing, markdown

__all__ = ["error_bodies", "fake_body", "printed_forms"]

_PRINTED = re.compile(r"Error code: 500 - (.+)$", re.S)


def fake_body(fake_server: str) -> dict:
    """``ENGINE_DEAD_BODY`` of the FAKE server script at ``fake_server``: the body of each of its HTTP 500s."""
    spec = importlib.util.spec_from_file_location("_flexfix_fake_vllm_server", fake_server)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ENGINE_DEAD_BODY


def printed_forms(table: pd.DataFrame) -> list:
    """The distinct HTTP 500 payloads the clients of ``table`` printed (after ``Error code: 500 - ``): a dict where
    the client printed the whole error object, a string where it printed only the message."""
    from flexfix.edition.tables.serving import error_summary

    errors = error_summary(table)
    found = []
    for text in errors.loc[errors["status_code"].astype(str) == "500", "error"]:
        match = _PRINTED.search(str(text))
        if not match:
            continue
        try:
            payload = ast.literal_eval(match.group(1).strip())
        except (ValueError, SyntaxError):
            payload = match.group(1).strip()
        if payload not in found:
            found.append(payload)
    return found


def _form(payloads: list, body: dict) -> str:
    message = body["error"]["message"]
    words = []
    for p in payloads:
        if isinstance(p, dict):
            same = "equal to the FAKE body, field for field" if p == body else "not equal to the FAKE body"
            words.append(f"the whole error object ({same})")
        else:
            same = "the FAKE body's message" if p == message else "not the FAKE body's message"
            words.append(f"only a message ({same})")
    return listing(words) if words else "no HTTP 500"


def _openai_version() -> str:
    try:
        return metadata.version("openai")
    except metadata.PackageNotFoundError:
        return "not installed"


def error_bodies(this_run: pd.DataFrame, recorded: pd.DataFrame | None, recorded_prov: dict | None, fake_server: str):
    """The FAKE server's HTTP 500 body, printed raw, and what the clients of this run and of the recorded run
    printed of their HTTP 500s, with the ``openai`` version of each where it is known."""
    body = fake_body(fake_server)
    from flexfix.edition.tables.serving import SERVED_BY, error_summary

    by = error_summary(this_run)[SERVED_BY].astype(str)
    served = "the FAKE server" if len(by) and by.str.startswith("FAKE").all() else "this run's servers"
    parts = [
        "**The HTTP 500 bodies.** The FAKE server answers every request of a dead 'engine' with this body "
        f"(`ENGINE_DEAD_BODY` of its script, sent as JSON):\n\n```\n{json.dumps(body)}\n```",
    ]
    mine = printed_forms(this_run)
    said = (
        f"This run's client (`openai` {_openai_version()}) printed, of the HTTP 500s of {served}, {_form(mine, body)}."
    )
    if recorded is not None:
        theirs = printed_forms(recorded)
        version = (recorded_prov or {}).get("openai") or ((recorded_prov or {}).get("parameters") or {}).get("openai")
        client = f"`openai` {version}" if version else "whose `openai` version the recording did not keep"
        said += f" The recorded real server's client ({client}) printed {_form(theirs, body)}."
        kinds = {type(p) for p in mine} | {type(p) for p in theirs}
        if mine and theirs and len(kinds) > 1:
            said += (
                " The two clients printed their errors in different forms; which client setting or version decides "
                "the form is not shown by these runs."
            )
    parts.append(said)
    return markdown(*parts)
