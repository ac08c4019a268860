"""Which vLLM releases carry the FlexAttention ``as_strided`` bug, read from the releases themselves.

``flexfix releases`` lists vLLM's final releases on PyPI (from ``--min``, 0.15.0 by default, to the newest), reads
each release's ``vllm/v1/attention/backends/flex_attention.py`` without building or installing anything, classifies
it with :mod:`ast` and writes the table with provenance (``<out>/vllm_releases-cpu.json``).
``flexfix releases check-patch --versions 0.19.1,0.20.0,...`` runs flexfix's patch and plugin against each
release's real module (``<out>/vllm_release_patch_checks-cpu.json``).

One concept per module: :mod:`.classify` (the ``ast`` classifier), :mod:`.index` (the JSON simple API),
:mod:`.transport` (one member of a remote archive, through fsspec), :mod:`.survey` (the table of releases),
:mod:`.probe` and :mod:`.patch_checks` (the patch against each release), :mod:`.cli` (the command line).
"""
