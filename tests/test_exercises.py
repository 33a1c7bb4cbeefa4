"""The exercise pipeline: exercises/ is generated from solutions/, solutions pass every
check, and exercises fail exactly at their stubs and checks (DESIGN section 4)."""

import copy
from pathlib import Path

import nbformat
import pytest

from tools.make_exercises import EXERCISE_TAG, STUB, exercise_from_solution, out_of_date, strip_solutions

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def errors(cell):
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def test_strip_solutions_keeps_indentation_and_counts_blocks():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)"
    assert strip_solutions(source) == (f"def f(x):\n    {STUB}\nprint(1)", 1)
    with pytest.raises(ValueError, match="never closed"):
        strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="END SOLUTION without BEGIN"):
        strip_solutions("x = 1\n### END SOLUTION")


def test_generator_tags_stub_and_check_and_drops_solution_notes():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Solutions 9: Title"),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("check(f)"),
        nbformat.v4.new_markdown_cell("the answer is 1", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("print('after')"),
    ])
    exercise = exercise_from_solution(notebook)
    assert exercise.cells.pop(0).source == "# Exercises 9: Title"
    assert [c.source for c in exercise.cells] == [f"def f():\n    {STUB}", "check(f)", "print('after')"]
    assert [c.metadata.get("tags", []) for c in exercise.cells] == [[EXERCISE_TAG], [EXERCISE_TAG], []]


def test_exercises_are_up_to_date_with_solutions():
    assert SOLUTIONS, "no solution notebooks found"
    assert out_of_date() == [], "run `make exercises` to regenerate exercises/ from solutions/"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_pass_every_check(path):
    notebook = nbformat.read(path, as_version=4)
    failed = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and errors(c)]
    assert failed == [], f"{path.name}: cells {failed} stored an error"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    solved = [i for i, c in enumerate(code) if strip_solutions(c.source)[1]]
    assert len(solved) >= 4, f"{path.name}: fewer than four exercises"
    for i in solved:
        check = code[i + 1] if i + 1 < len(code) else None
        printed = "".join(o.get("text", "") for o in check.outputs) if check else ""
        assert "✅" in printed, f"{path.name}: the cell after exercise cell {i} printed no passed check"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_exercises_fail_exactly_at_stubs_and_checks(path):
    exercise = nbformat.read(ROOT / "exercises" / path.name, as_version=4)
    code = [c for c in exercise.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if EXERCISE_TAG in c.metadata.get("tags", [])]
    failing = [i for i, c in enumerate(code) if errors(c)]
    assert tagged, f"{path.name}: no exercise cells"
    assert set(failing) <= set(tagged), f"{path.name}: untagged cells failed: {set(failing) - set(tagged)}"
    for i in tagged:
        is_stub = STUB in code[i].source
        if not is_stub:  # a check cell: it must fail, and say why
            assert errors(code[i]), f"{path.name}: the check in code cell {i} passed on a stub"
            assert errors(code[i])[0].ename in ("CheckFailed", "NameError"), errors(code[i])[0].ename


# --- nbgrader: solutions/ are its source notebooks, exercises/ its release ------------------

def nbgrader_ids(notebook, key: str) -> list[str]:
    return [c.metadata.nbgrader["grade_id"] for c in notebook.cells
            if c.metadata.get("nbgrader", {}).get(key)]


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_are_valid_nbgrader_source_notebooks(path):
    from nbgrader.nbgraderformat import MetadataValidator
    from nbgrader.preprocessors import CheckCellMetadata

    from tools.nbgrader_source import BEGIN_HIDDEN, as_source

    notebook = nbformat.read(path, as_version=4)
    assert nbformat.writes(as_source(copy.deepcopy(notebook))) == nbformat.writes(notebook), (
        f"run `python -m tools.nbgrader_source {path.relative_to(ROOT)}`")
    MetadataValidator().validate_nb(notebook)  # raises on invalid nbgrader metadata
    CheckCellMetadata().preprocess(copy.deepcopy(notebook), {})
    answers, checks = nbgrader_ids(notebook, "solution"), nbgrader_ids(notebook, "grade")
    assert len(answers) == len(checks) >= 4 and len(set(answers + checks)) == 2 * len(checks)
    assert [a.replace("_answer", "") for a in answers] == [c.replace("_check", "") for c in checks]
    graded = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert all(c.metadata.nbgrader["locked"] and c.metadata.nbgrader["points"] > 0 for c in graded)
    assert all(BEGIN_HIDDEN in c.source for c in graded), "every check has hidden tests"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_nbgraders_student_version_matches_the_exercises(path):
    """nbgrader's own ClearSolutions + ClearHiddenTests on a copy of the solution give the
    code of exercises/ (its stub set to ours), and exercises/ hold no hidden test."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [c for c in notebook.cells if "solution" not in c.metadata.get("tags", [])]
    notebook, resources = ClearSolutions(code_stub={"python": STUB}).preprocess(notebook, {})
    notebook, _ = ClearHiddenTests().preprocess(notebook, resources)
    exercise = nbformat.read(ROOT / "exercises" / path.name, as_version=4)
    assert [c.source for c in notebook.cells if c.cell_type == "code"] == [
        c.source for c in exercise.cells if c.cell_type == "code"]
    assert not any("HIDDEN TESTS" in c.source for c in exercise.cells)
    for cell in exercise.cells:  # as nbgrader releases them: locked checks, with checksums
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            assert meta.get("checksum") and cell.metadata.get("editable") is False


def test_generator_strips_hidden_tests_and_keeps_nbgrader_metadata():
    from tools.nbgrader_source import as_source

    solution = as_source(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Solutions 9: Title"),
        nbformat.v4.new_markdown_cell("### Exercise 9.1: One (★★★, 5 min)"),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("check(f)"),
    ]))
    assert "\n    check(f)\n### END HIDDEN TESTS" in solution.cells[3].source
    assert as_source(copy.deepcopy(solution)) == solution  # idempotent
    exercise = exercise_from_solution(solution)
    answer, check = exercise.cells[2], exercise.cells[3]
    assert check.source == "check(f)" and answer.source == f"def f():\n    {STUB}"
    assert check.metadata.nbgrader["grade_id"] == "ex09_1_check" and check.metadata.nbgrader["points"] == 3
    assert answer.metadata.nbgrader["grade_id"] == "ex09_1_answer" and "checksum" in answer.metadata.nbgrader
    assert [c.metadata.get("tags") for c in (answer, check)] == [[EXERCISE_TAG], [EXERCISE_TAG]]


def test_nbgrader_generate_assignment_in_the_course_folder_releases_the_exercises(tmp_path):
    """`nbgrader generate_assignment`, run in the course folder tools/nbgrader_course writes,
    releases exactly exercises/ (sources and nbgrader metadata, checksums included)."""
    import os
    import subprocess
    import sys

    from tools.nbgrader_course import write_course

    name = "04_queries_keys_values"
    write_course(tmp_path, ["4"])
    bin_folder = Path(sys.executable).parent  # nbgrader runs `alembic` from the PATH
    env = dict(os.environ, PATH=f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run([str(bin_folder / "nbgrader"), "generate_assignment", name, "--create"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300, env=env)
    released = nbformat.read(tmp_path / "release" / name / f"{name}.ipynb", as_version=4)
    exercise = nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)
    assert [(c.source, c.metadata.get("nbgrader")) for c in released.cells] == [
        (c.source, c.metadata.get("nbgrader")) for c in exercise.cells]
