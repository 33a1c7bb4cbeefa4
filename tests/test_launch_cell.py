"""The cell that makes launch buttons work (tools/launch_cell.py): every notebook starts by
installing `attnbook` where it is missing, from the repository at the book's version.

The end-to-end test runs the cell in a bare virtual environment (no attnbook), against a
local clone of this repository tagged `v<version>`, then imports the package there.
The environment holds only torch (the build the tests run with) and the packages attnbook depends on. By
default they are linked from the environment running the tests (the same wheels, no
copy: seconds); ATTNBOOK_BARE_VENV=install pip-installs them instead (about a minute
more on two cores). Either way pip sees them as installed, as on Colab or a hub image.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from packaging.requirements import Requirement

from tools import binder_env, launch_cell
from tools.make_exercises import exercise_from_solution

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = launch_cell.notebooks([])


# --- the cell and the tool -------------------------------------------------------------------

def titled_notebook() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 1. A chapter\n\nIntroduction."),
        nbformat.v4.new_code_cell("x = 1\nx", outputs=[nbformat.v4.new_output(
            "execute_result", {"text/plain": "1"}, execution_count=1)], execution_count=1),
        nbformat.v4.new_markdown_cell("More."),
    ])


def test_the_cell_installs_the_repository_of_config_at_the_version_tag():
    source = launch_cell.cell_source()
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    url = re.search(r"^\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.M).group(1)
    assert launch_cell.release_tag() == f"v{version}"
    assert f'"{url}"' in source and f"@v{version}" in source
    assert 'find_spec("attnbook") is None' in source and "ATTNBOOK_INSTALL_URL" in source
    assert source.startswith("# "), "the cell opens with a comment saying why it is there"
    assert max(len(line) for line in source.splitlines()) <= 88
    compile(source, "install-cell", "exec")


def test_the_cell_follows_config_and_pyproject(tmp_path):
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/a/b/\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "attnbook"\nversion = "2.3.4"\n')
    source = launch_cell.cell_source(tmp_path)
    assert '"https://example.org/a/b"' in source and "@v2.3.4" in source
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/" + "x" * 80 + "\n")
    with pytest.raises(ValueError, match="88 characters"):
        launch_cell.cell_source(tmp_path)


def test_the_cell_does_nothing_where_attnbook_is_installed(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(launch_cell.cell_source(), {})
    assert calls == [] and capsys.readouterr() == ("", "")


def test_the_cell_goes_after_the_title_and_the_tool_is_idempotent():
    source = launch_cell.cell_source()
    original = titled_notebook()
    code_cell = copy.deepcopy(original.cells[1])
    notebook = launch_cell.with_install_cell(original, source)
    assert [c.cell_type for c in notebook.cells] == ["markdown", "code", "code", "markdown"]
    cell = notebook.cells[1]
    assert cell.source == source and cell.outputs == [] and cell.execution_count is None
    assert cell.metadata["tags"] == ["remove-cell", "install-attnbook"]
    assert cell.id == "install-attnbook"
    assert notebook.cells[2] == code_cell, "another cell changed"
    nbformat.validate(notebook)
    before = json.dumps(notebook, sort_keys=True)
    again = launch_cell.with_install_cell(notebook, source)
    assert json.dumps(again, sort_keys=True) == before
    assert launch_cell.is_current(again, source)


def test_a_stale_or_moved_cell_is_replaced_in_place():
    notebook = launch_cell.with_install_cell(titled_notebook(), "# an old version\n")
    assert not launch_cell.is_current(notebook, launch_cell.cell_source())
    updated = launch_cell.with_install_cell(notebook, launch_cell.cell_source())
    assert [c.source for c in updated.cells].count(launch_cell.cell_source()) == 1
    assert len(updated.cells) == 4 and updated.cells[1].source == launch_cell.cell_source()
    moved = titled_notebook()
    moved.cells.append(updated.cells[1])
    assert not launch_cell.is_current(moved, launch_cell.cell_source())
    fixed = launch_cell.with_install_cell(moved, launch_cell.cell_source())
    assert [launch_cell.TAG in c.metadata.get("tags", []) for c in fixed.cells] == [
        False, True, False, False]


def test_check_names_stale_notebooks_and_the_tool_fixes_them(tmp_path, capsys):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(titled_notebook(), path)
    assert launch_cell.main(["--check", str(tmp_path)]) == 1
    assert "01_x.ipynb: the install cell is missing or stale" in capsys.readouterr().out
    assert launch_cell.main([str(path)]) == 0
    assert launch_cell.main(["--check", str(path)]) == 0
    written = path.read_bytes()
    assert launch_cell.main([str(path)]) == 0 and path.read_bytes() == written, "not idempotent"
    capsys.readouterr()
    assert launch_cell.main(["--tag"]) == 0 and capsys.readouterr().out.strip().startswith("v")


def test_generated_exercises_keep_the_cell_unchanged():
    solution = titled_notebook()
    solution.cells[0].source = "# Solutions 1: A chapter"
    solution.cells.insert(2, nbformat.v4.new_code_cell(
        "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"))
    solution = launch_cell.with_install_cell(solution, launch_cell.cell_source())
    exercise = exercise_from_solution(solution)
    assert exercise.cells[1].source == launch_cell.cell_source()
    assert exercise.cells[1].metadata["tags"] == ["remove-cell", "install-attnbook"]
    assert launch_cell.is_current(exercise, launch_cell.cell_source())


def test_every_notebook_has_the_current_install_cell():
    assert NOTEBOOKS, "no notebooks found"
    stale = [str(p.relative_to(ROOT)) for p in launch_cell.stale(NOTEBOOKS)]
    assert stale == [], f"run `python -m tools.launch_cell` (then `make exercises`): {stale}"


# --- the cell in a bare virtual environment --------------------------------------------------

def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a command in another Python: none of this one's paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(name: str = "attnbook") -> list[importlib.metadata.Distribution]:
    """The installed distributions `name` needs, transitively (markers of this platform)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = needs(importlib.metadata.distribution(name), set())
    while todo:
        requirement = todo.pop()
        key = _key(requirement.name)
        if key in found and requirement.extras <= extras_seen[key]:
            continue  # a package reached again with new extras is read again for them
        found[key] = importlib.metadata.distribution(requirement.name)
        extras_seen[key] = extras_seen.get(key, set()) | requirement.extras
        todo += needs(found[key], requirement.extras)
    return list(found.values())


def needs(dist: importlib.metadata.Distribution, extras: set[str]) -> list[Requirement]:
    """What `dist` requires here, with the requested extras (PyPI's CUDA torch asks for
    cuda-toolkit[cublas,...], whose extras pull in the nvidia-* packages)."""
    found = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                             for extra in {"", *extras}):
            found.append(requirement)
    return found


def link_packages(site: Path, view: Path) -> list[str]:
    """Make pip and attnbook's dependencies, as installed here, visible in the venv at `site`:
    symlinks to their files in `view` (outside the venv, so pip never removes them),
    and a .pth line that puts `view` on the venv's path."""
    here = Path(importlib.metadata.distribution("torch").locate_file(""))
    view.mkdir()
    names = []
    for dist in [importlib.metadata.distribution("pip"), *dependency_closure()]:
        names.append(dist.metadata["Name"])
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            if (here / top).exists() and not top.endswith(".pth") and not (view / top).exists():
                (view / top).symlink_to(here / top)
    (site / "attnbook-test-dependencies.pth").write_text(f"{view}\n")
    return names


def install_packages(python: Path) -> list[str]:
    """pip-install the Makefile's TORCH_SPEC (torch==2.13.0+cpu: the CPU wheel on this disk;
    a pin no CUDA build can satisfy) and attnbook's dependencies, pinned by requirements.lock."""
    names = [d.metadata["Name"] for d in dependency_closure()]
    run([str(python), "-m", "pip", "install", "-q", binder_env.makefile_variable("TORCH_SPEC")],
        env=clean_env())
    others = [n for n in names if _key(n) != "torch"]
    run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements.lock"), *others],
        env=clean_env())
    return names


def make_bare_venv(folder: Path) -> Path:
    """A virtual environment in `folder` with torch and attnbook's dependencies, no attnbook;
    returns its python."""
    install = os.environ.get("ATTNBOOK_BARE_VENV") == "install"
    run([sys.executable, "-m", "venv", *([] if install else ["--without-pip"]), str(folder / "venv")],
        env=clean_env())
    python = folder / "venv" / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env=clean_env()).stdout.strip())
    if install:
        install_packages(python)
    else:
        link_packages(site, folder / "dependencies")
    return python


def clone_at_tag(folder: Path) -> Path:
    """A clone of this repository's HEAD in `folder`, tagged with the book's release tag."""
    clone = folder / "clone"
    run(["git", "clone", "--quiet", f"file://{ROOT}", str(clone)])
    run(["git", "-C", str(clone), "tag", launch_cell.release_tag()])
    return clone


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    return make_bare_venv(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return clone_at_tag(tmp_path_factory.mktemp("repository"))


PROBE = """
import importlib.metadata, importlib.util, json, sysconfig
spec = importlib.util.find_spec("attnbook")
print(json.dumps({"attnbook": spec and spec.origin, "site": sysconfig.get_paths()["purelib"],
                  "installed": sorted(d.metadata["Name"] for d in importlib.metadata.distributions())}))
"""

USE = """
import json
import torch
import attnbook
from attnbook.attention import causal_mask, scaled_dot_product_attention
q = k = v = torch.randn(1, 3, 4)
out, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(3))
expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
assert torch.allclose(out, expected, atol=1e-6), (out, expected)
print(json.dumps({"file": attnbook.__file__, "version": attnbook.__version__,
                  "torch": torch.__version__}))
"""

NO_PIP = """
import subprocess
import sys
def refuse(*args, **kwargs):
    raise AssertionError(f"the cell ran {args}")
subprocess.run = refuse
exec(open(sys.argv[1]).read())
"""


def probe(python: Path, cwd: Path) -> dict:
    return json.loads(run([str(python), "-c", PROBE], env=clean_env(), cwd=cwd).stdout)


def test_the_cell_installs_attnbook_in_a_bare_venv_and_then_does_nothing(bare_python, clone,
                                                                           tmp_path):
    before = probe(bare_python, tmp_path)
    assert before["attnbook"] is None, "the bare environment already has attnbook"
    have = {_key(n) for n in before["installed"]}
    assert {"torch", "numpy", "matplotlib", "triton", "ipywidgets", "tqdm"} <= have
    assert not have & {"pytest", "jupyter-book", "attnbook"}, "not a bare environment"
    cell = tmp_path / "cell.py"
    cell.write_text(launch_cell.cell_source())
    env = clean_env(ATTNBOOK_INSTALL_URL=f"file://{clone}")

    # the cell, then the package used in the same process, as in a notebook's kernel
    session = tmp_path / "session.py"
    session.write_text(launch_cell.cell_source() + "\n" + USE)
    start = time.perf_counter()
    done = run([str(bare_python), str(session)], env=env, cwd=tmp_path)
    installed = time.perf_counter() - start
    used = json.loads(done.stdout.splitlines()[-1])

    after = probe(bare_python, tmp_path)
    assert Path(after["attnbook"]).resolve().is_relative_to(Path(after["site"]).resolve())
    added = {_key(n) for n in after["installed"]} - have
    assert added == {"attnbook"}, f"the cell installed more than attnbook: {added}"
    assert used["version"] == launch_cell.book_version()
    assert used["torch"] == torch.__version__, "the install changed torch"

    start = time.perf_counter()
    run([str(bare_python), "-c", NO_PIP, str(cell)], env=env, cwd=tmp_path)
    again = time.perf_counter() - start
    assert again < 10, f"the second run took {again:.1f} s"
    print(f"install {installed:.1f} s, second run {again:.2f} s")
