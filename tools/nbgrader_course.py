"""Write an nbgrader course directory for a whole class, from solutions/.

    python -m tools.nbgrader_course                  # into _build/course, every chapter
    python -m tools.nbgrader_course --dir course 04  # some chapters (their numbers)

The layout is nbgrader's standard one: one assignment per chapter, named after its
notebook ("04_queries_keys_values"), in source/<assignment>/<notebook>; nbgrader
itself then fills release/ (what students get: exercises/ as nbgrader makes it),
submitted/<student>/<assignment>/ (what you collect), autograded/ and feedback/:

    export PATH="$PWD/.venv/bin:$PATH"   # nbgrader runs `alembic` from the PATH
    cd _build/course
    nbgrader generate_assignment 04_queries_keys_values --create   # -> release/
    # hand out release/04_queries_keys_values/; collect each student's notebook into
    # submitted/<student id>/04_queries_keys_values/04_queries_keys_values.ipynb, then
    nbgrader autograde 04_queries_keys_values     # runs the checks and hidden tests
    nbgrader export                               # grades.csv (or: nbgrader formgrader)

nbgrader_config.py sets the exercise stub of exercises/ and per-cell time limits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

from tools.make_exercises import EXERCISES_TITLE, SOLUTIONS_TITLE, STUB

ROOT = Path(__file__).resolve().parent.parent
CONFIG = f'''"""nbgrader's configuration for the attnbook course (written by tools/nbgrader_course.py)."""
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "attnbook"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"
# The stub that replaces each solution, as in exercises/.
c.ClearSolutions.code_stub = {{"python": {STUB!r}}}
# An endless loop in a cell is interrupted after this many seconds, and graded.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# A check cell deleted by a student is put back from the source and graded.
c.OverwriteCells.add_missing_cells = True
'''


def write_course(directory: Path, chapters: list[str] | None = None) -> list[Path]:
    """Write nbgrader_config.py and source/<assignment>/<notebook>; return the notebooks."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nbgrader_config.py").write_text(CONFIG)
    written = []
    for solution in sorted((ROOT / "solutions").glob("*.ipynb")):
        if chapters and not any(solution.name.startswith(f"{int(n):02d}_") for n in chapters):
            continue
        notebook = nbformat.read(solution, as_version=4)
        if not any("nbgrader" in c.metadata for c in notebook.cells):
            print(f"skipped {solution.name}: run `python -m tools.nbgrader_source` first")
            continue
        target = directory / "source" / solution.stem / solution.name
        if target.parent.exists():
            shutil.rmtree(target.parent)
        target.parent.mkdir(parents=True)
        notebook.cells = [c for c in notebook.cells
                          if "solution" not in c.metadata.get("tags", [])]  # notes on answers
        for cell in notebook.cells:
            if cell.cell_type == "markdown" and cell.source.startswith(SOLUTIONS_TITLE):
                cell.source = EXERCISES_TITLE + cell.source[len(SOLUTIONS_TITLE):]
        nbformat.write(notebook, target)
        written.append(target)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / "_build" / "course"), help="the course folder")
    parser.add_argument("chapters", nargs="*", help="chapter numbers (default: all)")
    args = parser.parse_args()
    for path in write_course(Path(args.dir), args.chapters):
        print(f"wrote {path}")
    print(f"nbgrader course in {args.dir}: see `python -m tools.nbgrader_course --help`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
