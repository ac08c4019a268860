"""Everything that touches vLLM: the patch and its plugin, the engine runs, the served model, the releases.

:mod:`~flexfix.integration.vllm_patch` applies the fix of PR #40842 to the installed vLLM;
:mod:`~flexfix.integration.vllm_plugin` does it in every vLLM process (``FLEXFIX_PATCH=1``);
:mod:`~flexfix.integration.engine` runs the real engine in a child process; :mod:`~flexfix.integration.releases`
reads every release's backend; :mod:`~flexfix.integration.serving` checks the fix under ``vllm serve``.
vLLM is imported lazily everywhere: importing this package does not need it.
"""
