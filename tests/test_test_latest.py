"""tools/test_latest.py (`make test-latest`) and what it relies on: requirements.in names the
book's direct dependencies, and requirements.lock with the Makefile pin one version of each
package on every Python the book supports (3.11 to 3.15). The run itself installs from the
network and takes as long as `make test`; it is not part of `make test`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
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


def plain_make_env() -> dict[str, str]:
    """This process's environment without what an outer `make test PYTHON=...` passes down
    (its flags, and its command-line variables, which make also exports), so that the
    Makefile is read with its own defaults."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    own = set(re.findall(r"^(\w+)\s*\?=", makefile, flags=re.MULTILINE))
    passed_down = {"MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL"} | own
    return {key: value for key, value in os.environ.items() if key not in passed_down}


def makefile_torch(tmp_path: Path, minor: str) -> str:
    """The torch requirement the Makefile installs when PYTHON is a Python 3.<minor>."""
    python = tmp_path / f"python3.{minor}"
    python.write_text(f"#!/bin/sh\necho {minor}\n")
    python.chmod(0o755)
    show = tmp_path / "show.mk"
    show.write_text(f"include {ROOT / 'Makefile'}\nshow-torch:\n\t@echo $(TORCH)\n")
    done = subprocess.run(["make", "-s", "-f", str(show), "show-torch", f"PYTHON={python}"],
                          cwd=ROOT, capture_output=True, text=True, check=True, env=plain_make_env())
    return done.stdout.strip()


@pytest.mark.parametrize(("minor", "torch"), [("9", "torch==2.13.0+cpu"), ("11", "torch==2.13.0+cpu"),
                                              ("14", "torch==2.13.0+cpu"), ("15", "torch==2.15.0+cpu"),
                                              ("16", "torch==2.13.0+cpu")])
def test_the_makefile_installs_a_torch_that_has_wheels_for_the_python(tmp_path, minor, torch):
    assert makefile_torch(tmp_path, minor) == torch


@pytest.mark.parametrize("minor", ["9", "10", "16"])
def test_the_makefile_refuses_a_python_the_lock_is_not_made_for(tmp_path, minor):
    python = tmp_path / f"python3.{minor}"
    python.write_text(f"#!/bin/sh\necho {minor}\n")
    python.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(["make", str(venv / ".installed"), f"VENV={venv}", f"PYTHON={python}"],
                          cwd=ROOT, capture_output=True, text=True, env=plain_make_env())
    assert done.returncode != 0 and "is not Python 3.11 to 3.15" in done.stdout + done.stderr
    assert not venv.exists()


def test_requirements_in_names_direct_dependencies_the_lock_pins():
    direct = {canonicalize_name(r.name) for r in requirements("requirements.in")}
    assert direct <= set(pins_for("3.11")), "requirements.in names a package the lock does not pin"
    with open(ROOT / "pyproject.toml", "rb") as file:
        package = {canonicalize_name(Requirement(line).name)
                   for line in tomllib.load(file)["project"]["dependencies"]}
    assert package - direct == {"torch"}, "the package's dependencies, torch apart, are direct ones"
    assert "torch" not in direct, "torch is installed first, from PyTorch's CPU index"


def test_newest_python_prefers_the_highest_minor(tmp_path):
    for minor in ("11", "13", "15"):
        (tmp_path / f"python3.{minor}").write_text("#!/bin/sh\n")
        (tmp_path / f"python3.{minor}").chmod(0o755)
    assert test_latest.newest_python(path=str(tmp_path)) == str(tmp_path / "python3.15")
    assert test_latest.newest_python(range(14, 9, -1), path=str(tmp_path)) == str(tmp_path / "python3.13")
    with pytest.raises(SystemExit, match="no python3 on PATH"):
        test_latest.newest_python(path=str(tmp_path / "empty"))


def test_a_python_that_is_missing_or_too_old_is_refused_at_once(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3 9\n")
    old.chmod(0o755)
    with pytest.raises(SystemExit, match=r"is Python 3.9; the book needs 3.11 or newer"):
        test_latest.checked_python(str(old))
    with pytest.raises(SystemExit, match="is not an executable on PATH"):
        test_latest.checked_python("python3.99")
    assert test_latest.checked_python(sys.executable) == sys.executable


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
    steps, failures = test_latest.what_broke(OUTPUT, 1)
    assert steps == ["lint          1.0  ok  (1 passed, 0 failed)",
                     "unit          3.0  FAILED  (10 passed, 1 failed)",
                     "site         40.0  FAILED  (0 passed, 1 failed)"]
    assert failures == ["FAILED tests/test_viz.py::test_heatmap - AssertionError: labels moved",
                        "site: /book/chapters/04.ipynb:12: WARNING: image file not readable"]
    assert test_latest.what_broke("===== summary (seconds)\nlint 1.0  ok  (1 passed, 0 failed)\n", 0)[1] == []


def test_a_failed_step_that_names_no_test_shows_its_last_lines():
    output = ("===== lint: ruff check src ...\nsrc/attnbook/viz.py:3:1: F401 `os` imported but unused\n"
              "Found 1 error.\n===== unit: pytest tests ...\n"
              "ERROR: usage: pytest [options]\npytest: error: unrecognized arguments: --nbval\n"
              "\n===== summary (seconds)\nlint          0.5  FAILED  (0 passed, 1 failed)\n"
              "unit          0.4  FAILED  (0 passed, 0 failed)\n")
    steps, failures = test_latest.what_broke(output, 1)
    assert failures[:3] == ["lint failed; its last lines:",
                            "src/attnbook/viz.py:3:1: F401 `os` imported but unused", "Found 1 error."]
    assert "ERROR: usage: pytest [options]" in failures, "a usage error is named"


def test_tests_that_crash_before_their_summary_are_reported():
    output = "===== lint: ruff check ...\nTraceback (most recent call last):\nFileNotFoundError: ruff\n"
    steps, failures = test_latest.what_broke(output, 1)
    assert steps == []
    assert failures[0] == "the tests ended before their summary (exit 1); the last lines:"
    assert failures[-1] == "FileNotFoundError: ruff"


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
