"""The server manager and the tokenizer as notebook 06 shows them on any machine: against the FAKE server, and
loaded as vLLM loads them."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from flexfix.integration.serving.client import complete_alone
from flexfix.integration.serving.manager import ServerError, VllmServer, group_members
from flexfix.integration.serving.scenarios import requests_for

__all__ = ["tokenizer_check", "manager_demo", "manager_view", "TIMES"]


def tokenizer_check(model_dir: str | os.PathLike, texts: Sequence[str] = ("Hello, world!", "def f(x): return 2 * x")):
    """Load the model directory's tokenizer as vLLM does (``AutoTokenizer``, local files only): size,
    special ids, and a round trip per text."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    rows = []
    for text in texts:
        ids = tok(text)["input_ids"]
        rows.append(
            {
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids, skip_special_tokens=True),
                "round_trip": tok.decode(ids, skip_special_tokens=True) == text,
                "ids_below_vocab": max(ids) < config["vocab_size"],
            }
        )
    summary = {
        "len(tokenizer)": len(tok),
        "config vocab_size": config["vocab_size"],
        "bos": (tok.bos_token, tok.bos_token_id, config.get("bos_token_id")),
        "eos": (tok.eos_token, tok.eos_token_id, config.get("eos_token_id")),
    }
    return summary, pd.DataFrame(rows)


def manager_demo(
    model_dir: str | os.PathLike, fake_server: str | os.PathLike, log_dir: str | os.PathLike
) -> pd.DataFrame:
    """The manager's cases against the FAKE server: healthy (one completion, then stopped), exits at
    start, never healthy, ignores SIGTERM; what each did, its exit status (with the signal that ended it, if one
    did), the seconds to healthy, of importing the ``openai`` client just before the completion (timed apart, so
    that the first case's import is not counted in its completion), of the one completion (``n/a`` where none was
    sent), of the stop alone (SIGTERM to the group gone: the grace period shows there; ``n/a`` where the server had
    exited before the SIGTERM) and from the start to the server stopped (launch, health, import, completion and stop
    together), and whether any process of its group was left; each case's startup timeout and grace period (SIGTERM
    to SIGKILL) beside it."""
    cases = [
        ("healthy", [], 10),
        ("exit_at_start", ["--mode", "exit_at_start"], 10),
        ("never_healthy", ["--mode", "never_healthy"], 2),
        ("ignore_sigterm", ["--mode", "ignore_sigterm"], 10),
    ]
    rows = []
    imported_before = "openai" in sys.modules  # an earlier cell (vLLM's import brings it in) may have imported it
    for case, extra, timeout in cases:
        server = VllmServer(
            model_dir,
            log_path=Path(log_dir) / f"manager-{case}.log",
            startup_timeout=timeout,
            grace=1.0,
            launcher=(sys.executable, str(fake_server), *extra),
            env={"FLEXFIX_PATCH": "1", "VLLM_BATCH_INVARIANT": "1"},
        )
        start, what, completion, imported = time.monotonic(), "", None, None
        try:
            with server:
                imported = _import_seconds("openai")  # timed apart: the first case's import is not its completion
                begun = time.monotonic()
                out = complete_alone(server.base_url, requests_for("tiny", 1), max_tokens=4)[0]
                completion = time.monotonic() - begun
                answered = f"answered, tokens {out['tokens']}" if out["ok"] else f"failed: {out.get('error', '?')}"
                what = f"healthy; one completion {answered}"
        except ServerError as exc:
            what = f"ServerError: {str(exc).splitlines()[0].split(' (')[0]}; log: {server.log_tail(1)[-1:]}"
        rows.append(
            {
                "case": case,
                "what happened": what,
                "startup timeout, s": timeout,
                "grace, s": server.grace,  # from the manager's SIGTERM to its SIGKILL
                "exit status": _status(server.returncode),
                "seconds to healthy": "never" if server.startup_seconds is None else round(server.startup_seconds, 3),
                # n/a: no completion was sent (the server was never healthy)
                # the client library's import, timed just before the completion: 0.0 once an earlier case imported it
                "seconds importing openai": "n/a" if imported is None else round(imported, 3),
                # every time to the ms (shown so by manager_view): the sentence under the table compares the completions
                "seconds of the completion": "n/a" if completion is None else round(completion, 3),
                # n/a: the server had exited before the manager's SIGTERM (exit_at_start): there was nothing to stop
                "seconds, SIGTERM to stopped": "n/a" if server.exited_before_stop else round(server.stop_seconds, 3),
                "seconds, start to stopped": round(time.monotonic() - start, 3),
                "processes left": len(group_members(server.pid)),
            }
        )
    demo = pd.DataFrame(rows)
    demo.attrs["openai imported before"] = imported_before  # read by the sentence under the manager's table
    return demo


TIMES = (
    "seconds to healthy",
    "seconds importing openai",
    "seconds of the completion",
    "seconds, SIGTERM to stopped",
    "seconds, start to stopped",
)


def manager_view(demo: pd.DataFrame) -> pd.DataFrame:
    """The manager's table as shown: every timing column (:data:`TIMES`) with the same three decimals (``1.100``,
    not ``1.1`` beside ``0.143``), its words (``n/a``, ``never``) as they are; the table itself stays numbers."""
    shown = demo.copy()
    for column in [c for c in TIMES if c in shown]:
        shown[column] = [f"{v:.3f}" if isinstance(v, (int, float)) else v for v in shown[column]]
    return shown


def _import_seconds(module: str) -> float:
    """How long importing ``module`` takes here: its first import in this process, 0.0 (near) once imported."""
    import importlib

    begun = time.monotonic()
    importlib.import_module(module)
    return time.monotonic() - begun


def _status(code: int | None) -> str:
    """A server's exit status in words: a negative one is the signal that ended it (``-9``: SIGKILL, the manager's
    last resort after the grace period)."""
    if code is None:
        return "none (still running)"
    if code < 0:
        try:
            return f"{code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"{code} (killed by signal {-code})"
    return str(code)
