"""The load client: OpenAI-API completions against a served model, alone, together, or streamed.

Requests are token-id prompts with seeded sampling, ``max_tokens`` with ``ignore_eos``, ``logprobs=1`` and
``return_tokens_as_token_ids`` so that tokens come back as ids, sent with the real ``openai.AsyncOpenAI`` client
(``max_retries=0``: a request that failed is recorded as it failed).  Every request's outcome is kept: its tokens
and logprobs, or its error (HTTP status, message).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SERVED_NAME", "Request", "complete_alone", "complete_together", "complete_streamed"]

SERVED_NAME = "flexfix-llama"


@dataclass(frozen=True)
class Request:
    index: int
    prompt: list[int]
    seed: int


def _token_id(token: str) -> int:
    return int(token.split(":", 1)[1]) if token.startswith("token_id:") else int(token)


def _failure(req: Request, exc: BaseException, start: float) -> dict:
    import openai

    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {
        "index": req.index,
        "ok": False,
        "status_code": status,
        "error": f"{type(exc).__name__}: {message}"[:300],
        "tokens": [],
        "logprobs": [],
        "finish_reason": None,
        "seconds": round(time.monotonic() - start, 3),
    }


async def _complete(client, req: Request, max_tokens: int, temperature: float, stream: bool = False) -> dict:
    import openai

    start = time.monotonic()
    body = dict(
        model=SERVED_NAME,
        prompt=req.prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=req.seed,
        logprobs=1,
        extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
    )
    tokens, logprobs, finish, chunks = [], [], None, 0
    try:
        if stream:
            async with await client.completions.create(**body, stream=True) as events:
                async for chunk in events:
                    chunks += 1
                    for choice in chunk.choices:
                        if choice.logprobs is not None:
                            tokens += [_token_id(t) for t in choice.logprobs.tokens]
                            logprobs += list(choice.logprobs.token_logprobs)
                        finish = choice.finish_reason or finish
        else:
            choice = (await client.completions.create(**body)).choices[0]
            tokens = [_token_id(t) for t in choice.logprobs.tokens]
            logprobs = list(choice.logprobs.token_logprobs)
            finish = choice.finish_reason
    except openai.APIError as exc:  # HTTP errors, refused connections, timeouts: what the client saw
        return _failure(req, exc, start)
    out = {
        "index": req.index,
        "ok": True,
        "status_code": 200,
        "error": None,
        "tokens": tokens,
        "logprobs": logprobs,
        "finish_reason": finish,
        "seconds": round(time.monotonic() - start, 3),
    }
    if stream:
        out["chunks"] = chunks
    return out


def _client(base_url: str, timeout: float):
    import openai

    # max_retries=0: a request that failed is recorded as it failed, never retried behind our back.
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0, timeout=timeout)


async def _alone(base_url, reqs, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return [await _complete(client, r, max_tokens, temperature) for r in reqs]


async def _together(base_url, reqs, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return list(await asyncio.gather(*(_complete(client, r, max_tokens, temperature) for r in reqs)))


async def _streamed(base_url, req, max_tokens, temperature, timeout):
    async with _client(base_url, timeout) as client:
        return await _complete(client, req, max_tokens, temperature, stream=True)


def _run(coro):
    """Run a coroutine to the end, also from a notebook whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def complete_alone(
    base_url: str, reqs: Sequence[Request], *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> list[dict]:
    """Each request by itself, one after another (the engine holds one request at a time)."""
    return _run(_alone(base_url, list(reqs), max_tokens, temperature, timeout))


def complete_together(
    base_url: str, reqs: Sequence[Request], *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> list[dict]:
    """All requests at once; one outcome per request, in request order."""
    return _run(_together(base_url, list(reqs), max_tokens, temperature, timeout))


def complete_streamed(
    base_url: str, req: Request, *, max_tokens: int = 32, temperature: float = 1.0, timeout: float = 120
) -> dict:
    """One request with ``stream=True``, its chunks' tokens and logprobs concatenated."""
    return _run(_streamed(base_url, req, max_tokens, temperature, timeout))
