"""What an engine child adds when it runs under the replay guard, or with a planted bug of its class.

:class:`flexfix.measure.engine_sweep.EngineRun` carries the settings (``guard``, ``backend``, ``mutant``,
``bi_only``, ``runner``, ``debug``, ``max_num_seqs``, ``generations``, ``guard_cost``); this module turns
them into the child's environment and set-up, and adds three kinds of record:

* ``generations``: every request's token ids and logprobs for ``N`` concurrent requests (seeded sampling),
  so that two engines -- stock vLLM under ``FLEXFIX_GUARD=eager`` and the patched one, say -- can be
  compared bitwise afterwards;
* ``guard_cost``: output tokens per second of ``N`` concurrent requests with the guard checking and not
  checking (:attr:`flexfix.guard.ReplayGuard.enabled`), alternately in one engine (on/off, then off/on, ...),
  so that drift of the machine falls on both sides;
* ``guard``: the guard's own count (graphs captured, replays checked, alarms by field), last.

A replay the guard refuses ends the child with the outcome ``guard_refused`` and the guard's message.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from flexfix.guard import mutants
from flexfix.integration.engine import prompts
from flexfix.measure.generations import generate, sampling, tokens_logprobs, torch_sync

__all__ = [
    "BACKENDS",
    "GUARD_MODES",
    "check_guarded",
    "guarded_name",
    "guarded_env",
    "prepare_guarded",
    "guard_refused",
    "record_guard",
    "record_generations",
    "time_guard",
]

BACKENDS = ("FLEX_ATTENTION", "TRITON_ATTN")
GUARD_MODES = ("", "error", "eager", "log")
RUNNERS = {"": None, "v1": "0", "v2": "1"}
REFUSAL = "flexfix replay guard: refusing"


def check_guarded(run) -> None:
    """ValueError naming a guard setting of ``run`` that cannot be run."""
    if run.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {run.backend!r}")
    if run.guard not in GUARD_MODES:
        raise ValueError(f"guard must be one of {GUARD_MODES[1:]} or empty, got {run.guard!r}")
    if run.runner not in RUNNERS:
        raise ValueError(f"runner must be 'v1', 'v2' or empty, got {run.runner!r}")
    if run.mutant and (run.mutant not in mutants.MUTANTS or run.backend != "TRITON_ATTN"):
        raise ValueError(f"mutant must be one of {sorted(mutants.MUTANTS)} on TRITON_ATTN, got {run.mutant!r}")
    if run.bi_only and (run.patched or not run.batch_invariant or run.backend != "FLEX_ATTENTION"):
        raise ValueError("bi_only is stock FlexAttention with only batch invariance forced: patched=False, BI=1")
    if run.guard_cost and not run.guard:
        raise ValueError("guard_cost times the guard on and off: it needs a guard mode")


def guarded_name(run) -> str:
    parts = [
        run.backend if run.backend != "FLEX_ATTENTION" else "",
        f"guard={run.guard}" if run.guard else "",
        "BI forced" if run.bi_only else "",
        f"mutant {run.mutant}" if run.mutant else "",
        f"runner {run.runner}" if run.runner else "",
        "VLLM_LOGGING_LEVEL=DEBUG" if run.debug else "",
        f"max_num_seqs {run.max_num_seqs}" if run.max_num_seqs else "",
        f"generations of {','.join(map(str, run.generations))}" if run.generations else "",
    ]
    return "".join(f", {p}" for p in parts if p)


def guarded_env(run) -> dict[str, str]:
    env = {"FLEXFIX_GUARD": run.guard or "0", "FLEXFIX_MUTANT": run.mutant}
    if RUNNERS[run.runner] is not None:
        env["VLLM_USE_V2_MODEL_RUNNER"] = RUNNERS[run.runner]
    if run.debug:
        env["VLLM_LOGGING_LEVEL"] = "DEBUG"
    return env


def prepare_guarded(run):
    """In the child, before the engine starts: plant the mutant, force batch invariance, install the guard.
    Returns the guard (None without one)."""
    from flexfix import guard

    if run.mutant:
        mutants.plant(run.mutant)
    if run.bi_only:  # only the second change of PR #40842, the copy left as it is (engine scenario b)
        from vllm.v1.attention.backends import flex_attention

        flex_attention.FlexAttentionBackend.supports_batch_invariance = classmethod(lambda cls: True)
    return guard.install(run.guard) if run.guard else None


def guard_refused(exc: BaseException, reporter) -> bool:
    """If ``exc`` is the guard refusing a replay (raised as is, or wrapped by vLLM's engine), finish the child
    with ``guard_refused`` and the guard's message, and say so."""
    seen, text = exc, ""
    while seen is not None and REFUSAL not in text:
        text = str(seen)
        seen = seen.__cause__ or seen.__context__
    if REFUSAL not in text:
        return False
    message = text[text.index(REFUSAL) :]
    reporter.finish("guard_refused", message.splitlines()[0], message=message)
    return True


def record_guard(report) -> None:
    from flexfix import guard

    if guard.active() is not None:
        report({"kind": "guard", **guard.status()})


def record_generations(llm, run, vocab: int, lengths: tuple[int, int], report) -> None:
    for n in run.generations:
        batch = prompts(n, vocab, seed=2, lengths=lengths)
        outs = generate(llm, batch, [sampling("seeded", 2000 + i, run.max_tokens) for i in range(n)])
        streams = [tokens_logprobs(o) for o in outs]
        report(
            {
                "kind": "generations",
                "requests": n,
                "tokens": [t for t, _ in streams],
                "logprobs": [lp for _, lp in streams],
            }
        )


def time_guard(llm, run, vocab: int, lengths: tuple[int, int], guard, report) -> None:
    for n in run.guard_cost:
        batch = prompts(n, vocab, seed=3, lengths=lengths)
        params = [sampling("greedy", 0, run.throughput_tokens)] * n
        generate(llm, batch, params)  # warm-up
        seconds: dict[bool, list[float]] = {True: [], False: []}
        checks: list[tuple[int, int]] = []  # per guarded repetition: (host ns the checks took, replays checked)
        tokens = 0
        for r in range(run.repeats):
            for on in (True, False) if r % 2 == 0 else (False, True):
                guard.enabled = on
                before = (guard.counts["check_ns"], guard.counts["replays_checked"])
                torch_sync()
                start = time.perf_counter()
                outs = generate(llm, batch, params)
                torch_sync()
                seconds[on].append(time.perf_counter() - start)
                if on:
                    checks.append((guard.counts["check_ns"] - before[0], guard.counts["replays_checked"] - before[1]))
                tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        guard.enabled = True
        report(_cost_record(n, tokens, seconds[True], seconds[False], checks))


def _cost_record(
    n: int, tokens: int, on: list[float], off: list[float], checks: list[tuple[int, int]] = ()
) -> dict[str, Any]:
    """tokens/s with the guard over tokens/s without, per repetition and of the medians; and the guard's own host
    time in the guarded repetitions (``check_seconds``, ``replays_checked``): the share of a guarded run's wall
    time spent checking bounds its cost however noisy the tokens/s are."""
    pairs = [b / a for a, b in zip(on, off)]  # (tokens/on) / (tokens/off)
    check_s = [ns / 1e9 for ns, _ in checks]
    return {
        "kind": "guard_cost",
        "requests": n,
        "output_tokens": tokens,
        "on_seconds": on,
        "off_seconds": off,
        "tokens_per_second_on": tokens / statistics.median(on),
        "tokens_per_second_off": tokens / statistics.median(off),
        "ratio": statistics.median(off) / statistics.median(on),
        "pair_ratios": pairs,
        "check_seconds": check_s,
        "replays_checked": [k for _, k in checks],
        "check_share": [c / s for c, s in zip(check_s, on)],
    }
