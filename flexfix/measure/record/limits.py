"""The largest values ``flexfix record`` and the notebooks accept: refused by name above them, before any work."""

import os

MAX_SEEDS = 100
MAX_BATCH = 128  # the persistent buffers of the kernel repro and of the needle sweep hold 128 requests
MAX_CONTEXT = 32768
MAX_REQUESTS = 256  # engine runs (flexfix.measure.engine_sweep.EngineRun)
MAX_REPEATS = 100
MAX_WORKERS = min(64, 4 * (os.cpu_count() or 1))
MAX_ENGINE_WORKERS = 16  # engines side by side on one GPU (each a CUDA context, a KV cache and its graphs)
# Keys and values one timed decode step reads (timing.kv_bytes); the sweep holds about twice that.
MAX_TIMING_KV_BYTES = {"cpu": 4 << 30, "cuda": 16 << 30}
GPU_PARTS = ("sanitizer", "engine", "engine-sweep")
