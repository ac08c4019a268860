"""flexfix.integration.vllm_patch against the installed vLLM 0.20.0, and against fake modules."""

import importlib
import json
import logging
import os
import subprocess
import sys
import types
from importlib.metadata import entry_points

import pytest
import torch

from flexfix.integration import vllm_patch
from flexfix.mechanism.persistent import copy_to_persistent, copy_to_persistent_as_strided

fa = importlib.import_module(vllm_patch.MODULE)


@pytest.fixture(autouse=True)
def unpatched():
    vllm_patch.revert()
    yield
    vllm_patch.revert()


def strides_after_copy(copy):
    dst = torch.zeros(4, 8, dtype=torch.int32)
    return copy(dst, torch.ones(2, 3, dtype=torch.int32)).stride()


def test_apply_then_revert_restores_the_original_objects():
    original_copy = fa.copy_to_persistent
    assert strides_after_copy(fa.copy_to_persistent) == (3, 1)
    assert fa.FlexAttentionBackend.supports_batch_invariance() is False
    assert vllm_patch.apply() is True
    assert fa.copy_to_persistent is copy_to_persistent
    assert strides_after_copy(fa.copy_to_persistent) == (8, 1)
    assert fa.FlexAttentionBackend.supports_batch_invariance() is True
    assert vllm_patch.revert() is True
    assert fa.copy_to_persistent is original_copy
    assert fa.FlexAttentionBackend.supports_batch_invariance() is False
    assert "supports_batch_invariance" not in fa.FlexAttentionBackend.__dict__


def test_apply_twice_patches_once_and_revert_twice_is_harmless():
    assert vllm_patch.apply() is True
    assert vllm_patch.apply() is False
    assert vllm_patch.revert() is True
    assert vllm_patch.revert() is False


def test_revert_without_apply_does_nothing():
    original = fa.copy_to_persistent
    assert vllm_patch.revert() is False
    assert fa.copy_to_persistent is original


def test_context_manager_restores_even_when_the_body_raises():
    original = fa.copy_to_persistent
    with pytest.raises(KeyError):
        with vllm_patch.patched():
            assert vllm_patch.is_patched()
            raise KeyError("boom")
    assert fa.copy_to_persistent is original and not vllm_patch.is_patched()


def test_context_manager_keeps_an_outer_patch():
    vllm_patch.apply()
    with vllm_patch.patched():
        pass
    assert vllm_patch.is_patched()


def test_status_reports_version_and_state():
    s = vllm_patch.status()
    assert s["vllm"] == "vLLM 0.20.0" and s["fixed_upstream"] is False and s["patched"] is False
    vllm_patch.apply()
    assert vllm_patch.status()["patched"] is True and vllm_patch.status()["supports_batch_invariance"] is True


def test_sources_show_both_versions():
    original, fixed = vllm_patch.sources()
    assert "as_strided(src.shape, src.stride())" in original and "def copy_to_persistent" in fixed
    # the fix's views keep the buffer's own strides: it may build its slice with as_strided, never with src's strides
    assert "src.stride()" not in fixed and "as_strided(shape, dst.stride())" in fixed


def fake_module(copy, with_backend=True):
    mod = types.ModuleType("fake_flex_attention")
    mod.copy_to_persistent = copy
    if with_backend:

        class FlexAttentionBackend:
            @classmethod
            def supports_batch_invariance(cls):
                return False

        mod.FlexAttentionBackend = FlexAttentionBackend
    return mod


@pytest.mark.adversarial
def test_a_copy_that_fails_the_probe_is_refused():
    def broken(dst, src):
        raise TypeError("unexpected")

    with pytest.raises(RuntimeError, match="failed flexfix's probe"):
        vllm_patch.apply(fake_module(broken))
    assert not vllm_patch.is_patched()


def test_unknown_layout_is_refused_with_the_missing_names():
    mod = fake_module(copy_to_persistent_as_strided, with_backend=False)
    with pytest.raises(RuntimeError, match="FlexAttentionBackend"):
        vllm_patch.apply(mod)
    assert mod.copy_to_persistent is copy_to_persistent_as_strided


def upstream_sliced_copy(dst, src):
    """vLLM 0.21.0's copy, as a vLLM module would define it (not flexfix's function)."""
    view = dst[tuple(slice(0, n) for n in src.shape)]
    view.copy_(src)
    return view


@pytest.mark.adversarial
def test_a_vllm_fixed_upstream_is_left_alone(capsys):
    mod = fake_module(upstream_sliced_copy)
    assert vllm_patch.release_class(mod) == "sliced" and vllm_patch.fixed_upstream(mod) is True
    assert vllm_patch.apply(mod) is False
    assert "fixed upstream" in capsys.readouterr().out
    assert mod.copy_to_persistent is upstream_sliced_copy and not vllm_patch.is_patched()


@pytest.mark.adversarial
def test_a_release_without_persistent_buffers_is_left_alone(capsys):
    mod = fake_module(None)
    del mod.copy_to_persistent
    assert vllm_patch.release_class(mod) == "no_persistent_buffers" and not vllm_patch.fixed_upstream(mod)
    assert vllm_patch.apply(mod) is False
    assert "no persistent FlexAttention buffers" in capsys.readouterr().out
    assert not hasattr(mod, "copy_to_persistent") and not vllm_patch.is_patched()
    assert vllm_patch.status(mod)["release_class"] == "no_persistent_buffers"


@pytest.mark.adversarial
def test_flexfix_function_planted_outside_the_patch_is_not_taken_for_vllms():
    mod = fake_module(copy_to_persistent)
    with pytest.raises(RuntimeError, match="cannot tell what this vLLM ships"):
        vllm_patch.fixed_upstream(mod)


@pytest.mark.adversarial
def test_fixed_upstream_judges_vllms_original_while_patched():
    assert vllm_patch.apply() is True
    assert fa.copy_to_persistent is copy_to_persistent
    assert vllm_patch.fixed_upstream() is False and vllm_patch.status()["fixed_upstream"] is False
    assert vllm_patch.status()["release_class"] == "as_strided"
    assert "as_strided" in vllm_patch.sources()[0]


@pytest.mark.adversarial
def test_apply_and_revert_from_many_threads_at_once():
    """Issue #13: two threads both 'patched' and the original was lost. Now exactly one apply wins,
    exactly one revert wins, and vLLM's own objects come back."""
    import threading

    original = fa.copy_to_persistent

    def all_at_once(fn, n=8):
        barrier, results = threading.Barrier(n), []

        def worker():
            barrier.wait()
            results.append(fn())

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return sorted(results)

    for _ in range(20):
        assert all_at_once(vllm_patch.apply) == [False] * 7 + [True]
        assert vllm_patch.is_patched() and vllm_patch.status()["fixed_upstream"] is False
        assert all_at_once(vllm_patch.revert) == [False] * 7 + [True]
        assert fa.copy_to_persistent is original and not vllm_patch.is_patched()
        assert "supports_batch_invariance" not in fa.FlexAttentionBackend.__dict__


def test_without_vllm_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="pip install vllm==0.20.0"):
        vllm_patch.status()


def test_check_cycle_reports_every_check_true_after_the_first_two():
    rows = vllm_patch.check_cycle()
    assert [r["value"] for r in rows[:2]] == [False, False]
    assert all(r["value"] for r in rows[2:]), rows
    assert not vllm_patch.is_patched()


def test_entry_point_is_registered():
    eps = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "flexfix"]
    assert len(eps) == 1 and eps[0].value == "flexfix.integration.vllm_plugin:register"


# One process imports vLLM's plugin loader and its config (6 s of CPU: as in a vLLM process, where the config is
# read before the plugins are loaded), not the attention backend, then forks a process per FLEXFIX_PATCH value, as
# vLLM forks its engine core: each loads every general plugin, then imports the backend, on its own stdout and
# stderr; the parent prints each one's exit status.
PLUGIN_FORKS = """
import json, os, sys
import vllm.config
from vllm.plugins import load_general_plugins

assert "vllm.v1.attention.backends.flex_attention" not in sys.modules  # each fork imports the backend itself

folder, statuses = sys.argv[1], {}
for flag in json.loads(sys.argv[2]):
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            for fd, end in ((1, "out"), (2, "err")):
                os.dup2(os.open(os.path.join(folder, f"{flag}.{end}"), os.O_WRONLY | os.O_CREAT), fd)
            os.environ.pop("FLEXFIX_PATCH", None)
            if flag != "unset":
                os.environ["FLEXFIX_PATCH"] = flag
            load_general_plugins()
            from vllm.v1.attention.backends.flex_attention import FlexAttentionBackend as B
            print("BI", B.supports_batch_invariance())
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    statuses[flag] = pid
print(json.dumps({flag: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for flag, pid in statuses.items()}))
"""


def test_plugin_patches_only_with_the_flag(tmp_path):
    """In fresh processes, as vLLM does it: load every general plugin, then look at the backend (the three
    flag values side by side: each process forked from one that imported vLLM's config and plugin loader, not the
    backend)."""
    env = {k: v for k, v in os.environ.items() if k != "FLEXFIX_PATCH"}
    flags = {"1": True, "0": False, "unset": False}
    run = subprocess.run(
        [sys.executable, "-c", PLUGIN_FORKS, str(tmp_path), json.dumps(list(flags))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    codes = json.loads(run.stdout.splitlines()[-1])
    for flag, patched in flags.items():
        out, err = (tmp_path / f"{flag}.out").read_text(), (tmp_path / f"{flag}.err").read_text()
        assert codes[flag] == 0, err[-2000:]
        assert f"BI {patched}" in out, (flag, out)
        # the plugin's line, formatted by vLLM's own handler (logger vllm.flexfix; vLLM logs to stdout)
        said = [line for line in (out + err).splitlines() if "flexfix:" in line]
        if patched:
            assert len(said) == 1 and "flexfix: patched vLLM's FlexAttention backend in process" in said[0], said
            assert said[0].startswith("INFO") and "vllm_plugin.py" in said[0] and said[0] in out.splitlines(), said
        else:
            assert said == [], said


@pytest.mark.adversarial
@pytest.mark.parametrize(
    "value, wanted",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" 1", True),
        ("on\n", True),
        ("0", False),
        ("", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_flag_spellings(value, wanted):
    from flexfix.integration.vllm_plugin import patch_requested

    assert patch_requested({"FLEXFIX_PATCH": value}) is wanted
    assert patch_requested({}) is False


@pytest.mark.adversarial
@pytest.mark.parametrize("value", ["maybe", "2", "patch", "1.0"])
def test_an_unknown_flag_value_is_refused_by_name(value):
    from flexfix.integration.vllm_plugin import patch_requested

    with pytest.raises(ValueError, match=repr(value).replace(".", r"\.")):
        patch_requested({"FLEXFIX_PATCH": value})


@pytest.mark.adversarial
def test_plugin_says_one_line_and_never_raises_where_nothing_can_be_patched(monkeypatch, caplog):
    """0.19-style module (no buffers), 0.21-style (sliced) and an unknown layout: vLLM starts anyway.  The line
    goes to the logger vllm.flexfix, under vLLM's own (whose handler formats and writes it)."""
    from flexfix.integration import vllm_plugin

    caplog.set_level(logging.INFO, logger="vllm.flexfix")
    monkeypatch.setenv("FLEXFIX_PATCH", "1")
    no_buffers = fake_module(None)
    del no_buffers.copy_to_persistent
    for mod, words in (
        (no_buffers, "no persistent FlexAttention buffers"),
        (fake_module(upstream_sliced_copy), "fixed upstream"),
        (fake_module(None, with_backend=False), "was not patched"),
    ):
        monkeypatch.setattr(vllm_patch, "_module", lambda module=None, mod=mod: mod)
        caplog.clear()
        vllm_plugin.register()
        said = [r for r in caplog.records if r.name == "vllm.flexfix"]
        assert len(said) == 1 and words in said[0].getMessage(), said
        assert said[0].getMessage().startswith("flexfix: FLEXFIX_PATCH is set")
        assert not vllm_patch.is_patched()


@pytest.mark.adversarial
def test_a_mistyped_flag_stops_vllms_start_with_the_value_named():
    env = {**os.environ, "FLEXFIX_PATCH": "ture"}
    code = "from vllm.plugins import load_general_plugins; load_general_plugins()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "ValueError: FLEXFIX_PATCH='ture' is not understood" in out.stderr


@pytest.mark.adversarial
def test_status_and_check_cycle_on_a_release_without_buffers_or_batch_invariance():
    """vLLM 0.19.1: no copy_to_persistent, and FlexAttentionBackend has no supports_batch_invariance at all."""
    mod = fake_module(None)
    del mod.copy_to_persistent
    del mod.FlexAttentionBackend.supports_batch_invariance
    s = vllm_patch.status(mod)
    assert s["release_class"] == "no_persistent_buffers" and s["supports_batch_invariance"] is None
    assert s["copy_to_persistent"] is None and s["patched"] is False
    rows = vllm_patch.check_cycle(mod)
    assert rows[0]["check"] == "release class: no_persistent_buffers" and all(r["value"] for r in rows)
    assert not vllm_patch.is_patched()
