"""Does the fix hold in ``vllm serve``?  Concurrent OpenAI-client completions against a served Llama.

One concept per module: :mod:`.manager` (``vllm serve`` as a context manager, its process group always stopped),
:mod:`.client` (the load client), :mod:`.scenarios` (what each scenario starts and expects), :mod:`.run` (one
scenario against its own server), :mod:`.recording` (``flexfix serve record``), :mod:`.demo` (the manager and the
tokenizer on any machine).  The views of a run are :mod:`flexfix.edition.tables.serving`, its figure
:mod:`flexfix.edition.plots.serving`.
"""

from flexfix.integration.serving.client import (
    SERVED_NAME,
    Request,
    complete_alone,
    complete_streamed,
    complete_together,
)
from flexfix.integration.serving.demo import manager_demo, tokenizer_check
from flexfix.integration.serving.manager import VLLM_LAUNCHER, ServerError, VllmServer, free_port, group_members
from flexfix.integration.serving.recording import record, recorded_run, show_recorded
from flexfix.integration.serving.run import run_scenario
from flexfix.integration.serving.scenarios import (
    SCENARIOS,
    SEED_BASE,
    ServeScenario,
    check_choice,
    notebook_plan,
    plan,
    prepare_model,
    prepare_tokenizer,
    requests_for,
    vllm_args,
)

__all__ = [
    "VLLM_LAUNCHER",
    "ServerError",
    "VllmServer",
    "free_port",
    "group_members",
    "SERVED_NAME",
    "Request",
    "complete_alone",
    "complete_together",
    "complete_streamed",
    "ServeScenario",
    "SCENARIOS",
    "SEED_BASE",
    "requests_for",
    "vllm_args",
    "check_choice",
    "plan",
    "notebook_plan",
    "prepare_model",
    "prepare_tokenizer",
    "run_scenario",
    "record",
    "recorded_run",
    "show_recorded",
    "manager_demo",
    "tokenizer_check",
]
