"""flexfix.vllm_patch against the installed vLLM 0.20.0, and against fake modules."""

import importlib
import os
import subprocess
import sys
import types
from importlib.metadata import entry_points

import pytest
import torch

from flexfix import vllm_patch
from flexfix.persistent import copy_to_persistent, copy_to_persistent_as_strided

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
    assert "as_strided" in original and "def copy_to_persistent" in fixed and "as_strided" not in fixed


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


def test_unknown_layout_is_refused_with_the_missing_names():
    mod = fake_module(copy_to_persistent_as_strided, with_backend=False)
    with pytest.raises(RuntimeError, match="FlexAttentionBackend"):
        vllm_patch.apply(mod)
    assert mod.copy_to_persistent is copy_to_persistent_as_strided


def test_a_vllm_fixed_upstream_is_left_alone(capsys):
    from flexfix.persistent import copy_to_slice

    mod = fake_module(copy_to_slice)
    assert vllm_patch.fixed_upstream(mod) is True
    assert vllm_patch.apply(mod) is False
    assert "already has the fix" in capsys.readouterr().out
    assert mod.copy_to_persistent is copy_to_slice and not vllm_patch.is_patched()


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
    assert len(eps) == 1 and eps[0].value == "flexfix.vllm_plugin:register"


@pytest.mark.parametrize("flag, patched", [("1", True), ("0", False), (None, False)])
def test_plugin_patches_only_with_the_flag(flag, patched):
    """In a fresh process, as vLLM does it: load every general plugin, then look at the backend."""
    env = {k: v for k, v in os.environ.items() if k != "FLEXFIX_PATCH"}
    if flag is not None:
        env["FLEXFIX_PATCH"] = flag
    code = (
        "from vllm.plugins import load_general_plugins; load_general_plugins(); "
        "from vllm.v1.attention.backends.flex_attention import FlexAttentionBackend as B; "
        "print('BI', B.supports_batch_invariance())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"BI {patched}" in out.stdout
