"""The serving scenarios: which server each one starts, with which environment, and what is expected of it.

Each scenario (``SCENARIOS``) starts its own ``vllm serve`` with FLEX_ATTENTION and default CUDA graphs, with its
``FLEXFIX_PATCH`` and ``VLLM_BATCH_INVARIANT``; :func:`plan` checks a choice of scenarios before anything starts,
:func:`notebook_plan` is notebook 06's (the real server on a GPU, the FAKE one elsewhere).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flexfix.edition.params import positive_int
from flexfix.integration.engine import LLAMA_CONFIGS, prompts
from flexfix.integration.serving.client import SERVED_NAME, Request
from flexfix.measure.engine_sweep import PROMPT_LENGTHS

__all__ = [
    "ServeScenario",
    "SCENARIOS",
    "SEED_BASE",
    "vllm_args",
    "requests_for",
    "prepare_model",
    "prepare_tokenizer",
    "check_choice",
    "plan",
    "notebook_plan",
]

GPU_MEMORY_UTILIZATION = 0.3
MAX_NUM_SEQS = 128
SEED_BASE = 2000  # request i samples with seed SEED_BASE + i
PROMPT_SEED = 2


@dataclass(frozen=True)
class ServeScenario:
    name: str
    patch: bool  # FLEXFIX_PATCH
    batch_invariant: bool  # VLLM_BATCH_INVARIANT
    requests: tuple[int, ...]  # concurrent batch sizes, each compared with every request alone
    model: str
    expect: tuple[str, ...]
    what: str
    guard: str = ""  # FLEXFIX_GUARD of the server: "", error, eager or log (flexfix.guard)

    def __post_init__(self) -> None:
        if self.model not in LLAMA_CONFIGS:
            raise ValueError(f"model must be one of {sorted(LLAMA_CONFIGS)}, got {self.model!r}")
        if not self.requests:
            raise ValueError("requests must not be empty")
        for i, n in enumerate(self.requests):
            positive_int("requests", n, maximum=1024)
            if n in self.requests[:i]:
                raise ValueError(f"requests: {n} is listed twice")

    def env(self) -> dict[str, str]:
        return {
            "FLEXFIX_PATCH": "1" if self.patch else "0",
            "VLLM_BATCH_INVARIANT": "1" if self.batch_invariant else "0",
            "FLEXFIX_GUARD": self.guard or "0",
        }


SCENARIOS = {
    s.name: s
    for s in (
        ServeScenario(
            "stock",
            False,
            False,
            (48,),
            "tiny",
            ("illegal_memory_access",),
            "stock vLLM 0.20.0: FLEXFIX_PATCH=0, VLLM_BATCH_INVARIANT=0",
        ),
        ServeScenario(
            "patched_bi1",
            True,
            True,
            (48, 128),
            "variance",
            ("ok",),
            "the fix through the plugin: FLEXFIX_PATCH=1, VLLM_BATCH_INVARIANT=1",
        ),
        ServeScenario(
            "patched_bi0",
            True,
            False,
            (48, 128),
            "variance",
            ("ok", "differs"),
            "the fix through the plugin: FLEXFIX_PATCH=1, VLLM_BATCH_INVARIANT=0",
        ),
        # The replay guard on stock 0.20.0 (issue 24): refused replays, or steps run without the graph, compared
        # with the patched server on the same requests, and that server with a second one like it.
        ServeScenario(
            "guard_error",
            False,
            False,
            (48, 128),
            "tiny",
            ("guard_refused",),
            "stock vLLM 0.20.0 under FLEXFIX_GUARD=error",
            guard="error",
        ),
        ServeScenario(
            "guard_eager",
            False,
            False,
            (48, 128),
            "tiny",
            ("ok",),
            "stock vLLM 0.20.0 under FLEXFIX_GUARD=eager",
            guard="eager",
        ),
        ServeScenario(
            "patched_tiny",
            True,
            False,
            (48, 128),
            "tiny",
            ("ok",),
            "the fix through the plugin on the tiny Llama: FLEXFIX_PATCH=1, VLLM_BATCH_INVARIANT=0",
        ),
        ServeScenario(
            "patched_tiny_again",
            True,
            False,
            (48, 128),
            "tiny",
            ("ok",),
            "a second server like patched_tiny: how often two patched servers agree",
        ),
    )
}


def vllm_args(model: str, max_concurrent: int) -> list[str]:
    """``vllm serve`` options of a scenario (besides model, backend, host, port): default CUDA graphs."""
    return [
        "--served-model-name",
        SERVED_NAME,
        "--max-num-seqs",
        str(max(MAX_NUM_SEQS, max_concurrent)),
        "--max-model-len",
        str(LLAMA_CONFIGS[model]["max_position_embeddings"]),
        "--gpu-memory-utilization",
        str(GPU_MEMORY_UTILIZATION),
        "--dtype",
        "bfloat16",
        "--seed",
        "0",
        # a request's prompt must be computed in its batch, not read back from the cache its alone run filled
        "--no-enable-prefix-caching",
    ]


def requests_for(model: str, n: int) -> list[Request]:
    """The ``n`` requests of a scenario: seeded token-id prompts of the model's lengths, seed 2000+i."""
    vocab = LLAMA_CONFIGS[model]["vocab_size"]
    batch = prompts(n, vocab, seed=PROMPT_SEED, lengths=PROMPT_LENGTHS[model])
    return [Request(i, p, SEED_BASE + i) for i, p in enumerate(batch)]


def _models_root(models_dir: str | os.PathLike | None) -> Path:
    """Where the served models are written: ``models_dir``, else ``flexfix-models`` in the system's temporary folder."""
    return Path(models_dir) if models_dir is not None else Path(tempfile.gettempdir()) / "flexfix-models"


def prepare_model(model: str, models_dir: str | os.PathLike | None = None) -> Path:
    """The Llama checkpoint of ``model`` (``engine.write_llama``) with a local tokenizer, written once."""
    from flexfix.integration.engine import write_llama
    from flexfix.integration.local_tokenizer import write_tokenizer

    path = _models_root(models_dir) / f"serve-{model}"
    if not (path / "config.json").exists():  # (write_llama would import transformers to find that out)
        write_llama(path, model)
    return write_tokenizer(path)


def prepare_tokenizer(model: str, models_dir: str | os.PathLike | None = None) -> Path:
    """A directory holding ``model``'s tokenizer as :func:`prepare_model` writes it (``write_tokenizer``, from the
    config's ``vocab_size`` and special ids): the model's own directory where :func:`prepare_model` wrote it,
    otherwise one with its ``config.json`` and tokenizer only, no weights (they do not change the tokenizer).
    Notebook 06 checks the tokenizer of each model its scenarios serve with it (round 22, D8)."""
    from flexfix.integration.engine import llama_config
    from flexfix.integration.local_tokenizer import write_tokenizer

    root = _models_root(models_dir)
    path = root / f"serve-{model}"
    if not (path / "config.json").exists():
        path = root / f"tokenizer-{model}"
        if not (path / "config.json").exists():
            llama_config(model).save_pretrained(path)
    return write_tokenizer(path)


# A run of several scenarios: checked first, then recorded one after another.


def check_choice(
    scenarios: str | Sequence[str], *, model: str | None = None, requests: Sequence[int] | None = None
) -> tuple[list[str], tuple[int, ...] | None]:
    """The scenario names (a comma-separated string or a list: each known, none twice) and the batch sizes
    (None, or a non-empty list of integers in 1..1024, none twice) of a choice; ValueError naming any bad value,
    ``model`` included (None or a Llama config's name).  Notebook 06's first cell and :func:`plan` use it."""
    if isinstance(scenarios, str):
        scenarios = scenarios.split(",")
    if not isinstance(scenarios, Sequence) or not all(isinstance(n, str) for n in scenarios):
        raise ValueError(f"scenarios must be a list of names, got {scenarios!r}")
    names = [n.strip() for n in scenarios]
    if not names or not all(names):
        raise ValueError(f"scenarios must be a non-empty list of names, got {scenarios!r}")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}; expected some of {sorted(SCENARIOS)}")
    twice = [n for i, n in enumerate(names) if n in names[:i]]
    if twice:
        raise ValueError(f"scenario {twice[0]!r} is listed twice")
    if model is not None and model not in LLAMA_CONFIGS:
        raise ValueError(f"model must be one of {sorted(LLAMA_CONFIGS)}, got {model!r}")
    if requests is not None:
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise ValueError(f"requests must be a list of batch sizes or None, got {requests!r}")
        requests = tuple(requests)
        if not requests:
            raise ValueError("requests must not be empty")
        for i, n in enumerate(requests):
            positive_int("requests", n, maximum=1024)
            if n in requests[:i]:
                raise ValueError(f"requests: {n} is listed twice")
    return names, requests


def plan(
    scenarios: str | Sequence[str],
    *,
    model: str | None = None,
    requests: Sequence[int] | None = None,
    max_tokens: int = 32,
    fake_server: str | os.PathLike | None = None,
) -> list[ServeScenario]:
    """The scenarios to run, with ``model`` / ``requests`` overriding each one's own; ValueError naming
    any bad value (unknown scenario or model, counts <= 0), before anything starts.

    Without ``fake_server`` this needs a GPU, and for the patched scenarios flexfix's vLLM plugin
    (the ``vllm.general_plugins`` entry point, installed with flexfix) -- checked here too."""
    names, requests = check_choice(scenarios, model=model, requests=requests)
    positive_int("max_tokens", max_tokens, maximum=512)
    chosen = [
        dataclasses.replace(SCENARIOS[n], model=model or SCENARIOS[n].model, requests=requests or SCENARIOS[n].requests)
        for n in names
    ]
    if fake_server is not None:
        try:
            found = Path(fake_server).is_file()
        except OSError:  # a name too long, a loop of links
            found = False
        if not found:
            raise ValueError(f"fake server script {str(fake_server)[:120]!r} does not exist")
        return chosen
    from flexfix.edition.params import cuda_available

    if not cuda_available():
        raise ValueError(
            "no GPU here: vllm serve needs CUDA; pass fake_server (--fake tests/fake_vllm_server.py) "
            "to run the same code against the FAKE server"
        )
    if any(sc.patch for sc in chosen):
        from importlib.metadata import entry_points

        if not any(e.name == "flexfix" for e in entry_points(group="vllm.general_plugins")):
            raise ValueError(
                "FLEXFIX_PATCH=1 needs flexfix's vllm.general_plugins entry point, which is not installed "
                "in this Python: `pip install --no-deps -e .` from the repository (vLLM would run unpatched)"
            )
    return chosen


def notebook_plan(
    device: str,
    run_server: bool,
    scenarios: Sequence[str],
    requests: Sequence[int] | None,
    fake_requests: Sequence[int],
    model: str | None,
    max_tokens: int,
    fake_server: str | os.PathLike,
) -> dict:
    """The :func:`record` arguments of notebook 06: the real ``vllm serve`` on a GPU with ``run_server``,
    otherwise the FAKE server with the tiny config and ``fake_requests``; says which, and what the FAKE server
    does differently from the recorded real one.  A FAKE run is saved as ``serve_fake-cpu.json`` (it runs on the
    CPU whatever the machine), never as ``serve-<device>.json``."""
    real = device == "cuda" and run_server
    if real:
        chosen = plan(scenarios, model=model, requests=requests, max_tokens=max_tokens)
        print("server: vllm serve with FLEX_ATTENTION, one per scenario (startup_seconds: the scenario table)")
    else:
        chosen = plan(scenarios, model="tiny", requests=fake_requests, max_tokens=max_tokens, fake_server=fake_server)
        if run_server:  # the parameters line above says RUN_SERVER=True: say at once that it did not apply
            print(f"RUN_SERVER=True (ignored: no GPU, the device is {device})")
        print(  # why it runs: flexfix.edition.narrative.serving.what_runs; what it emulates: notebook 06's
            # *Harness self-test*, where it runs (round 22, D2: said once)
            f"server: the FAKE server {fake_server}, not vLLM (what it emulates: the harness self-test, after the "
            "recorded GPU run); its results are saved as serve_fake-cpu.json"
        )
    for sc in chosen:
        model = sc.model if real else f"none (FAKE: its prompts are drawn as for the {sc.model} config)"
        print(f"  {sc.name}: {sc.what}; model {model}; concurrent {list(sc.requests)}")
    return {
        "scenarios": chosen,
        "fake_server": None if real else fake_server,
        "max_tokens": max_tokens,
        "name": "serve" if real else "serve_fake",
    }
