"""`make test-latest`: build and test the book with the newest releases of what it uses.

The lock file is ignored. In a fresh clone of the committed HEAD (so the checkout and its
built site are left alone) and a fresh virtual environment, it installs

    PyTorch     the newest release, from PyTorch's CPU index, or from the configured
                package sources when that index cannot be reached
    the rest    the newest releases of requirements.in (the book's direct dependencies;
                everything they pull in is resolved afresh)

then runs the whole of `make test` (tools/run_tests.py) there, with ATTNBOOK_UNPINNED=1
(which skips the one test that compares the environment with the pins), and prints what breaks:
which packages moved from the lock, each step's result, the tests that failed and why.
It exits 1 when anything failed. It is not part of `make test`.

    python3 -m tools.test_latest                       # the newest python3.N on PATH
    python3 -m tools.test_latest --python python3.13   # another Python
    python3 -m tools.test_latest --steps lint unit     # only some steps of make test

It uses only the standard library: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "_build" / "test-latest"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STEP_LINE = re.compile(r"^(\w+)\s+[\d.]+\s+(ok|FAILED)\s+\((\d+) passed, (\d+) failed\)$")
FAILURE_LINE = re.compile(r"^(FAILED|ERROR) \S+")
PROBLEM_LINE = re.compile(r"(WARNING|ERROR|Error|error:)")


def newest_python(candidates: range = range(20, 9, -1)) -> str:
    """The newest `python3.N` on PATH (N from 20 down to 10), else `python3`."""
    for minor in candidates:
        found = shutil.which(f"python3.{minor}")
        if found:
            return found
    found = shutil.which("python3")
    if not found:
        raise SystemExit("no python3 on PATH; pass --python")
    return found


def run(command: list[str], log, cwd: Path = WORK, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `command`, echoing it and its output to the terminal and to `log`."""
    print("$ " + " ".join(command), file=log, flush=True)
    print("$ " + " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        log.write(line)
        lines.append(line)
    process.wait()
    if check and process.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed with exit code {process.returncode}")
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines))


def fresh_checkout() -> Path:
    """A clone of the committed HEAD under _build/test-latest/book."""
    book = WORK / "book"
    if book.exists():
        shutil.rmtree(book)
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(book)], check=True)
    return book


def uncommitted_changes() -> bool:
    """Whether the checkout differs from HEAD (those changes are not what gets tested)."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return bool(status.stdout.strip())


def install(python: str, book: Path, log) -> Path:
    """A fresh venv in _build/test-latest/venv with the newest releases; returns its python."""
    venv = WORK / "venv"
    run([python, "-m", "venv", "--clear", str(venv)], log)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    run(pip + ["install", "--quiet", "--upgrade", "pip"], log)
    # PyTorch's own index serves the CPU build; PyPI's Linux wheels are CUDA builds of several GB.
    torch = run(pip + ["install", "--quiet", "--retries", "1", "--index-url", TORCH_CPU_INDEX, "torch"],
                log, check=False)
    if torch.returncode != 0:
        run(pip + ["install", "--quiet", "torch"], log)
    run(pip + ["install", "--quiet", "--upgrade", "-r", str(book / "requirements.in")], log)
    run(pip + ["install", "--quiet", "--no-deps", "-e", str(book)], log)
    run([str(venv / "bin" / "python"), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
         "--display-name", "Python 3 (attnbook, newest)"], log)
    # the Makefile's mark of a finished install, so `make lab VENV=...` uses this venv as it is
    (venv / ".installed").touch()
    return venv / "bin" / "python"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


PINS_THAT_APPLY = """
import json, sys
from packaging.requirements import Requirement
pins = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if line and not line.startswith("#"):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            pins[requirement.name] = next(iter(requirement.specifier)).version
print(json.dumps(pins))
"""


def moved_packages(venv_python: Path, book: Path) -> list[tuple[str, str, str]]:
    """(name, locked version, installed version) of every package that is not at its pin;
    `-` where the lock has no such package or the venv does not have it."""
    command = [str(venv_python), "-c", PINS_THAT_APPLY, str(book / "requirements.lock")]
    pins = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    pins = {_key(name): version for name, version in pins.items()}
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    installed = {_key(p["name"]): p["version"] for p in json.loads(listed)}
    installed.pop("attnbook", None)
    names = sorted(set(pins) | set(installed))
    return [(name, pins.get(name, "-"), installed.get(name, "-")) for name in names
            if pins.get(name) != installed.get(name)]


def held_back(venv_python: Path) -> list[tuple[str, str, str]]:
    """(name, installed, newest) for packages a newer release of which the resolver did not
    take (another package's bound, or requirements.in's)."""
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--outdated", "--format", "json"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        return []
    return [(p["name"], p["version"], p["latest_version"]) for p in json.loads(listed.stdout)]


def what_broke(output: str) -> tuple[list[str], list[str]]:
    """From tools.run_tests' output: its per-step summary lines, and the failed tests
    (pytest's FAILED/ERROR lines) or, for the site build, its warnings and errors."""
    steps = [line.strip() for line in output.splitlines() if STEP_LINE.match(line.strip())]
    failures = [line.strip() for line in output.splitlines() if FAILURE_LINE.match(line.strip())]
    site = output.split("===== site:", 1)[1].split("=====", 1)[0] if "===== site:" in output else ""
    failures += [f"site: {line.strip()}" for line in site.splitlines() if PROBLEM_LINE.search(line)]
    return steps, failures


def versions(python: str, venv_python: Path) -> str:
    """'Python 3.15.2 (python3.15); torch 2.15.0 (CPU build)' for the new environment."""
    code = "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
    found = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        return f"Python from {python}; torch does not import: {found.stderr.strip()[-300:]}"
    py, torch, cuda = found.stdout.split()
    build = "CPU build" if cuda == "None" else f"CUDA {cuda} build"
    return f"Python {py} ({python}); torch {torch} ({build})"


def report(python: str, venv_python: Path, book: Path, output: str, seconds: float) -> str:
    """The Markdown report: versions, what moved, each step, what broke."""
    steps, failures = what_broke(output)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# make test-latest ({when}, {seconds / 60:.0f} min)", "",
             versions(python, venv_python), "",
             "## Packages not at their pin in requirements.lock", "",
             "| package | lock | newest installed |", "|---|---|---|"]
    lines += [f"| {name} | {pin} | {now} |" for name, pin, now in moved_packages(venv_python, book)]
    lines += ["", "## Newer releases the resolver did not take", ""]
    held = held_back(venv_python)
    lines += [f"- {name} {now} (newest {newest})" for name, now, newest in held] or ["- none"]
    lines += ["", "## make test's steps", "", "```", *steps, "```", "", "## What broke", ""]
    lines += [f"- {line}" for line in failures] or ["- nothing"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="the Python to build the environment with (default: the newest "
                                         "python3.N on PATH)")
    parser.add_argument("--steps", nargs="*", default=[], help="steps of tools/run_tests.py (default: all)")
    args = parser.parse_args(argv)
    python = args.python or newest_python()
    start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    if uncommitted_changes():
        print("note: the checkout has uncommitted changes; test-latest tests the committed HEAD")
    book = fresh_checkout()
    with open(WORK / "log.txt", "w", encoding="utf-8") as log:
        venv_python = install(python, book, log)
        tests = run([str(venv_python), "-m", "tools.run_tests", *args.steps], log, cwd=book, check=False,
                    env=os.environ | {"ATTNBOOK_UNPINNED": "1"})
    text = report(python, venv_python, book, tests.stdout, time.perf_counter() - start)
    (WORK / "report.md").write_text(text, encoding="utf-8")
    print("\n" + text + f"\n(report: {WORK / 'report.md'}; full log: {WORK / 'log.txt'})")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
