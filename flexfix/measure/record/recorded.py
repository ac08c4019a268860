"""The recorded GPU tables in ``data/``, by name: what the notebooks show when they run on a CPU."""

# The engine tables recorded on the H100, in data/ (one run could not hold every scenario).
RECORDED_ENGINE_TABLES = [
    "engine_scenarios",
    "engine_scenarios_part2",
    "engine_scenarios_part3",
    "engine_scenarios_part4",
    "engine_scenarios_repeats",
]

# The kernel-level needle sweep recorded on the H100 (the second file: cells the first run's time limit cut off).
RECORDED_KERNEL_INVARIANCE = ["kernel_invariance", "kernel_invariance_part2"]
# Every request of a batch against itself alone: stock vLLM 0.20.0, and the patched engine as the control.
RECORDED_EVERY_REQUEST = ["engine_every_request_stock", "engine_sweep_tiny_full"]

# The engine sweeps recorded on the H100 (notebooks 04 and 05; the every-request check of notebook 01).
RECORDED_SWEEP_TABLES = [
    "engine_sweep_tiny_full",
    "engine_sweep_variance_full",
    "engine_sweep_tiny_more",
    "engine_sweep_variance_eager",
]

# Output tokens per second, each file one command: per model every graph mode x BI, back to back.
RECORDED_THROUGHPUT_TABLES = [
    "engine_throughput_variance",
    "engine_throughput_variance_repeat",
    "engine_throughput_tiny",
    "engine_throughput_tiny_repeat",
]
