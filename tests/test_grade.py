"""Autograding (tools/grade.py) with nbgrader's steps: full marks for a solution, zero for its
exercise, exactly the points of what is solved, a looping or killed kernel graded within a
time limit, and a check the student deleted or edited restored from the source."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from tools.grade import grade_notebook, main, restore_graded_cells, table
from tools.make_exercises import exercise_from_solution
from tools.nbgrader_source import as_source

ROOT = Path(__file__).resolve().parent.parent
NAME = "04_queries_keys_values.ipynb"  # among the fastest solution notebooks
v4 = nbformat.v4


def small_source() -> nbformat.NotebookNode:
    """A solution notebook of two exercises that runs in a blink (no torch)."""
    return as_source(v4.new_notebook(cells=[
        v4.new_markdown_cell("# Solutions 1: Small"),
        v4.new_code_cell("import time"),
        v4.new_markdown_cell("### Exercise 1.1: One (★★, 5 min)"),
        v4.new_code_cell("def one():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        v4.new_code_cell("assert one() == 1, 'one() must return 1'\nprint('✅ one is right')"),
        v4.new_markdown_cell("### Exercise 1.2: Two (★, 5 min)"),
        v4.new_code_cell("def two():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
        v4.new_code_cell("assert two() == 2, 'two() must return 2'\nprint('✅ two is right')"),
    ], metadata={"kernelspec": {"name": "python3", "language": "python",
                                "display_name": "Python 3"}}))


def write(tmp_path: Path, name: str, notebook) -> Path:
    path = tmp_path / name
    nbformat.write(notebook, path)
    return path


def by_id(report) -> dict:
    return {r.grade_id: r for r in report.results}


def answer_cell(notebook, grade_id: str):
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_a_solution_scores_full_marks_and_its_exercise_zero(tmp_path):
    full = grade_notebook(ROOT / "solutions" / NAME)
    assert full.passed and full.results and full.score == full.max_score == 10
    zero = grade_notebook(ROOT / "exercises" / NAME)
    assert zero.score == 0 and not zero.passed and len(zero.results) == len(full.results)
    assert all(r.verdict.startswith("❌ Exercise 4.") for r in zero.results), table(zero)
    assert re.search(r"total +0 / 10 +0 of 6 checks passed", table(zero))


def test_one_exercise_solved_scores_exactly_its_points_and_edited_checks_are_restored(tmp_path):
    source = nbformat.read(ROOT / "solutions" / NAME, as_version=4)
    exercise = exercise_from_solution(source)
    answer_cell(exercise, "ex04_5_answer").source = answer_cell(source, "ex04_5_answer").source
    answer_cell(exercise, "ex04_3_check").source = "print('✅ all right')"  # an edited check
    exercise.cells.remove(answer_cell(exercise, "ex04_1_check"))  # a deleted check
    report = grade_notebook(write(tmp_path, NAME, exercise))
    results = by_id(report)
    assert report.score == results["ex04_5_check"].max_points == 1, table(report)
    assert results["ex04_3_check"].points == 0 and "not implemented" in results["ex04_3_check"].verdict
    assert "ex04_1_check" in results and results["ex04_1_check"].points == 0
    assert [r.grade_id for r in report.results] == [
        c.metadata.nbgrader["grade_id"] for c in source.cells
        if c.metadata.get("nbgrader", {}).get("grade")]


def test_restoring_puts_back_deleted_checks_in_place_with_their_hidden_tests():
    source = small_source()
    submission = exercise_from_solution(source)
    del submission.cells[4]  # the check of exercise 1.1
    submission.cells[-1].source = "pass"  # the check of exercise 1.2, edited
    restored = restore_graded_cells(submission, source)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in restored.cells]
    assert ids.index("ex01_1_check") == ids.index("ex01_1_answer") + 1
    assert restored.cells[-1].source == source.cells[-1].source
    assert "### BEGIN HIDDEN TESTS" in restored.cells[-1].source


def test_an_endless_loop_and_a_killed_kernel_are_graded_within_the_time_limit(tmp_path):
    source = write(tmp_path, "source.ipynb", small_source())
    looping = exercise_from_solution(small_source())
    answer_cell(looping, "ex01_1_answer").source = "while True:\n    pass"
    answer_cell(looping, "ex01_2_answer").source = "def two():\n    return 2"
    report = grade_notebook(write(tmp_path, "loop.ipynb", looping), source, cell_timeout=3,
                            notebook_timeout=60)
    assert [r.points for r in report.results] == [0, 1], table(report)
    assert report.seconds < 40

    killed = exercise_from_solution(small_source())
    answer_cell(killed, "ex01_1_answer").source = "def one():\n    return 1"
    answer_cell(killed, "ex01_2_answer").source = "import os\nos._exit(1)"
    report = grade_notebook(write(tmp_path, "killed.ipynb", killed), source, cell_timeout=20,
                            notebook_timeout=60)
    results = by_id(report)
    assert results["ex01_1_check"].points == 2 and results["ex01_2_check"].points == 0, table(report)
    assert "kernel died" in results["ex01_2_check"].verdict


def test_a_notebook_time_limit_stops_the_rest(tmp_path):
    source = write(tmp_path, "source.ipynb", small_source())
    slow = exercise_from_solution(small_source())
    answer_cell(slow, "ex01_1_answer").source = "time.sleep(30)\ndef one():\n    return 1"
    report = grade_notebook(write(tmp_path, "slow.ipynb", slow), source, cell_timeout=60,
                            notebook_timeout=3)
    assert report.score == 0 and report.seconds < 30, table(report)
    assert "time limit" in by_id(report)["ex01_2_check"].verdict


def test_the_command_prints_a_table_writes_junit_and_fails_when_a_check_fails(tmp_path, capsys):
    source = write(tmp_path, "source.ipynb", small_source())
    half = exercise_from_solution(small_source())
    answer_cell(half, "ex01_2_answer").source = "def two():\n    return 2"
    path = write(tmp_path, "half.ipynb", half)
    xml = tmp_path / "grades.xml"
    assert main([str(path), "--source", str(source), "--junit", str(xml)]) == 1
    printed = capsys.readouterr().out
    assert re.search(r"1\.2 +1 / 1 +passed +✅ two is right", printed)
    assert re.search(r"1\.1 +0 / 2 +failed +NotImplementedError: Your code here", printed)
    assert re.search(r"total +1 / 3", printed)
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite.get("failures") == "1" and len(suite.findall("testcase")) == 2
    assert main([str(source), "--source", str(source)]) == 0


@pytest.mark.parametrize("name", ["missing.ipynb"])
def test_a_notebook_without_source_is_reported(tmp_path, name):
    report = grade_notebook(write(tmp_path, name, v4.new_notebook()))
    assert report.problem and not report.passed


def test_a_loop_that_ignores_the_interrupt_stops_the_notebook_not_the_grader(tmp_path):
    source = write(tmp_path, "source.ipynb", small_source())
    stubborn = exercise_from_solution(small_source())
    answer_cell(stubborn, "ex01_1_answer").source = (
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except KeyboardInterrupt:\n        pass")
    report = grade_notebook(write(tmp_path, "stubborn.ipynb", stubborn), source, cell_timeout=2,
                            notebook_timeout=30)
    assert report.score == 0 and report.seconds < 30, table(report)
    assert "not run: the kernel stopped responding" in by_id(report)["ex01_1_check"].verdict
