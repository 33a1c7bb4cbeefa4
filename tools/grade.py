"""Autograde submitted exercise notebooks with nbgrader's autograding steps, in-process.

    python -m tools.grade submissions/alice/04_queries_keys_values.ipynb
    python -m tools.grade submissions/alice/ --junit _build/grades.xml
    make grade NB="submissions/alice/04_queries_keys_values.ipynb submissions/bob"

For each submission (a notebook, or every notebook in a folder), the source
notebook is solutions/<same name> (or --source). As `nbgrader autograde` does,
every graded (check) cell is restored from the source (its code, hidden tests
included, and its points), so a check the student edited or deleted is still run
as written; the notebook is then run by nbgrader's Execute preprocessor with a
time limit per cell (an endless loop is interrupted and graded) and for the whole
notebook (cells after it are not run and score nothing), and a kernel that dies
(os._exit, a crash) fails the cell it died in and the cells after it. A check
cell scores its points when it raised no error, else 0.

Prints a table per notebook: exercise, points / max, passed or failed, and the
check's one-line verdict, then the total. --junit writes JUnit XML (one test case
per check) for classroom autograders. Exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "solutions"
CELL_TIMEOUT = 120  # seconds for one cell
NOTEBOOK_TIMEOUT = 900  # seconds for a whole notebook
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Result:
    grade_id: str
    points: float
    max_points: float
    verdict: str

    @property
    def passed(self) -> bool:
        return self.points == self.max_points

    @property
    def exercise(self) -> str:
        """ "ex04_2b_check" -> "4.2b"."""
        match = re.fullmatch(r"ex(\d+)_(\w+?)_check", self.grade_id)
        return f"{int(match.group(1))}.{match.group(2)}" if match else self.grade_id


@dataclass
class Report:
    path: Path
    results: list[Result] = field(default_factory=list)
    problem: str = ""  # a notebook that could not be graded at all
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)

    @property
    def passed(self) -> bool:
        return not self.problem and all(r.passed for r in self.results)


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _is_grade(cell) -> bool:
    return bool(_nbgrader(cell).get("grade"))


def restore_graded_cells(submission: nbformat.NotebookNode,
                         source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The submission with every graded and locked cell of the source restored: edited
    ones overwritten from the source (nbgrader's OverwriteCells), missing ones put back
    after the cell that precedes them in the source (its add_missing_cells)."""
    submission = copy.deepcopy(submission)
    by_id = {}
    for cell in submission.cells:
        gid = _nbgrader(cell).get("grade_id")
        if gid and gid not in by_id:
            by_id[gid] = cell
    previous_id = None
    for source_cell in source.cells:
        meta = _nbgrader(source_cell)
        gid = meta.get("grade_id")
        if not gid:
            continue
        if meta.get("grade") or meta.get("locked"):
            restored = copy.deepcopy(source_cell)
            if restored.cell_type == "code":
                restored.outputs, restored.execution_count = [], None
            if gid in by_id:  # overwrite in place
                cell = by_id[gid]
                cell.cell_type, cell.source = restored.cell_type, restored.source
                cell.metadata["nbgrader"] = copy.deepcopy(meta)
                if cell.cell_type == "code":
                    cell.setdefault("outputs", [])
                    cell.setdefault("execution_count", None)
            else:  # put back where it was
                after = by_id.get(previous_id)
                at = submission.cells.index(after) + 1 if after is not None else len(submission.cells)
                submission.cells.insert(at, restored)
                by_id[gid] = restored
        previous_id = gid
    # Drop grade metadata the source does not know (a copied check cell must not count twice).
    source_ids = {_nbgrader(c).get("grade_id") for c in source.cells}
    seen = set()
    for cell in submission.cells:
        gid = _nbgrader(cell).get("grade_id")
        if gid and (gid not in source_ids or gid in seen):
            cell.metadata.pop("nbgrader")
        elif gid:
            seen.add(gid)
    return submission


def _executor(cell_timeout: float, notebook_timeout: float):
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbgrader.preprocessors import Execute

    class TimedExecute(Execute):
        """nbgrader's Execute with a deadline for the whole notebook, and a dead kernel
        graded rather than raised."""

        def preprocess(self, nb, resources=None, km=None):
            self._deadline = time.monotonic() + notebook_timeout
            self._stopped = ""
            return super().preprocess(nb, resources, km)

        def _left(self, cell=None) -> int:
            return max(1, int(min(cell_timeout, self._deadline - time.monotonic())) + 1)

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type != "code":
                return cell, resources
            if not self._stopped and time.monotonic() >= self._deadline:
                self._stopped = (f"NotebookTimeout: not run: the notebook's time limit of "
                                 f"{notebook_timeout:g} s was reached")
            if self._stopped:
                cell.outputs = [_error_output(*self._stopped.split(": ", 1))]
                return cell, resources
            try:
                return super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                cell.outputs.append(_error_output(
                    "DeadKernelError", "the kernel died while running this cell (os._exit, "
                    "a crash or running out of memory)"))
                self._stopped = f"DeadKernelError: not run: the kernel died in cell {index}"
                return cell, resources
            except CellTimeoutError:  # the kernel ignored the interrupt: it is stopped
                cell.outputs.append(_error_output(
                    "CellTimeoutError", "the cell did not finish within the time limit and "
                    "ignored the interrupt"))
                self._stopped = (f"CellTimeoutError: not run: the kernel stopped responding "
                                 f"in cell {index}")
                return cell, resources

    executor = TimedExecute(timeout=int(cell_timeout), interrupt_on_timeout=True,
                            allow_errors=True, kernel_name="python3")
    executor.timeout_func = executor._left
    return executor


def _error_output(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[f"{ename}: {evalue}"])


def _verdict(cell) -> tuple[bool, str]:
    """(failed, the check's one-line verdict) from an executed check cell's outputs."""
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            value = _ANSI.sub("", " ".join(str(output.get("evalue", "")).split()))
            if output.ename == "CheckFailed":
                return True, f"❌ {value}"
            if value.startswith("not run"):
                return True, value
            if output.ename == "CellTimeoutError":
                return True, "the cell did not finish within the time limit (an endless loop?)"
            return True, f"{output.ename}: {value}" if value else output.ename
    printed = "".join(o.get("text", "") for o in cell.get("outputs", [])
                      if o.output_type == "stream" and o.get("name") == "stdout")
    lines = [line for line in printed.splitlines() if line.strip()]
    return False, lines[-1] if lines else "passed"


def score(executed: nbformat.NotebookNode) -> list[Result]:
    """One Result per graded cell: its points when it raised no error, else 0."""
    results = []
    for cell in executed.cells:
        if not _is_grade(cell) or cell.cell_type != "code":
            continue
        meta = _nbgrader(cell)
        failed, verdict = _verdict(cell)
        max_points = float(meta.get("points", 0))
        results.append(Result(meta["grade_id"], 0.0 if failed else max_points, max_points, verdict))
    return results


def grade_notebook(path: Path, source_path: Path | None = None,
                   cell_timeout: float = CELL_TIMEOUT,
                   notebook_timeout: float = NOTEBOOK_TIMEOUT) -> Report:
    """Restore, execute (in a fresh kernel, in a scratch folder) and score."""
    started = time.monotonic()
    report = Report(Path(path))
    source_path = Path(source_path) if source_path else SOURCE_DIR / Path(path).name
    if not source_path.exists():
        report.problem = f"no source notebook {source_path} to grade it against"
        return report
    source = nbformat.read(source_path, as_version=4)
    if not any(_is_grade(c) for c in source.cells):
        report.problem = (f"{source_path} has no graded cells; run "
                          f"`python -m tools.nbgrader_source {source_path}`")
        return report
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as error:  # not a notebook at all: every check fails
        submission = nbformat.v4.new_notebook()
        report.problem = f"could not read the notebook ({type(error).__name__}: {error})"
    notebook = restore_graded_cells(submission, source)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    executor = _executor(cell_timeout, notebook_timeout)
    with tempfile.TemporaryDirectory(prefix="attnbook-grade-") as scratch:  # files it writes
        executed, _ = executor.preprocess(notebook, {"metadata": {"path": scratch}})
    report.results = score(executed)
    report.seconds = time.monotonic() - started
    return report


def _number(value: float) -> str:
    return f"{value:g}"


def table(report: Report) -> str:
    lines = [f"{report.path}"]
    if report.problem:
        lines.append(f"  not graded: {report.problem}")
    if report.results:
        width = max(len("exercise"), *(len(r.exercise) for r in report.results))
        lines.append(f"  {'exercise':<{width}}  {'points':>9}  {'result':<6}  verdict")
        for r in report.results:
            points = f"{_number(r.points)} / {_number(r.max_points)}"
            lines.append(f"  {r.exercise:<{width}}  {points:>9}  "
                         f"{'passed' if r.passed else 'failed':<6}  {r.verdict}")
        total = f"{_number(report.score)} / {_number(report.max_score)}"
        passed = sum(r.passed for r in report.results)
        lines.append(f"  {'total':<{width}}  {total:>9}  {passed} of {len(report.results)} "
                     f"checks passed ({report.seconds:.0f} s)")
    return "\n".join(lines)


def junit(reports: list[Report]) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="attnbook grades")
    for report in reports:
        suite = ET.SubElement(suites, "testsuite", name=str(report.path),
                              tests=str(len(report.results) or 1),
                              failures=str(sum(not r.passed for r in report.results)),
                              errors="1" if report.problem else "0",
                              time=f"{report.seconds:.2f}")
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="score", value=_number(report.score))
        ET.SubElement(properties, "property", name="max_score", value=_number(report.max_score))
        if report.problem:
            case = ET.SubElement(suite, "testcase", classname=Path(report.path).stem,
                                 name="notebook")
            ET.SubElement(case, "error", message=report.problem)
        for r in report.results:
            case = ET.SubElement(suite, "testcase", classname=Path(report.path).stem,
                                 name=r.grade_id)
            case_props = ET.SubElement(case, "properties")
            ET.SubElement(case_props, "property", name="points", value=_number(r.points))
            ET.SubElement(case_props, "property", name="max_points", value=_number(r.max_points))
            if not r.passed:
                ET.SubElement(case, "failure", message=r.verdict).text = r.verdict
            else:
                ET.SubElement(case, "system-out").text = r.verdict
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    return tree


def submissions(paths: list[str]) -> list[Path]:
    found = []
    for name in paths:
        path = Path(name)
        found += sorted(path.rglob("*.ipynb")) if path.is_dir() else [path]
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="submitted notebooks, or folders of them")
    parser.add_argument("--source", help="the source notebook (default: solutions/<name>)")
    parser.add_argument("--junit", help="write JUnit XML here")
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT,
                        help=f"seconds for one cell (default {CELL_TIMEOUT})")
    parser.add_argument("--timeout", type=float, default=NOTEBOOK_TIMEOUT,
                        help=f"seconds for a whole notebook (default {NOTEBOOK_TIMEOUT})")
    args = parser.parse_args(argv)
    paths = submissions(args.paths)
    if not paths:
        print("no notebooks to grade")
        return 2
    reports = []
    for path in paths:
        report = grade_notebook(path, args.source, args.cell_timeout, args.timeout)
        print(table(report), flush=True)
        reports.append(report)
    if len(reports) > 1:
        total = sum(r.score for r in reports)
        most = sum(r.max_score for r in reports)
        print(f"all {len(reports)} notebooks: {_number(total)} / {_number(most)}")
    if args.junit:
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        junit(reports).write(args.junit, encoding="utf-8", xml_declaration=True)
        print(f"wrote {args.junit}")
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
