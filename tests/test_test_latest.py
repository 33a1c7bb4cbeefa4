"""tools/test_latest.py (`make test-latest`) and what it relies on: requirements.in names the
book's direct dependencies, and requirements.lock with the Makefile pin one version of each
package on every Python the book supports (3.11 to 3.15). The run itself installs from the
network and takes as long as `make test`; it is not part of `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools import test_latest

ROOT = Path(__file__).resolve().parent.parent


def requirements(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.startswith("#")]


def pins_for(python: str) -> dict[str, list[str]]:
    """package -> the versions requirements.lock pins for Linux x86_64 with this Python."""
    environment = default_environment() | {"python_version": python, "python_full_version": f"{python}.0",
                                           "sys_platform": "linux", "platform_machine": "x86_64"}
    pins: dict[str, list[str]] = {}
    for requirement in requirements("requirements.lock"):
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"not a pin: {requirement}"
            pins.setdefault(canonicalize_name(requirement.name), []).append(spec.version)
    return pins


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13", "3.14", "3.15"])
def test_the_lock_pins_each_package_once_on_every_supported_python(python):
    pins = pins_for(python)
    assert {name: versions for name, versions in pins.items() if len(versions) != 1} == {}
    assert set(pins_for("3.11")) == set(pins), "a package is pinned on one Python and not another"


def test_python_315_gets_the_wheels_it_needs():
    old, new = pins_for("3.14"), pins_for("3.15")
    moved = {name for name in old if old[name] != new[name]}
    assert moved == {"numpy", "contourpy", "triton"}


def makefile_torch(tmp_path: Path, minor: str) -> str:
    """The torch requirement the Makefile installs when PYTHON is a Python 3.<minor>."""
    python = tmp_path / f"python3.{minor}"
    python.write_text(f"#!/bin/sh\necho {minor}\n")
    python.chmod(0o755)
    show = tmp_path / "show.mk"
    show.write_text(f"include {ROOT / 'Makefile'}\nshow-torch:\n\t@echo $(TORCH)\n")
    done = subprocess.run(["make", "-s", "-f", str(show), "show-torch", f"PYTHON={python}"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(("minor", "torch"), [("11", "torch==2.13.0+cpu"), ("14", "torch==2.13.0+cpu"),
                                              ("15", "torch==2.15.0+cpu")])
def test_the_makefile_installs_a_torch_that_has_wheels_for_the_python(tmp_path, minor, torch):
    assert makefile_torch(tmp_path, minor) == torch


def test_requirements_in_names_direct_dependencies_the_lock_pins():
    direct = {canonicalize_name(r.name) for r in requirements("requirements.in")}
    assert direct <= set(pins_for("3.11")), "requirements.in names a package the lock does not pin"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for name in ("numpy", "matplotlib", "tqdm", "ipywidgets", "triton"):
        assert f'"{name}' in pyproject and name in direct
    assert "torch" not in direct, "torch is installed first, from PyTorch's CPU index"


def test_newest_python_prefers_the_highest_minor(tmp_path, monkeypatch):
    for minor in ("11", "13", "15"):
        (tmp_path / f"python3.{minor}").write_text("#!/bin/sh\n")
        (tmp_path / f"python3.{minor}").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert test_latest.newest_python() == str(tmp_path / "python3.15")
    assert test_latest.newest_python(range(14, 9, -1)) == str(tmp_path / "python3.13")


OUTPUT = """
===== unit: pytest tests -m not site ...
FAILED tests/test_viz.py::test_heatmap - AssertionError: labels moved
1 failed, 10 passed in 3.0s
===== site: jupyter-book build . ...
/book/chapters/04.ipynb:12: WARNING: image file not readable
===== browser: pytest tests/test_site.py ...
5 passed

===== summary (seconds)
lint          1.0  ok  (1 passed, 0 failed)
unit          3.0  FAILED  (10 passed, 1 failed)
site         40.0  FAILED  (0 passed, 1 failed)
total        44.0
"""


def test_what_broke_reads_the_failed_tests_and_the_site_warnings():
    steps, failures = test_latest.what_broke(OUTPUT)
    assert steps == ["lint          1.0  ok  (1 passed, 0 failed)",
                     "unit          3.0  FAILED  (10 passed, 1 failed)",
                     "site         40.0  FAILED  (0 passed, 1 failed)"]
    assert failures == ["FAILED tests/test_viz.py::test_heatmap - AssertionError: labels moved",
                        "site: /book/chapters/04.ipynb:12: WARNING: image file not readable"]
    assert test_latest.what_broke("===== summary (seconds)\nlint 1.0  ok  (1 passed, 0 failed)\n")[1] == []


def test_moved_packages_compares_the_lock_with_the_environment(tmp_path):
    import importlib.metadata

    pytest_version = importlib.metadata.version("pytest")
    (tmp_path / "requirements.lock").write_text(
        f"# header\npytest=={pytest_version}\nnumpy==0.0.1\nnot-a-real-package==1.0\n"
        'packaging==0.0.2 ; python_version < "3.0"\n')
    moved = dict((name, (pin, now)) for name, pin, now in
                 test_latest.moved_packages(Path(sys.executable), tmp_path))
    assert "pytest" not in moved
    assert moved["numpy"] == ("0.0.1", importlib.metadata.version("numpy"))
    assert moved["not-a-real-package"] == ("1.0", "-")
    assert moved["packaging"] == ("-", importlib.metadata.version("packaging")), "its marker applies nowhere"
