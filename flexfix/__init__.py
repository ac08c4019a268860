"""flexfix: reproduce, fix and explain vLLM 0.20.x's FlexAttention CUDA-graph illegal memory access.

The plugin and patch (:mod:`flexfix.vllm_patch`, :mod:`flexfix.vllm_plugin`, :mod:`flexfix.persistent`)
need only vLLM and torch; everything else is the investigation (``pip install flexfix[notebooks]``).
"""

__version__ = "0.2.0"
