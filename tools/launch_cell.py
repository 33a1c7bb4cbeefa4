"""Give every notebook a first code cell that installs `attnbook` where it is missing.

A notebook opened from a launch button (Colab, Binder, a JupyterHub) runs in an
environment that may lack the book's package. The cell written here checks with
`importlib.util.find_spec` and, only when `attnbook` is missing, pip-installs it
from the repository in `_config.yml` at the book's version (`pyproject.toml`),
as the git tag `v<version>` (`pip install git+URL@v<version>`; its dependencies,
torch>=2.2 among them, are already there on Colab and on the hub image of binder/,
so pip adds only attnbook). Where the package is installed (after `make book`,
in CI, on Binder after postBuild) the cell does nothing and prints nothing, so
nbval is unaffected. The cell is tagged `remove-cell` (the website leaves it
out) and `install-attnbook` (how this tool finds it again). It goes right after
the notebook's title cell and is rewritten in place when the URL or the version
changes. The environment variable ATTNBOOK_INSTALL_URL replaces the repository
URL (tests install from a local clone, `file:///path/to/clone`).

    python -m tools.launch_cell              # insert or update the cell everywhere
    python -m tools.launch_cell --check      # exit 1 naming notebooks whose cell is missing or stale
    python -m tools.launch_cell chapters/01_bottleneck.ipynb   # only these notebooks or folders
    python -m tools.launch_cell --tag        # print the release tag the cell installs (v<version>)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("chapters", "solutions", "exercises")
TAG = "install-attnbook"
TAGS = ["remove-cell", TAG]
CELL_ID = "install-attnbook"
URL_VARIABLE = "ATTNBOOK_INSTALL_URL"

TEMPLATE = '''\
# Opened on Colab or a hub without the book's package? This cell installs `attnbook`
# at the book's version. Where the package is installed already, it does nothing.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("attnbook") is None:
    url = "{url}"
    repo = os.environ.get("{variable}", url)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"git+{{repo}}@{tag}"], check=True)
    importlib.invalidate_caches()'''
MAX_LINE = 88  # the book's limit for a code line (tests/test_notebook_outputs.py)


def repository_url(root: Path = ROOT) -> str:
    """The repository URL of `_config.yml` (the same one the website's buttons use)."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    url = (config.get("repository") or {}).get("url")
    if not url:
        raise ValueError("_config.yml has no repository: url:")
    return url.rstrip("/")


def book_version(root: Path = ROOT) -> str:
    """The package's version in pyproject.toml."""
    with open(root / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["version"]


def release_tag(root: Path = ROOT) -> str:
    """The git tag a release of the book carries, and that the install cell installs."""
    return f"v{book_version(root)}"


def cell_source(root: Path = ROOT) -> str:
    """The install cell's code, for this repository URL and version."""
    source = TEMPLATE.format(variable=URL_VARIABLE, url=repository_url(root), tag=release_tag(root))
    too_long = [line for line in source.splitlines() if len(line) > MAX_LINE]
    if too_long:
        raise ValueError(f"the install cell's lines exceed {MAX_LINE} characters: {too_long}")
    return source


def _is_install_cell(cell) -> bool:
    return TAG in cell.metadata.get("tags", [])


def _position(cells) -> int:
    """Where the cell belongs: right after a leading title cell, else first."""
    first = cells[0] if cells else None
    titled = first is not None and first.cell_type == "markdown" and first.source.startswith("# ")
    return 1 if titled else 0


def _up_to_date(cell, source: str) -> bool:
    tags = cell.metadata.get("tags", [])
    return (cell.cell_type == "code" and cell.source == source and all(t in tags for t in TAGS)
            and not cell.get("outputs"))


def is_current(notebook: nbformat.NotebookNode, source: str) -> bool:
    """Whether `notebook` holds exactly one install cell, current and in its place."""
    found = [i for i, c in enumerate(notebook.cells) if _is_install_cell(c)]
    if len(found) != 1:
        return False
    others = [c for c in notebook.cells if not _is_install_cell(c)]
    return found[0] == _position(others) and _up_to_date(notebook.cells[found[0]], source)


def with_install_cell(notebook: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """`notebook` with its install cell inserted or brought up to date (other cells untouched)."""
    if is_current(notebook, source):
        return notebook
    cells = [c for c in notebook.cells if not _is_install_cell(c)]
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(TAGS)})
    if notebook.nbformat_minor >= 5:  # cell ids exist from nbformat 4.5 on; keep this one stable
        if CELL_ID not in {c.get("id") for c in cells}:
            cell["id"] = CELL_ID
    else:
        cell.pop("id", None)
    cells.insert(_position(cells), cell)
    notebook.cells = cells
    return notebook


def notebooks(paths: list[str], root: Path = ROOT) -> list[Path]:
    """The notebooks named by `paths` (files or folders); by default all of FOLDERS."""
    found = []
    for name in paths or [str(root / folder) for folder in FOLDERS]:
        path = Path(name)
        found += sorted(path.glob("*.ipynb")) if path.is_dir() else [path]
    return found


def stale(paths: list[Path], root: Path = ROOT) -> list[Path]:
    """Notebooks among `paths` whose install cell is missing, stale or misplaced."""
    source = cell_source(root)
    return [p for p in paths if not is_current(nbformat.read(p, as_version=4), source)]


def update(paths: list[Path], root: Path = ROOT) -> list[Path]:
    """Insert or update the install cell in each of `paths`; return those that changed."""
    source, changed = cell_source(root), []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if not is_current(notebook, source):
            nbformat.write(with_install_cell(notebook, source), path)
            changed.append(path)
    return changed


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming notebooks whose cell is missing or stale")
    parser.add_argument("--tag", action="store_true", help="print the release tag (v<version>) and exit")
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: chapters, solutions, "
                                                 "exercises)")
    args = parser.parse_args(argv)
    if args.tag:
        print(release_tag())
        return 0
    paths = notebooks(args.paths)
    if args.check:
        bad = stale(paths)
        for path in bad:
            print(f"{_shown(path)}: the install cell is missing or stale; run `python -m tools.launch_cell`")
        return 1 if bad else 0
    for path in update(paths):
        print(f"updated {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
