"""flexfix: reproduce, fix and explain vLLM 0.20.x's FlexAttention CUDA-graph illegal memory access.

Five parts:

* :mod:`flexfix.mechanism` -- the bug and the fix in plain torch, each runnable on CPU at tiny sizes;
* :mod:`flexfix.integration` -- everything that touches vLLM: the patch, the plugin, engines, serving, releases;
* :mod:`flexfix.measure` -- child processes, the recorded parts, sweeps and timings;
* :mod:`flexfix.edition` -- results files, tables, figures, prose, and the notebooks run and published;
* :mod:`flexfix.guard` -- the replay guard: CUDA-graph replays held to the layout of their capture.

The plugin, the patch and the guard (:mod:`flexfix.integration.vllm_plugin`, :mod:`flexfix.integration.vllm_patch`,
:mod:`flexfix.mechanism.persistent`, :mod:`flexfix.guard`) need only vLLM and torch; everything else is the
investigation (``pip install '.[notebooks]'``).  ``flexfix`` (:mod:`flexfix.cli`) is the command line.
"""

__version__ = "0.2.0"
