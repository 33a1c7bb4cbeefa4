"""Write exercises/NN_name.ipynb from solutions/NN_name.ipynb.

In a solution notebook, solution code sits between `### BEGIN SOLUTION` and
`### END SOLUTION` lines. The exercise notebook replaces each such block with
a stub that raises NotImplementedError, keeping the block's indentation. The
stub cell and the next code cell (its check) are tagged `raises-exception`,
so nbval expects both to fail in the exercise notebook. Markdown cells tagged
`solution` (explanations of the answer) are left out of the exercises, and the
title "# Solutions N: ..." becomes "# Exercises N: ...".

The conversion itself is nbgrader's (its ClearSolutions, ClearHiddenTests, LockCells
and ComputeChecksums preprocessors, in the order `nbgrader generate_assignment` runs
them), so an exercise notebook is what nbgrader releases to students, hidden tests
removed, checksums included (tools/nbgrader_source gives solutions/ the metadata).

    python -m tools.make_exercises            # write the exercise notebooks
    python -m tools.make_exercises --execute  # ... and run them to store outputs
    python -m tools.make_exercises --check    # exit 1 if exercises/ is out of date
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
STUB = 'raise NotImplementedError("Your code here: replace this line.")'
EXERCISE_TAG = "raises-exception"
SOLUTION_ONLY_TAG = "solution"
SOLUTIONS_TITLE, EXERCISES_TITLE = "# Solutions", "# Exercises"


def strip_solutions(source: str) -> tuple[str, int]:
    """Replace every solution block in `source` with a stub; return (new source, count)."""
    lines, out, inside, count = source.splitlines(), [], False, 0
    for number, line in enumerate(lines, start=1):
        begin = BEGIN.match(line)
        if begin and inside:
            raise ValueError(f"line {number}: BEGIN SOLUTION inside another solution block")
        if begin:
            out.append(begin.group(1) + STUB)
            inside, count = True, count + 1
        elif END.match(line):
            if not inside:
                raise ValueError(f"line {number}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a BEGIN SOLUTION block is never closed")
    return "\n".join(out), count


def _add_tag(cell, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def _release(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """nbgrader's own release steps (those of `nbgrader generate_assignment`), in its
    order: lock the graded cells, replace each solution block with STUB, compute the
    checksums, remove the hidden tests, compute the checksums again."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearSolutions,
        ComputeChecksums,
        LockCells,
    )
    graded = any("nbgrader" in cell.metadata for cell in notebook.cells)
    steps = [LockCells(), ClearSolutions(code_stub={"python": STUB}, enforce_metadata=graded),
             ComputeChecksums(), ClearHiddenTests(enforce_metadata=graded), ComputeChecksums()]
    if graded:
        steps += [CheckCellMetadata()]
    resources: dict = {}
    for step in steps:
        notebook, resources = step.preprocess(notebook, resources)
    return notebook


def exercise_from_solution(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook (without outputs) for a solution notebook: nbgrader's
    student version, plus the `raises-exception` tags nbval needs."""
    exercise = copy.deepcopy(solution)
    cells = []
    for cell in exercise.cells:
        if SOLUTION_ONLY_TAG in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "markdown" and cell.source.startswith(SOLUTIONS_TITLE):
            cell.source = EXERCISES_TITLE + cell.source[len(SOLUTIONS_TITLE):]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            strip_solutions(cell.source)  # raises ValueError on a malformed block
        cells.append(cell)
    exercise.cells = cells
    stubbed = [cell.cell_type == "code" and strip_solutions(cell.source)[1] > 0 for cell in cells]
    exercise = _release(exercise)
    tag_next_code_cell = False
    for cell, has_stub in zip(exercise.cells, stubbed):
        if cell.cell_type != "code":
            continue
        if has_stub:
            _add_tag(cell, EXERCISE_TAG)
            tag_next_code_cell = True
        elif tag_next_code_cell:
            _add_tag(cell, EXERCISE_TAG)  # the check of the stub just above
            tag_next_code_cell = False
    exercise.metadata.pop("widgets", None)
    return exercise


def exercise_path(solution_path: Path) -> Path:
    return ROOT / "exercises" / solution_path.name


def comparable(notebook: nbformat.NotebookNode) -> list[tuple]:
    """What must agree between a generated and a committed exercise: sources, types, tags,
    grade ids and points."""
    return [(c.cell_type, c.source, sorted(c.metadata.get("tags", [])),
             c.metadata.get("nbgrader", {}).get("grade_id"),
             c.metadata.get("nbgrader", {}).get("points")) for c in notebook.cells]


def out_of_date() -> list[str]:
    """Names of exercise notebooks that differ from what their solutions generate."""
    stale = []
    for solution_path in sorted((ROOT / "solutions").glob("*.ipynb")):
        target = exercise_path(solution_path)
        expected = exercise_from_solution(nbformat.read(solution_path, as_version=4))
        if not target.exists() or comparable(nbformat.read(target, as_version=4)) != comparable(expected):
            stale.append(target.name)
    solution_names = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    stale += [p.name for p in (ROOT / "exercises").glob("*.ipynb") if p.name not in solution_names]
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale exercises")
    parser.add_argument("--execute", action="store_true", help="run each written notebook")
    parser.add_argument("names", nargs="*", help="solution notebooks to convert (default: all)")
    args = parser.parse_args()
    if args.check:
        stale = out_of_date()
        for name in stale:
            print(f"exercises/{name} is out of date with solutions/; run `make exercises`")
        return 1 if stale else 0
    paths = [ROOT / "solutions" / Path(n).name for n in args.names] or sorted(
        (ROOT / "solutions").glob("*.ipynb"))
    for solution_path in paths:
        target = exercise_path(solution_path)
        nbformat.write(exercise_from_solution(nbformat.read(solution_path, as_version=4)), target)
        print(f"wrote {target.relative_to(ROOT)}")
        if args.execute:
            from tools.execute_notebooks import execute
            execute(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
