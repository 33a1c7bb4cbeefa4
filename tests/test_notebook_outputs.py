"""What a reader sees of the stored outputs of every notebook (DESIGN section 4,
"Reading on the site"): no absolute path of the machine that ran it, failed checks
as one-line verdicts, code lines that fit the page."""

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for folder in ("chapters", "solutions", "exercises")
                   for p in (ROOT / folder).glob("*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# /home/..., /root/..., /tmp/..., /work/..., /Users/..., /usr/local/..., C:\Users\...
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/(?:home|root|tmp|work|Users|usr/local|opt|var)/"
                           r"|[A-Za-z]:\\(?:Users|Windows)\\)")


def stored_text(notebook) -> list[tuple[int, str]]:
    """(cell number, text) for every stored output, colour codes removed."""
    found = []
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            found.append((number, ANSI.sub("", json.dumps(output, ensure_ascii=False))))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_stored_output_holds_an_absolute_path(path):
    notebook = nbformat.read(path, as_version=4)
    leaks = [(number, ABSOLUTE_PATH.search(text).group(0)) for number, text in stored_text(notebook)
             if ABSOLUTE_PATH.search(text)]
    assert not leaks, f"{path.name}: outputs of cells {leaks} hold an absolute path"


def test_the_path_pattern_catches_what_it_should():
    assert ABSOLUTE_PATH.search('File "/work/main/src/attnbook/checks/core.py", line 3')
    assert ABSOLUTE_PATH.search("/tmp/ipykernel_71/123.py")
    assert ABSOLUTE_PATH.search(r"C:\Users\ada\attnbook")
    assert not ABSOLUTE_PATH.search("results/seeds.json and 1/2 of the keys, d/dx")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_failed_check_is_stored_as_its_one_line_verdict(path):
    notebook = nbformat.read(path, as_version=4)
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "CheckFailed":
                lines = [ANSI.sub("", line) for line in output["traceback"]]
                assert len(lines) == 1 and lines[0].startswith("❌ "), (
                    f"{path.name}, cell {number}: a failed check shows a traceback: {lines[:3]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_code_lines_fit_the_page(path):
    notebook = nbformat.read(path, as_version=4)
    long = [(number, line) for number, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > 88]
    assert not long, f"{path.name}: code lines longer than 88 characters: {long[:3]}"
