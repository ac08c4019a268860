"""The package as a user installs it, not the source tree (issue #20).

The wheel and the sdist are built offline from a copy of the tree with the virtualenv's setuptools; the wheel is
installed (``--no-deps --no-index``) into a fresh virtualenv that sees the locked packages through a ``.pth`` line
but not the source tree nor the editable install's finder (a path line in a ``.pth`` file does not run the ``.pth``
files of the folder it adds), and every module is imported there from a folder outside the repository.  A second
fresh virtualenv holds a fake vLLM 0.21.0 (a ``dist-info`` only): installing flexfix must leave it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "flexfix").rglob("*.py"))
SOURCE_MODULES = sorted(
    ".".join(Path(f).with_suffix("").parts[:-1] if f.endswith("__init__.py") else Path(f).with_suffix("").parts)
    for f in PACKAGE_FILES
)
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "data", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"
)
TIMEOUT = 600


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def fresh_venv(folder: Path, see_locked: bool) -> tuple[Path, Path]:
    """A virtualenv without pip (pip runs from outside with --python): its python and its site-packages."""
    run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    python = folder / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    if see_locked:
        (site / "locked-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def pip_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input", *args])


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The wheel and the sdist of a copy of the source tree, built offline."""
    out = tmp_path_factory.mktemp("dist")
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), "."],
        cwd=src)  # fmt: skip
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"], cwd=src)
    return out


def only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_the_wheel_holds_every_module_and_the_entry_points(dist):
    with zipfile.ZipFile(only(dist, "flexfix-*.whl")) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert sorted(n for n in names if n.startswith("flexfix/") and n.endswith(".py")) == PACKAGE_FILES
    assert "flexfix = flexfix.cli:main" in entry_points
    assert "flexfix = flexfix.integration.vllm_plugin:register" in entry_points
    assert "License-Expression: Apache-2.0" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and all("extra ==" in line for line in requires), requires  # nothing without an extra


def test_the_sdist_holds_every_package_file(dist):
    with tarfile.open(only(dist, "flexfix-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = [f for f in PACKAGE_FILES if f not in names]
    assert not missing, missing
    assert {"pyproject.toml", "README.md", "LICENSE"} <= names


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import flexfix
names = ["flexfix"] + [m.name for m in pkgutil.walk_packages(flexfix.__path__, "flexfix.")]
for name in names:
    if name != "flexfix.__main__":  # running it is the command itself
        importlib.import_module(name)
print(json.dumps({"file": flexfix.__file__, "modules": sorted(names)}))
"""


def test_the_installed_wheel_imports_every_module_outside_the_repository(dist, tmp_path):
    python, site = fresh_venv(tmp_path / "venv", see_locked=True)
    pip_install(python, "--no-deps", "--no-index", str(only(dist, "flexfix-*.whl")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = json.loads(run([str(python), "-c", IMPORT_ALL], cwd=elsewhere).stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site), found["file"]
    assert found["modules"] == SOURCE_MODULES
    version = run([str(tmp_path / "venv" / "bin" / "flexfix"), "--version"], cwd=elsewhere).stdout.strip()
    assert version == f"flexfix {found_version(python, elsewhere)}"


def found_version(python: Path, cwd: Path) -> str:
    return run([str(python), "-c", "import flexfix; print(flexfix.__version__)"], cwd=cwd).stdout.strip()


def test_installing_flexfix_leaves_a_fixed_vllm_alone(dist, tmp_path):
    """pip must not replace vLLM 0.21.0 (fixed) by an affected release, nor refuse to install next to it."""
    python, site = fresh_venv(tmp_path / "venv", see_locked=False)
    info = site / "vllm-0.21.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.21.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    done = pip_install(python, "--no-index", "--find-links", str(dist), "flexfix")
    assert "vllm" not in done.stdout.lower().replace("vllm-0.21.0", ""), done.stdout
    seen = run([str(python), "-c", "from importlib import metadata; print(metadata.version('vllm'))"]).stdout
    assert seen.strip() == "0.21.0"


def test_a_bare_install_says_what_it_can_and_what_it_lacks(dist, tmp_path):
    """`pip install .` with no extra and no torch or vLLM (a serving venv before vLLM, say): `flexfix status` and the
    guard's mode report without a traceback; a command that needs the notebooks' packages says which, exit 2."""
    python, _ = fresh_venv(tmp_path / "venv", see_locked=False)
    pip_install(python, "--no-deps", "--no-index", str(only(dist, "flexfix-*.whl")))
    flexfix = str(tmp_path / "venv" / "bin" / "flexfix")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    status = subprocess.run([flexfix, "status"], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
                            env={**env, "FLEXFIX_GUARD": "eager"})  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "vLLM: not installed" in status.stdout and "FLEXFIX_GUARD: eager" in status.stdout
    guard = subprocess.run([flexfix, "guard", "--help"], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert guard.returncode == 2 and "Traceback" not in guard.stderr
    assert guard.stderr.startswith("flexfix guard: needs ") and "pip install '.[notebooks]'" in guard.stderr
