"""`make test-latest`: build and test the book with the newest releases of what it uses.

The lock file is ignored. In a fresh clone of the committed HEAD (so the checkout and its
built site are left alone) and a fresh virtual environment, it installs

    PyTorch     the newest release, from PyTorch's CPU index, or from the configured
                package sources when that index cannot be reached
    the rest    the newest releases of requirements.in (the book's direct dependencies)
                and of everything they and PyTorch pull in (pip's eager upgrade)

then runs the whole of `make test` (tools/run_tests.py) there, with ATTNBOOK_UNPINNED=1
(which skips the one test that compares the environment with the pins), and writes what
breaks to _build/test-latest/report.md: the commit, which packages moved from the lock,
which newer releases the resolver held back, each step's result and the failed tests (or,
for a step that names none, its last lines). The report is written even when the install
fails. Exit status 1 when anything failed. It is not part of `make test`.

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

from tools.run_tests import STEPS

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "_build" / "test-latest"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
OLDEST_PYTHON = (3, 11)  # the lock's floor: numpy 2.4 and others need 3.11
STEP_HEADER = re.compile(r"^===== (\w+): ")
STEP_LINE = re.compile(r"^(\w+)\s+[\d.]+\s+(ok|FAILED)\s+\((\d+) passed, (\d+) failed\)$")
FAILURE_LINE = re.compile(r"^(FAILED|ERROR)\b")
SITE_PROBLEM = re.compile(r"WARNING|ERROR|Error|error:|Exception|Traceback")
TAIL = 15


class InstallFailed(Exception):
    """An install command failed; the report says which, with its last lines."""

    def __init__(self, command: list[str], output: str):
        super().__init__(" ".join(command))
        self.command = " ".join(command)
        self.tail = "\n".join(output.splitlines()[-TAIL:])


def newest_python(candidates: range = range(20, 9, -1), path: str | None = None) -> str:
    """The newest `python3.N` on PATH (N from 20 down to 10), else `python3`."""
    for minor in candidates:
        found = shutil.which(f"python3.{minor}", path=path)
        if found:
            return found
    found = shutil.which("python3", path=path)
    if not found:
        raise SystemExit("test-latest: no python3 on PATH; name one with --python")
    return found


def checked_python(python: str) -> str:
    """`python`'s full path, once it is known to run and to be new enough."""
    found = shutil.which(python)
    if not found:
        raise SystemExit(f"test-latest: --python {python} is not an executable on PATH")
    version = subprocess.run([found, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True)
    if version.returncode != 0:
        raise SystemExit(f"test-latest: {found} does not run: {version.stderr.strip()[-200:]}")
    major, minor = (int(part) for part in version.stdout.split())
    if (major, minor) < OLDEST_PYTHON:
        raise SystemExit(f"test-latest: {found} is Python {major}.{minor}; the book needs "
                         f"{OLDEST_PYTHON[0]}.{OLDEST_PYTHON[1]} or newer")
    return found


def git(*arguments: str) -> str:
    """Output of a git command in the checkout; a clear exit when git or the repository is missing."""
    if not shutil.which("git"):
        raise SystemExit("test-latest: git is needed (it clones the committed HEAD)")
    done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"test-latest: `git {' '.join(arguments)}` failed: {done.stderr.strip()}; "
                         "test-latest needs a git checkout of the book")
    return done.stdout.strip()


def run(command: list[str], log, cwd: Path = WORK, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Run `command`, echoing it and its output to the terminal and to `log`."""
    print("$ " + " ".join(command), file=log, flush=True)
    print("$ " + " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        log.write(line)
        lines.append(line)
    process.wait()
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines))


def must(command: list[str], log) -> subprocess.CompletedProcess:
    """`run`, raising InstallFailed when the command fails."""
    done = run(command, log)
    if done.returncode != 0:
        raise InstallFailed(command, done.stdout)
    return done


def fresh_checkout() -> Path:
    """A clone of the committed HEAD under _build/test-latest/book."""
    book = WORK / "book"
    if book.exists():
        shutil.rmtree(book)
    git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(book))
    return book


def install(python: str, book: Path, log) -> Path:
    """A fresh venv in _build/test-latest/venv with the newest releases; returns its python."""
    venv = WORK / "venv"
    must([python, "-m", "venv", "--clear", str(venv)], log)
    venv_python = venv / "bin" / "python"
    pip = [str(venv_python), "-m", "pip"]
    must(pip + ["install", "--quiet", "--upgrade", "pip"], log)
    # PyTorch's own index serves the CPU build (PyPI's Linux wheels are CUDA builds of several
    # GB); its dependencies come from the configured sources in the next step, newest first.
    torch = run(pip + ["install", "--quiet", "--no-deps", "--retries", "1", "--index-url",
                       TORCH_CPU_INDEX, "torch"], log)
    if torch.returncode != 0:
        must(pip + ["install", "--quiet", "torch"], log)
    torch_version = installed_versions(venv_python)["torch"]
    must(pip + ["install", "--quiet", "--upgrade", "--upgrade-strategy", "eager",
                f"torch=={torch_version}", "-r", str(book / "requirements.in")], log)
    must(pip + ["install", "--quiet", "--no-deps", "-e", str(book)], log)
    must([str(venv_python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
          "--display-name", "Python 3 (attnbook, newest)"], log)
    return venv_python


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions(venv_python: Path) -> dict[str, str]:
    """Normalised name -> version of every distribution in the venv."""
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    return {_key(p["name"]): p["version"] for p in json.loads(listed)}


PINS_THAT_APPLY = """
import json, sys
from packaging.requirements import Requirement
pins = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if line and not line.startswith("#"):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (specifier,) = requirement.specifier
            pins[requirement.name] = specifier.version
print(json.dumps(pins))
"""  # run by the venv's Python, whose packaging evaluates the lock's markers for itself


def moved_packages(venv_python: Path, book: Path) -> list[tuple[str, str, str]]:
    """(name, locked version, installed version) of every package that is not at its pin;
    `-` where the lock has no such package or the venv does not have it. pip, its build
    tools and torch are never in the lock, so they always appear."""
    command = [str(venv_python), "-c", PINS_THAT_APPLY, str(book / "requirements.lock")]
    pins = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    pins = {_key(name): version for name, version in pins.items()}
    installed = installed_versions(venv_python)
    installed.pop("attnbook", None)
    names = sorted(set(pins) | set(installed))
    return [(name, pins.get(name, "-"), installed.get(name, "-")) for name in names
            if pins.get(name) != installed.get(name)]


def held_back(venv_python: Path) -> list[tuple[str, str, str]] | None:
    """(name, installed, newest) for packages with a newer release that the resolver did not
    take (a bound of another package, or of requirements.in); None when pip cannot tell."""
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--outdated", "--format", "json"],
                            capture_output=True, text=True)
    if listed.returncode != 0 or "Retrying" in listed.stderr:
        return None
    return [(p["name"], p["version"], p["latest_version"]) for p in json.loads(listed.stdout)]


def step_outputs(output: str) -> dict[str, list[str]]:
    """tools.run_tests' output cut at its `===== name: ...` headers: step -> its lines."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        header = STEP_HEADER.match(line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif line.startswith("===== summary"):
            current = None
        elif current:
            sections[current].append(line)
    return sections


def what_broke(output: str, returncode: int) -> tuple[list[str], list[str]]:
    """From tools.run_tests' output: its per-step summary lines, and what failed: pytest's
    FAILED/ERROR lines, the site build's warnings and errors, and for a failed step that
    named nothing (lint, a crash, a usage error) its last lines."""
    steps = [line.strip() for line in output.splitlines() if STEP_LINE.match(line.strip())]
    failures = []
    for name, lines in step_outputs(output).items():
        found = [line.strip() for line in lines if FAILURE_LINE.match(line.strip())]
        if name == "site":
            found += [f"site: {line.strip()}" for line in lines if SITE_PROBLEM.search(line)]
        failed = any(line.split()[0] == name and "FAILED" in line for line in steps)
        if failed and not found:
            found = [f"{name} failed; its last lines:", *lines[-TAIL:]]
        failures += found
    if not steps and returncode != 0:
        failures += [f"the tests ended before their summary (exit {returncode}); the last lines:",
                     *output.splitlines()[-TAIL:]]
    return steps, failures


def versions(python: str, venv_python: Path) -> str:
    """'Python 3.15.2 (python3.15); torch 2.15.0 (CPU build)' for the new environment."""
    code = ("import sys, torch\n"
            "print(sys.version.split()[0], torch.__version__, torch.version.cuda, sep='\\n')")
    found = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        return f"Python from {python}; torch does not import: {found.stderr.strip()[-300:]}"
    py, torch, cuda = found.stdout.strip().splitlines()[-3:]  # last: anything torch printed comes first
    build = "CPU build" if cuda == "None" else f"CUDA {cuda} build"
    return f"Python {py} ({python}); torch {torch} ({build})"


def environment_report(python: str, venv_python: Path, book: Path) -> list[str]:
    """The report's lines on the new environment: versions, what moved, what was held back."""
    lines = [versions(python, venv_python), "", "## Packages not at their pin in requirements.lock", ""]
    try:
        moved = moved_packages(venv_python, book)
        lines += ["| package | lock | newest installed |", "|---|---|---|"]
        lines += [f"| {name} | {pin} | {now} |" for name, pin, now in moved]
    except (subprocess.CalledProcessError, ValueError) as error:
        lines += [f"unknown: {error}"]
    lines += ["", "## Newer releases the resolver did not take", ""]
    held = held_back(venv_python)
    if held is None:
        lines += ["unknown: `pip list --outdated` could not reach the package index"]
    else:
        lines += [f"- {name} {now} (newest {newest})" for name, now, newest in held] or ["- none"]
    return lines


def tests_report(tests: subprocess.CompletedProcess) -> list[str]:
    """The report's lines on make test's run: each step, then what broke."""
    steps, failures = what_broke(tests.stdout, tests.returncode)
    lines = ["", "## make test's steps", "", "```", *steps, "```", "", "## What broke", ""]
    return lines + ([f"    {line}" for line in failures] or ["nothing"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="the Python to build the environment with (default: the "
                                         "newest python3.N on PATH)")
    parser.add_argument("--steps", nargs="*", default=[], choices=list(STEPS),
                        help="steps of tools/run_tests.py (default: all)")
    args = parser.parse_args(argv)
    python = checked_python(args.python or newest_python())
    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain"))
    start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    report_path = WORK / "report.md"
    report_path.unlink(missing_ok=True)  # a report left from an earlier run must not pass for this one
    lines = [f"# make test-latest of {commit}", ""]
    if dirty:
        lines += ["The checkout had uncommitted changes: they were not tested.", ""]
    status = 1
    with open(WORK / "log.txt", "w", encoding="utf-8") as log:
        try:
            book = fresh_checkout()
            venv_python = install(python, book, log)
            lines += environment_report(python, venv_python, book)
            tests = run([str(venv_python), "-m", "tools.run_tests", *args.steps], log, cwd=book,
                        env=os.environ | {"ATTNBOOK_UNPINNED": "1"})
            lines += tests_report(tests)
            status = 0 if tests.returncode == 0 else 1
        except InstallFailed as failure:
            lines += ["## What broke", "", f"The install failed at `{failure.command}`:", "", "```",
                      failure.tail, "```"]
        finally:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            lines[0] += f" ({when}, {(time.perf_counter() - start) / 60:.0f} min)"
            report_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n" + report_path.read_text(encoding="utf-8"))
    print(f"(report: {report_path}; full log: {WORK / 'log.txt'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
