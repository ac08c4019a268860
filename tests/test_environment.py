"""The ways to install agree: pyproject.toml, the exact lock, environment.yml, the Makefile and the README."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(environment: dict | None = None) -> dict[str, str]:
    """name -> version for every line of the lock whose marker holds in ``environment`` (default: here)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(environment):
            (spec,) = req.specifier
            assert spec.operator == "==", f"lock line is not an exact pin: {line}"
            pins[canonical(req.name)] = spec.version
    return pins


def locked_extras() -> list[str]:
    """The extras `make` installs and `make lock` compiles (the Makefile's EXTRAS)."""
    makefile = (ROOT / "Makefile").read_text()
    return re.search(r"^EXTRAS\s+:= (.+)$", makefile, re.M).group(1).split(",")


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in locked_extras() for r in project["optional-dependencies"][extra]
    ]


def test_installing_flexfix_requires_nothing():
    """`pip install flexfix` (no extra) never changes which vLLM or torch a user has: the plugin imports vLLM lazily
    and decides at run time what to patch.  tests/test_packaging.py installs the wheel next to a vLLM 0.21.0."""
    assert PYPROJECT["project"]["dependencies"] == []
    installed = [Requirement(r) for r in metadata.requires("flexfix") or []]
    assert all(r.marker is not None and "extra" in str(r.marker) for r in installed), installed
    for heavy in ("jupyterlab", "pandas", "matplotlib", "papermill", "pytest", "hypothesis", "vllm", "torch"):
        assert any(canonical(r.name) == heavy for r in installed), heavy


def test_the_reproduction_pins_the_affected_release():
    """The `repro` extra and the lock keep the exact pins of every recorded run: vLLM 0.20.0 (0.20.0-0.20.2 carry
    the bug) and its torch."""
    repro = PYPROJECT["project"]["optional-dependencies"]["repro"]
    assert "vllm==0.20.0" in repro and "torch==2.11.0" in repro
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]  # PEP 639: license = "Apache-2.0"


def test_lock_pins_the_whole_environment_exactly():
    pins = lock_pins()
    assert pins["vllm"] == "0.20.0" and pins["torch"] == "2.11.0"
    assert len(pins) > 200, "the lock holds the full environment, not only the direct dependencies"


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_lock_satisfies_every_declared_requirement(python):
    env = {
        **default_environment(),
        "python_version": python,
        "python_full_version": python + ".0",
        "sys_platform": "linux",
        "platform_system": "Linux",
    }
    pins = lock_pins(env)
    for req in declared():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonical(req.name)
        assert name in pins, f"{req} is declared in pyproject.toml but missing from requirements.lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"lock has {name}=={pins[name]}: {req}"


def test_installed_versions_match_the_lock():
    for name, version in lock_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name}=={version} is in the lock but not installed (run make install)")
        assert installed == version, f"{name}: installed {installed}, locked {version}"


def test_environment_yml_installs_the_lock_on_a_supported_python():
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    assert re.findall(r"^\s+- (.+)$", pip_section, re.M) == ["-r requirements.lock", "-e ."]
    python = re.search(r"^\s+- python=(3\.\d+)\s*$", text, re.M).group(1)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python)


def test_makefile_installs_the_lock_and_ci_runs_the_readme_test_command():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK       := requirements.lock" in makefile and "-r $(LOCK)" in makefile
    assert locked_extras() == ["notebooks", "test", "repro"]
    # LOCK_CMD is expanded where it is defined (:=): `comma` must exist by then, or `make lock` compiles one extra
    # named "notebooks,test,repro" and rewrites the lock's header
    assert makefile.index("comma      := ,") < makefile.index("$(comma)")
    header = LOCK.read_text().splitlines()[1]
    assert header.endswith(
        "--extra notebooks --extra test --extra repro --universal --python-version 3.11 -o requirements.lock"
    )
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M)
    for command in ("make test", "make notebooks", "make lab", "make lock"):
        assert command in readme, command


def test_version_is_one_number():
    import flexfix

    assert flexfix.__version__ == metadata.version("flexfix")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {flexfix.__version__}" in changelog, "CHANGELOG.md announces the current version"


def test_licence_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert metadata.metadata("flexfix")["License-Expression"] == "Apache-2.0"
