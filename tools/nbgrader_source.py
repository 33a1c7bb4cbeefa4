"""Make solutions/NN_name.ipynb valid nbgrader source notebooks (idempotent).

Every code cell holding a `### BEGIN SOLUTION` block becomes an nbgrader
autograded-answer cell, and the code cell after it (its check, as
tools/make_exercises finds it) an autograded test cell, locked, with points and
a hidden part that students never see:

    check_x(x)
    ### BEGIN HIDDEN TESTS
    from attnbook.checks.core import hidden_trials

    with hidden_trials():  # the same check on other random inputs, and more of them
        check_x(x)
    ### END HIDDEN TESTS

Grade ids come from the exercise's number: "ex04_2_answer" / "ex04_2_check" for
exercise 4.2, "ex04_2b_answer" / "ex04_2b_check" for its second step, and so on.
Points follow the difficulty mark of the exercise's heading (★ = 1, ★★ = 2,
★★★ = 3), shared equally between its checks (an exercise in two steps gives half
its points to each). Other cells carry no nbgrader metadata.

    python -m tools.nbgrader_source                       # every solution notebook
    python -m tools.nbgrader_source solutions/04_*.ipynb  # some of them
    python -m tools.nbgrader_source --check               # exit 1 if any would change
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

import nbformat

from tools.make_exercises import BEGIN

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^#+\s*Exercise\s+(\d+)\.(\d+)\b[^\n(]*\(([★]+)")
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
HIDDEN_TEMPLATE = (BEGIN_HIDDEN + "\nfrom attnbook.checks.core import hidden_trials\n\n"
                   "with hidden_trials():  # the same check on other random inputs, and more of them\n"
                   "{body}\n" + END_HIDDEN)
SCHEMA_VERSION = 3


def visible_part(source: str) -> str:
    """A check cell's source without its hidden-tests block (as nbgrader's release has it)."""
    lines, out, inside = source.split("\n"), [], False
    for line in lines:
        if BEGIN_HIDDEN in line:
            inside = True
        elif END_HIDDEN in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out).rstrip("\n")


MAX_LINE = 88


def _fit(lines: list[str]) -> list[str]:
    """Break lines longer than MAX_LINE after their last comma that fits (a call's
    arguments), continuing at the next line's indentation."""
    out = []
    for i, line in enumerate(lines):
        while len(line) > MAX_LINE and ", " in line[:MAX_LINE]:
            cut = line[:MAX_LINE].rindex(", ") + 1
            following = lines[i + 1] if i + 1 < len(lines) else line
            indent = len(following) - len(following.lstrip()) if i + 1 < len(lines) else 8
            out.append(line[:cut])
            line = " " * indent + line[cut:].lstrip()
        out.append(line)
    return out


def with_hidden_tests(source: str) -> str:
    """The check cell's source with its hidden part (re)written from its visible part."""
    visible = visible_part(source)
    body = "\n".join(_fit(textwrap.indent(visible, "    ").split("\n")))
    return visible + "\n" + HIDDEN_TEMPLATE.format(body=body)


def is_answer(cell) -> bool:
    return cell.cell_type == "code" and any(BEGIN.match(line) for line in cell.source.splitlines())


def exercises(notebook: nbformat.NotebookNode) -> list[dict]:
    """[{"number": "4.2", "stars": 2, "parts": [(answer cell index, check cell index)]}]."""
    found, current, answer_at = [], None, None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            heading = HEADING.match(cell.source)
            if heading:
                current = {"chapter": int(heading.group(1)), "number": int(heading.group(2)),
                           "stars": len(heading.group(3)), "parts": []}
                found.append(current)
            continue
        if cell.cell_type != "code":
            continue
        if is_answer(cell):
            if current is None:
                raise ValueError(f"code cell {index} holds a solution before any exercise heading")
            answer_at = index
        elif answer_at is not None:
            current["parts"].append((answer_at, index))
            answer_at = None
    if answer_at is not None:
        raise ValueError(f"the solution in cell {answer_at} has no check cell after it")
    return [e for e in found if e["parts"]]


def grade_id(exercise: dict, part: int, role: str) -> str:
    suffix = "" if part == 0 else "bcdefghij"[part - 1]
    return f"ex{exercise['chapter']:02d}_{exercise['number']}{suffix}_{role}"


def points(exercise: dict) -> float | int:
    share = exercise["stars"] / len(exercise["parts"])
    return int(share) if share == int(share) else round(share, 4)


def answer_metadata(gid: str) -> dict:
    return {"grade": False, "grade_id": gid, "locked": False, "schema_version": SCHEMA_VERSION,
            "solution": True}


def check_metadata(gid: str, value) -> dict:
    return {"grade": True, "grade_id": gid, "locked": True, "points": value,
            "schema_version": SCHEMA_VERSION, "solution": False}


def as_source(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give `notebook` (in place) the nbgrader metadata and hidden tests; return it."""
    for cell in notebook.cells:
        cell.metadata.pop("nbgrader", None)
    for exercise in exercises(notebook):
        for part, (answer, check) in enumerate(exercise["parts"]):
            notebook.cells[answer].metadata["nbgrader"] = answer_metadata(
                grade_id(exercise, part, "answer"))
            check_cell = notebook.cells[check]
            check_cell.metadata["nbgrader"] = check_metadata(
                grade_id(exercise, part, "check"), points(exercise))
            check_cell.source = with_hidden_tests(check_cell.source)
    return notebook


def convert(path: Path, write: bool = True) -> bool:
    """Make `path` an nbgrader source notebook; True if it changed (written if `write`)."""
    before = nbformat.read(path, as_version=4)
    after = as_source(nbformat.read(path, as_version=4))
    changed = nbformat.writes(before) != nbformat.writes(after)
    if changed and write:
        nbformat.write(after, path)
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that would change")
    parser.add_argument("paths", nargs="*", help="solution notebooks (default: solutions/*.ipynb)")
    args = parser.parse_args()
    paths = [Path(p) for p in args.paths] or sorted((ROOT / "solutions").glob("*.ipynb"))
    stale = []
    for path in paths:
        if convert(path, write=not args.check):
            stale.append(path)
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and stale:
        print("run `python -m tools.nbgrader_source` to add the nbgrader metadata")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
