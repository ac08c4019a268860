"""The bug and the fix in plain torch, each module runnable on CPU at tiny sizes.

:mod:`~flexfix.mechanism.persistent` the two copies into a persistent buffer; :mod:`~flexfix.mechanism.paged` a
paged-KV FlexAttention decode step shaped like vLLM's; :mod:`~flexfix.mechanism.graphs` capture once, replay many
times (CUDA graph, or its CPU analog); :mod:`~flexfix.mechanism.kernel_repro` the torch-only reproduction;
:mod:`~flexfix.mechanism.layouts` where the rows live and where a captured kernel reads them.
"""
