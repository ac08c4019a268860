"""A FAKE ``vllm serve`` for CPU tests: the standard library only, no model, deterministic answers.

Started like vLLM (``python tests/fake_vllm_server.py [FAKE OPTIONS] serve MODEL --host H --port P
[vLLM options, ignored]``), it serves:

* ``GET /health``: 200 once up (503 forever with ``--mode never_healthy``);
* ``POST /v1/completions`` in the OpenAI format, non-streaming and ``stream=True`` (server-sent events),
  with ``logprobs`` (tokens as ``token_id:N`` when ``return_tokens_as_token_ids``), ``ignore_eos``,
  ``max_tokens``, ``seed``: the tokens and logprobs are a hash of (prompt, seed), so a request gives
  the same answer alone or among others -- unless perturbed (below).

Modes (``--mode``): ``healthy``; ``never_healthy``; ``exit_at_start`` (prints a few lines and exits 3
before listening); ``ignore_sigterm`` (healthy, but SIGTERM is ignored: only SIGKILL stops it);
``grandchild`` (healthy, and starts a grandchild that ignores SIGTERM and sleeps).

Requests are answered in batches: a batch closes once no request has arrived for ``--delay S`` s (0.1) while one
request is held, or for ``--burst-delay`` s (0.5) while several are, so the requests of a burst are one batch even
when the client is slow to send them; what happens to a request is decided when its batch closes, by its rank in
the batch by seed (the client's numbering), never by the order its connection happened to arrive in.

Behaviours: ``--crash-after N``: the request that arrives after N others makes the "engine" die: every
request in flight and any arriving later get HTTP 500, ``/health`` answers 503, the log gets the CUDA
illegal-memory-access line, and the API server shuts down and exits with status 0, as the recorded stock
``vllm serve`` 0.20.0 did (``data/serve-cuda.json``: HTTP 500 to all, "Shutting down", "Application shutdown
complete", exit status 0).  ``--crash-above C``: the same, for a batch of more than C requests.
``--perturb-above C``: the requests of a batch after its C-th (by seed) get their logprobs changed by a
relative 2**-20 (tokens unchanged), a stand-in for batch variance.

Without explicit behaviours the fake is scripted from the environment (a script, not a model of vLLM):
``FLEXFIX_PATCH=0`` -> ``--crash-above 16`` (the engine dies whenever a batch holds more than one query block;
a real stock engine does not fail so deterministically: it can also finish such a batch with wrong answers,
notebook 01); ``FLEXFIX_PATCH=1`` and ``VLLM_BATCH_INVARIANT=0`` -> ``--perturb-above 16`` (the real server
changed the logprobs of every request of a batch, and some tokens: notebook 06's recorded run); ``FLEXFIX_PATCH=1``
and ``VLLM_BATCH_INVARIANT=1`` -> neither.  ``--record-requests PATH`` appends every request body (JSON lines).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The body of every HTTP 500 once the 'engine' is dead (sent as JSON): written to copy vLLM 0.20.0's, which notebook
# 06 compares with the recorded real server's error as its client printed it (flexfix.edition.narrative.serving_body).
ENGINE_DEAD_BODY = {
    "error": {
        "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
}
IMA_LINE = "torch.AcceleratorError: CUDA error: an illegal memory access was encountered (FAKE server, emulated)"


_LOG_LOCK = threading.Lock()


def log(*parts) -> None:
    line = " ".join([time.strftime("%H:%M:%S"), "fake-vllm", *map(str, parts)]) + "\n"
    with _LOG_LOCK:  # one line at a time from the handler threads
        sys.stderr.write(line)
        sys.stderr.flush()


def parse(argv):
    p = argparse.ArgumentParser(prog="fake_vllm_server.py")
    p.add_argument(
        "--mode",
        default="healthy",
        choices=["healthy", "never_healthy", "exit_at_start", "ignore_sigterm", "grandchild"],
    )
    p.add_argument("--crash-after", type=int, default=None)
    p.add_argument("--crash-above", type=int, default=None)
    p.add_argument("--perturb-above", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.1)
    p.add_argument("--burst-delay", type=float, default=0.5)
    p.add_argument("--record-requests", default=None)
    p.add_argument("--grandchild-tag", default="fake-vllm-grandchild")
    p.add_argument("subcommand", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-model-name", default=None)
    args, ignored = p.parse_known_args(argv)
    if args.crash_after is None and args.crash_above is None and args.perturb_above is None:
        patched = os.environ.get("FLEXFIX_PATCH", "0").strip().lower() in ("1", "true", "yes", "on")
        invariant = os.environ.get("VLLM_BATCH_INVARIANT", "0").strip() == "1"
        if not patched:
            args.crash_above = 16
        elif not invariant:
            args.perturb_above = 16
    return args, ignored


def model_config(model_dir: str) -> dict:
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Held:
    """One completion waiting for its batch to close, and what the batch decided for it."""

    def __init__(self, seed, order):
        self.seed, self.order = seed, order
        self.decided = False
        self.perturbed = False


class State:
    def __init__(self, args, config):
        self.args = args
        self.vocab = int(config.get("vocab_size", 2048))
        self.eos = int(config.get("eos_token_id", 2))
        self.name = args.served_model_name or args.model
        self.lock = threading.Lock()
        self.closed = threading.Condition(self.lock)
        self.arrived = 0
        self.in_flight = 0
        self.held: list[Held] = []
        self.last_arrival = time.monotonic()
        self.dead = threading.Event()

    def die(self) -> None:
        """The 'engine' dies (called with the lock held): every request held or arriving gets HTTP 500."""
        if self.dead.is_set():
            return
        self.dead.set()
        log("ERROR EngineCore encountered a fatal error.")
        log(IMA_LINE)
        log("ERROR AsyncLLM output_handler failed. EngineDeadError: EngineCore encountered an issue.")
        threading.Thread(target=self.exit_when_drained, daemon=True).start()
        self.closed.notify_all()

    def arrive(self, seed) -> Held:
        """Count a request in (``--crash-after`` fires here, on the arrival count)."""
        with self.lock:
            self.arrived += 1
            self.in_flight += 1
            self.last_arrival = time.monotonic()
            held = Held(seed, self.arrived)
            self.held.append(held)
            if self.args.crash_after is not None and self.arrived > self.args.crash_after:
                self.die()
            return held

    def _close_batch(self) -> None:
        """Every request held now is one batch (called with the lock held): ``--crash-above C`` kills the engine
        if it has more than C; ``--perturb-above C`` perturbs its requests after the C-th by seed (the order the
        client numbered them in, whatever order their connections arrived in)."""
        batch, self.held = self.held, []
        a = self.args
        if a.crash_above is not None and len(batch) > a.crash_above:
            self.die()
        ranked = sorted(batch, key=lambda h: (h.seed is None, h.seed if isinstance(h.seed, int) else 0, h.order))
        for rank, h in enumerate(ranked):
            h.perturbed = a.perturb_above is not None and rank >= a.perturb_above
            h.decided = True
        self.closed.notify_all()

    def hold(self, held: Held) -> tuple[bool, bool]:
        """Answer once the batch closes: no request has arrived for ``--delay`` s while one is held, or for
        ``--burst-delay`` s while several are (a burst is collected whole even when the client sends it slowly).
        (whether the engine died, whether this request is perturbed)."""
        with self.lock:
            while not held.decided and not self.dead.is_set():
                quiet = self.args.delay if len(self.held) <= 1 else max(self.args.delay, self.args.burst_delay)
                wait = quiet - (time.monotonic() - self.last_arrival)
                if wait <= 0:
                    self._close_batch()
                    break
                self.closed.wait(wait)
            return self.dead.is_set(), held.perturbed

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def exit_when_drained(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    break
            time.sleep(0.02)
        time.sleep(0.2)  # let the last 500s reach their clients
        # as vLLM 0.20.0's API server did when its engine core died (the recorded stock run): a clean shutdown, 0
        log("INFO Shutting down: engine dead")
        log("INFO Waiting for application shutdown.")
        log("INFO Application shutdown complete.")
        log(f"INFO Finished server process [{os.getpid()}]")
        os._exit(0)


def generate(prompt, seed, max_tokens, ignore_eos, vocab, eos, perturbed):
    key = json.dumps([prompt, seed]).encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    tokens, logprobs = [], []
    for _ in range(max_tokens):
        t = rng.randrange(vocab)
        lp = -rng.uniform(0.01, 12.0)
        if perturbed:
            lp *= 1 + 2**-20
        tokens.append(t)
        logprobs.append(lp)
        if t == eos and not ignore_eos:
            return tokens, logprobs, "stop"
    return tokens, logprobs, "length"


def logprobs_block(tokens, logprobs, as_ids, offset=0):
    names = [f"token_id:{t}" if as_ids else f"<{t}>" for t in tokens]
    offsets, pos = [], offset
    for n in names:
        offsets.append(pos)
        pos += len(n)
    return {
        "text_offset": offsets,
        "token_logprobs": logprobs,
        "tokens": names,
        "top_logprobs": [{n: lp} for n, lp in zip(names, logprobs)],
    }


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *fargs):  # access log on stderr, like uvicorn's
            log("INFO", self.address_string(), fmt % fargs)

        def send_json(self, code, payload):
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def engine_dead(self):
            self.send_json(500, ENGINE_DEAD_BODY)

        def do_GET(self):
            if self.path == "/health":
                if state.args.mode == "never_healthy":
                    self.send_json(503, {"status": "starting"})
                elif state.dead.is_set():
                    self.send_json(503, {"status": "engine dead"})
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
            elif self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": state.name, "object": "model"}]})
            else:
                self.send_json(404, {"error": {"message": f"no route {self.path}", "code": 404}})

        def do_POST(self):
            if self.path != "/v1/completions":
                self.send_json(404, {"error": {"message": f"no route {self.path}", "code": 404}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if state.args.record_requests:
                with state.lock, open(state.args.record_requests, "a") as f:
                    f.write(json.dumps(body) + "\n")
            held = state.arrive(body.get("seed"))
            try:
                dead, perturbed = state.hold(held)
                if dead:
                    self.engine_dead()
                    return
                self.complete(body, perturbed)
            finally:
                state.leave()

        def complete(self, body, perturbed):
            prompt = body.get("prompt")
            if not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
                self.send_json(400, {"error": {"message": "the fake takes one prompt of token ids", "code": 400}})
                return
            if max(prompt, default=0) >= state.vocab:
                self.send_json(400, {"error": {"message": f"Token id {max(prompt)} is out of vocabulary", "code": 400}})
                return
            tokens, logprobs, finish = generate(
                prompt,
                body.get("seed"),
                int(body.get("max_tokens") or 16),
                bool(body.get("ignore_eos")),
                state.vocab,
                state.eos,
                perturbed,
            )
            as_ids = bool(body.get("return_tokens_as_token_ids"))
            want_lp = body.get("logprobs") is not None
            head = {
                "id": f"cmpl-fake-{state.arrived}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": state.name,
            }
            if not body.get("stream"):
                choice = {
                    "index": 0,
                    "text": "".join(f"<{t}>" for t in tokens),
                    "logprobs": logprobs_block(tokens, logprobs, as_ids) if want_lp else None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                usage = {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": len(tokens),
                    "total_tokens": len(prompt) + len(tokens),
                }
                self.send_json(200, {**head, "choices": [choice], "usage": usage})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            offset = 0
            for i, (t, lp) in enumerate(zip(tokens, logprobs)):
                block = logprobs_block([t], [lp], as_ids, offset) if want_lp else None
                offset += len(block["tokens"][0]) if block else 0
                last = i == len(tokens) - 1
                choice = {
                    "index": 0,
                    "text": f"<{t}>",
                    "logprobs": block,
                    "finish_reason": finish if last else None,
                    "stop_reason": None,
                }
                self.wfile.write(f"data: {json.dumps({**head, 'choices': [choice]})}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def main(argv=None) -> int:
    args, ignored = parse(sys.argv[1:] if argv is None else argv)
    log(f"INFO FAKE vLLM server (no model, no GPU): pid {os.getpid()}, model {args.model}, mode {args.mode}")
    log(f"INFO ignored vLLM options: {' '.join(ignored)}")
    env = {k: os.environ.get(k) for k in ("FLEXFIX_PATCH", "VLLM_BATCH_INVARIANT")}
    log("INFO environment:", " ".join(f"{k}={v}" for k, v in env.items()))
    if args.mode == "exit_at_start":
        log("ERROR planted start-up failure: RuntimeError: the fake engine could not start")
        return 3
    if args.mode == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.mode == "grandchild":
        code = (
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('fake-vllm grandchild ready (ignores SIGTERM)', file=sys.stderr, flush=True); time.sleep(600)"
        )
        child = subprocess.Popen([sys.executable, "-c", code, args.grandchild_tag])
        log(f"INFO started grandchild {child.pid}")
    state = State(args, model_config(args.model))
    ThreadingHTTPServer.request_queue_size = 1024  # a burst of 128 connections must not overflow the backlog
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    log(f"INFO Started server process, listening on http://{args.host}:{args.port}")
    if args.mode != "ignore_sigterm":
        signal.signal(signal.SIGTERM, lambda *_: (log("INFO SIGTERM: shutting down"), os._exit(0)))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
