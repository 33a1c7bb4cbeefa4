"""binder/: what Binder (repo2docker) and a JupyterHub image built with it read. The files
are generated from requirements.lock and the Makefile (tools/binder_env.py) and must not
drift; the environment they describe is checked as far as a machine without containers
allows: its pins are the environment these tests run in, pip resolves the whole file
against this machine's package sources without a CUDA build of torch, and postBuild's
install makes attnbook importable in a bare virtual environment."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from test_launch_cell import USE, _key, clean_env, clone_at_tag, make_bare_venv, run

from tools import binder_env, launch_cell

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "binder" / "requirements.txt"
# Binder builds on the Python of binder/runtime.txt (3.11). On another Python the tests'
# environment may hold another torch (the Makefile installs 2.15.0 on 3.15), and Binder's
# torch pin may have no wheel for it, so those two checks run on Binder's Python only.
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ON_BINDER_PYTHON = THIS_PYTHON == binder_env.python_version()


def pins() -> dict[str, str]:
    """name -> version of every `name==version` line of binder/requirements.txt that applies here."""
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if not line or line.startswith(("#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"not a pin: {line}"
            found[requirement.name] = spec.version
    return found


@pytest.fixture(scope="module", autouse=True)
def resolution(tmp_path_factory):
    """pip's dry run over binder/requirements.txt, started first: it waits on the network
    while the other tests of this file use the CPU."""
    if not ON_BINDER_PYTHON:
        yield None, None
        return
    folder = tmp_path_factory.mktemp("resolve")
    report = folder / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--retries", "1", "--report", str(report), "-r", str(REQUIREMENTS)]
    process = subprocess.Popen(command, cwd=folder, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    yield process, report
    if process.poll() is None:
        process.kill()
        process.wait()


def test_binder_files_are_what_the_generator_writes():
    assert binder_env.differences() == [], "run `python -m tools.binder_env` and commit binder/"


def test_the_generator_follows_the_lock_and_the_makefile(tmp_path):
    (tmp_path / "Makefile").write_text("PYTHON ?= $(shell command -v python3.12 || echo)\n"
                                       "TORCH_SPEC ?= torch==9.9.9+cpu\n"
                                       "TORCH_CPU_INDEX ?= https://example.org/cpu\n")
    (tmp_path / "requirements.lock").write_text("# header\nnumpy==2.0.0\n\ntriton==3.0 ; "
                                                "sys_platform == \"linux\"\n")
    files = binder_env.expected_files(tmp_path)
    lines = files["binder/requirements.txt"].splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        "--extra-index-url https://example.org/cpu", "torch==9.9.9+cpu", "numpy==2.0.0",
        'triton==3.0 ; sys_platform == "linux"']
    assert files["binder/runtime.txt"] == "python-3.12\n"
    assert binder_env.differences(tmp_path) == [
        "binder/requirements.txt", "binder/runtime.txt", "binder/postBuild"]
    assert binder_env.write(tmp_path) and binder_env.differences(tmp_path) == []
    assert os.access(tmp_path / "binder" / "postBuild", os.X_OK)
    (tmp_path / "requirements.lock").write_text("numpy==2.0.1\n")
    assert binder_env.differences(tmp_path) == ["binder/requirements.txt"]
    (tmp_path / "requirements.lock").write_text("torch==2.0\n")
    with pytest.raises(ValueError, match="TORCH_SPEC"):
        binder_env.expected_files(tmp_path)


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(os.environ.get("ATTNBOOK_UNPINNED") == "1",
                    reason="make test-latest runs with the newest releases, not the pins")
def test_binder_pins_are_the_environment_the_book_is_tested_in():
    torch_spec = binder_env.makefile_variable("TORCH_SPEC")
    found = pins()
    assert f"torch=={found['torch']}" == torch_spec and found["torch"].endswith("+cpu")
    if not ON_BINDER_PYTHON:
        del found["torch"]
    wrong = {name: (version, installed_version(name)) for name, version in found.items()
             if installed_version(name) != version}
    assert wrong == {}, f"binder pins differ from this environment (pin, installed): {wrong}"


def test_post_build_installs_attnbook_from_the_repository(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    python = make_bare_venv(folder)
    clone = clone_at_tag(folder)
    env = clean_env(PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    run(["bash", str(ROOT / "binder" / "postBuild")], cwd=clone, env=env)
    used = json.loads(run([str(python), "-c", USE], cwd=folder, env=clean_env()).stdout)
    # installed into the environment, not linked to the checkout (a hub hides that)
    assert Path(used["file"]).resolve().is_relative_to((folder / "venv").resolve()), used["file"]
    assert used["version"] == launch_cell.book_version()
    assert used["torch"] == torch.__version__


@pytest.mark.skipif(not ON_BINDER_PYTHON, reason=f"Binder builds on Python {binder_env.python_version()}, "
                    f"not {THIS_PYTHON}")
def test_pip_resolves_the_requirements_without_a_cuda_torch(resolution):
    process, report = resolution
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, f"pip could not resolve binder/requirements.txt:\n{output[-3000:]}"
    chosen = {item["metadata"]["name"]: item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen.get("torch") == pins()["torch"], chosen.get("torch")
    cuda = sorted(name for name in chosen if re.match(r"nvidia|cuda", name, re.I))
    assert cuda == [], f"a CUDA build crept in: {cuda}"
    chosen = {_key(name): version for name, version in chosen.items()}
    pinned = {_key(name): version for name, version in pins().items()}
    assert {name: chosen.get(name) for name in pinned} == pinned
    # pip freeze (make lock) leaves out pip's own tools; some packages depend on them
    assert set(chosen) - set(pinned) <= {"setuptools", "wheel", "pip"}, set(chosen) - set(pinned)
