"""flexfix as a vLLM general plugin: patch the backend in every vLLM process.

vLLM loads the entry points of the ``vllm.general_plugins`` group in every engine-core
and worker process (``vllm.plugins.load_general_plugins``), which is what an in-notebook
``apply()`` cannot reach.  The plugin only patches when ``FLEXFIX_PATCH=1``, so that
installing flexfix changes nothing by itself::

    FLEXFIX_PATCH=1 vllm serve <model> --attention-backend FLEX_ATTENTION
    FLEXFIX_PATCH=1 python my_script.py            # LLM(...) with the default multiprocessing
"""

from __future__ import annotations

import os

ENV = "FLEXFIX_PATCH"


def register() -> None:
    if os.environ.get(ENV, "0") != "1":
        return
    import sys

    from flexfix import vllm_patch

    if vllm_patch.apply():
        print(f"flexfix: patched vLLM's FlexAttention backend in process {os.getpid()}", file=sys.stderr)
