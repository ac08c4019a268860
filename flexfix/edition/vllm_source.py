"""The installed vLLM's own source, shown in the notebooks: the lines that decide what a captured graph reads (the
capture step's ``K``, the dummy batch, the padding rule, vLLM's debug replay check) and where the FlexAttention
backend calls ``copy_to_persistent``. Each raises if the installed vLLM no longer holds the lines it shows."""

from __future__ import annotations

import contextlib
import logging
import os


@contextlib.contextmanager
def quiet_vllm():
    """Import and call vLLM without its start-up log lines (NIXL, Triton, ``vllm._C`` on a machine without a GPU,
    torch's "No CUDA runtime" warning): vLLM's own logging level is ERROR inside, and what it was afterwards."""
    names = ("vllm", "torch.utils.cpp_extension")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    env = os.environ.get("VLLM_LOGGING_LEVEL")
    os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"  # read when vLLM configures its logger, at its first import
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if env is None:
            os.environ.pop("VLLM_LOGGING_LEVEL", None)
        else:
            os.environ["VLLM_LOGGING_LEVEL"] = env


def capture_source() -> str:
    """The installed vLLM's ``FlexAttentionMetadataBuilder.build_for_cudagraph_capture``: where the
    capture step's ``max_seq_len`` (and so ``K``) comes from."""
    import inspect

    with quiet_vllm():
        from vllm.v1.attention.backends.flex_attention import FlexAttentionMetadataBuilder

    return inspect.getsource(FlexAttentionMetadataBuilder.build_for_cudagraph_capture)


def _lines(obj, wanted, gaps: bool = False) -> str:
    """The lines of ``obj``'s source that satisfy ``wanted(line)``, each with its line number in its file; with
    ``gaps``, a ``...`` line where lines between two kept ones are left out, saying how many."""
    import inspect

    obj = inspect.unwrap(obj)  # a decorated method (torch.inference_mode, say): its own source and file
    lines, first = inspect.getsourcelines(obj)
    at = [i for i, line in enumerate(lines) if wanted(line)]
    kept = []
    for k, i in enumerate(at):
        if gaps and k and i - at[k - 1] > 1:
            n = i - at[k - 1] - 1
            kept.append(f"{'...':>5}  ({n} line{'s' * (n > 1)} left out)")
        kept.append(f"{first + i:5d}  {lines[i].rstrip()}")
    if gaps and at and at[-1] < len(lines) - 1:
        kept.append(f"{'...':>5}  (the rest of {obj.__qualname__} left out)")
    if not kept:
        raise RuntimeError(f"the installed vLLM's {obj.__qualname__} no longer holds the lines shown here")
    path = str(inspect.getsourcefile(obj))
    path = path[path.rfind("/vllm/") + 1 :]  # vllm/..., as in vLLM's repository
    return f"{path}, {obj.__qualname__}:\n" + "\n".join(kept)


def dummy_decode_source() -> str:
    """The lines of the installed vLLM's ``GPUModelRunner._dummy_run`` (the batch a graph is captured on) that set
    the capture batch's query length and its sequence lengths: a uniform decode batch is one token per request, and
    its sequences are ``max_query_len`` tokens long."""
    with quiet_vllm():
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    def wanted(line: str) -> bool:
        code = line.strip()
        return code.startswith(("max_query_len = self.uniform_decode_query_len", "seq_lens = max_query_len"))

    return _lines(GPUModelRunner._dummy_run, wanted)


def padding_source() -> str:
    """The installed vLLM's ``CudagraphDispatcher._compute_bs_to_padded_graph_size``: the rule that sends a batch
    size between two capture sizes to the larger one (whose graph it then replays)."""
    with quiet_vllm():
        from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher

    def wanted(line: str) -> bool:
        words = (
            "for end, start",
            "capture_sizes + [",
            "[0] + capture_sizes",
            "for bs in range",
            "if bs ==",
            "else:",
            "] = ",
        )
        return any(w in line for w in words)

    return _lines(CudagraphDispatcher._compute_bs_to_padded_graph_size, wanted)


def debug_check_source() -> str:
    """The installed vLLM's own replay check (``CUDAGraphWrapper``): on only when ``VLLM_LOGGING_LEVEL`` is
    ``DEBUG``, it compares the ``data_ptr()`` of the wrapper's positional tensor arguments (``args``) with the
    capture's, nothing else."""
    with quiet_vllm():
        from vllm.compilation.cuda_graph import CUDAGraphWrapper

    def switch(line: str) -> bool:
        return "self.is_debugging_mode = " in line

    def check(line: str) -> bool:
        code = line.strip()
        starts = (
            "if self.is_debugging_mode",
            "input_addresses = [",
            "entry.input_addresses = ",
            "new_input_addresses = [",
        )
        starts += ("assert new_input_addresses",)
        return code.startswith(starts)

    def read(line: str) -> bool:
        return check(line) or "data_ptr() for x in args" in line

    return _lines(CUDAGraphWrapper.__init__, switch) + "\n" + _lines(CUDAGraphWrapper.__call__, read, gaps=True)


def copy_call_sites():
    """Where the installed vLLM's FlexAttention backend calls ``copy_to_persistent``, and where the builder that runs
    before every step calls the function that copies ``kv_indices``: one row per call (function, line, code), read
    from the module's source with :mod:`ast`."""
    import ast
    import inspect

    import pandas as pd

    with quiet_vllm():
        from vllm.v1.attention.backends import flex_attention as fa

    path = inspect.getsourcefile(fa)
    text = inspect.getsource(fa)
    lines = text.splitlines()
    rows = []

    def visit(node, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                visit(child, [*where, child.name])
                continue
            if isinstance(child, ast.Call):
                name = getattr(child.func, "id", None) or getattr(child.func, "attr", None)
                if name in ("copy_to_persistent", "_build_block_mask_direct"):
                    rows.append(
                        {
                            "function": ".".join(where),
                            "line": child.lineno,
                            "calls": name,
                            "code": lines[child.lineno - 1].strip(),
                        }
                    )
            visit(child, where)

    visit(ast.parse(text), [])
    if not rows:
        raise RuntimeError(f"{path}: no call of copy_to_persistent found")
    return pd.DataFrame(rows).sort_values("line").reset_index(drop=True)
