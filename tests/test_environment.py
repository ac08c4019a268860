"""The two ways to install agree, and the README's commands are what CI runs."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject_pins():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def environment_pins():
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^\s+- ([A-Za-z0-9_.\-]+==[^\s#]+)", pip_section, re.M)]


def test_environment_yml_pins_equal_pyproject():
    assert environment_pins() == pyproject_pins()


def test_the_buggy_release_and_its_torch_are_pinned():
    pins = pyproject_pins()
    assert "vllm==0.20.0" in pins and "torch==2.11.0" in pins
    assert all("==" in p for p in pins), "every dependency is pinned"
    for package in ("jupyterlab", "matplotlib", "pandas", "papermill", "ipykernel", "nbformat", "pytest"):
        assert any(p.startswith(package + "==") for p in pins), package


def test_environment_yml_is_python_312():
    assert re.search(r"^\s+- python=3\.12\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert "make test" in readme and "make notebooks" in readme and "make lab" in readme


def test_installed_versions_match_the_pins():
    from importlib import metadata

    for pin in pyproject_pins():
        name, version = pin.split("==")
        assert metadata.version(name) == version, pin
