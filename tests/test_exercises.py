"""The exercise pipeline: exercises/ is generated from solutions/, solutions pass every
check, and exercises fail exactly at their stubs and checks (DESIGN section 4)."""

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
