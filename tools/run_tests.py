"""Everything `make test` runs, in order, with the time each step took.

    lint       ruff over the package, tests and tools
    unit       pytest over tests/ (the package, the exercise pipeline)
    notebooks  nbval: re-run every notebook in chapters/, solutions/, exercises/
               and compare with the stored outputs
    site       build the book with warnings as errors
    browser    open the built site in headless Chromium and check what a reader sees;
               print it as one PDF and check the PDF

Pass step names to run only some: python -m tools.run_tests lint unit
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOTEBOOKS = [str(p.relative_to(ROOT)) for folder in ("chapters", "solutions", "exercises")
             for p in sorted((ROOT / folder).glob("*.ipynb"))]

STEPS = {
    "lint": [str(BIN / "ruff"), "check", "src", "tests", "tools", "_ext"],
    "unit": [str(BIN / "pytest"), "tests", "-m", "not site", "-q", "-p", "no:cacheprovider"],
    "notebooks": [str(BIN / "pytest"), "--nbval", "--nbval-current-env", "--nbval-cell-timeout=600",
                  "--nbval-sanitize-with", "tests/sanitize.cfg", "-p", "tools.pytest_notebook_times",
                  "-p", "no:cacheprovider", "-q", *NOTEBOOKS],
    "site": [str(BIN / "jupyter-book"), "build", ".", "--warningiserror", "--keep-going", "-q"],
    "browser": [str(BIN / "pytest"), "tests/test_site.py", "tests/test_pdf.py", "-m", "site", "-q",
                "-p", "no:cacheprovider"],
}
COUNTS = re.compile(r"(\d+) (passed|failed|error|errors)\b")


def run(name: str, command: list[str]) -> tuple[bool, float, dict[str, int]]:
    print(f"\n===== {name}: {' '.join(command[:4])} ...", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    last_lines: list[str] = []
    for line in process.stdout:
        print(line, end="", flush=True)
        last_lines = (last_lines + [line])[-5:]
    ok = process.wait() == 0
    counts = {"passed": 0, "failed": 0}
    if command[0].endswith("pytest"):
        for count, word in COUNTS.findall("".join(last_lines)):
            counts["passed" if word == "passed" else "failed"] += int(count)
    else:
        counts["passed" if ok else "failed"] += 1  # a lint or build step counts as one test
    return ok, time.perf_counter() - start, counts


def main(names: list[str]) -> int:
    unknown = set(names) - set(STEPS)
    if unknown:
        print(f"unknown steps {sorted(unknown)}; choose from {list(STEPS)}")
        return 2
    results = {}
    for name in names or list(STEPS):
        results[name] = run(name, STEPS[name])
    print("\n===== summary (seconds)")
    for name, (ok, seconds, counts) in results.items():
        print(f"{name:<10} {seconds:7.1f}  {'ok' if ok else 'FAILED'}  "
              f"({counts['passed']} passed, {counts['failed']} failed)")
    passed = sum(c["passed"] for _, _, c in results.values())
    failed = sum(c["failed"] for _, _, c in results.values())
    print(f"total      {sum(s for _, s, _ in results.values()):7.1f}")
    print(f"tests: {passed} passed, {failed} failed")
    return 0 if all(ok for ok, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
