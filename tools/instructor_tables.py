"""The numbers of the instructor's guide, computed from the notebooks so they cannot drift.

    python -m tools.instructor_tables          # rewrite the generated parts of instructors/
    python -m tools.instructor_tables --check  # exit 1, naming what is stale, if any is

Three kinds of numbers are generated:

- each chapter's exercise table: every exercise of `solutions/NN_*.ipynb` with the
  difficulty and time of its heading, `Exercise 4.2: Title (★★, 10 min)`, and their sum;
- each chapter's reading time, estimated from the chapter notebook: its prose at
  READING_WPM words a minute plus CODE_CELL_MINUTES for each code cell shown on the
  site, rounded up to five minutes;
- the "Assigned time" column of the course plans in instructors/course_plans.md: the
  sum of the times of the exercises named in the same row's "Assigned" column.

Generated text sits between `<!-- BEGIN generated: KEY -->` and `<!-- END generated -->`
lines (KEY is `chapter N` or `overview`); the rest of each page is written by hand.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "instructors"
PLANS = GUIDE / "course_plans.md"
READING_WPM = 150
CODE_CELL_MINUTES = 0.5

HEADING = re.compile(r"^#{2,4} Exercise (\d+)\.(\d+): (.+) \((★{1,3}), (\d+) min\)\s*$")
BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<key>[^>]*?) -->\n)(?P<body>.*?)(<!-- END generated -->)",
                   re.DOTALL)
EXERCISE_ID = re.compile(r"\b(\d{1,2})\.(\d{1,2})\b")
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass(frozen=True)
class Exercise:
    chapter: int
    number: str  # "4.2"
    title: str
    stars: int
    minutes: int


def chapter_notebooks(folder: str) -> dict[int, Path]:
    return {int(path.name[:2]): path for path in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb"))}


def exercises() -> list[Exercise]:
    """Every exercise of solutions/, in order, from its heading."""
    found = []
    for chapter, path in chapter_notebooks("solutions").items():
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "markdown":
                continue
            for line in cell.source.splitlines():
                if re.match(r"^#{2,4} Exercise \d", line):
                    match = HEADING.match(line)
                    if not match:
                        raise ValueError(f"{path.name}: an exercise heading without a "
                                         f"difficulty and a time: {line!r}")
                    number = f"{match[1]}.{match[2]}"
                    if int(match[1]) != chapter:
                        raise ValueError(f"{path.name}: exercise {number} in chapter {chapter}")
                    found.append(Exercise(chapter, number, match[3].strip(), len(match[4]),
                                          int(match[5])))
    return found


def by_chapter() -> dict[int, list[Exercise]]:
    chapters: dict[int, list[Exercise]] = {}
    for exercise in exercises():
        chapters.setdefault(exercise.chapter, []).append(exercise)
    return chapters


def reading_minutes(path: Path) -> int:
    """Prose words at READING_WPM plus CODE_CELL_MINUTES per shown code cell, up to 5 min."""
    notebook = nbformat.read(path, as_version=4)
    words = sum(len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")
    shown = [cell for cell in notebook.cells if cell.cell_type == "code"
             and not {"remove-cell", "remove-input", "hide-input"} & set(cell.metadata.get("tags", []))]
    minutes = words / READING_WPM + CODE_CELL_MINUTES * len(shown)
    return 5 * math.ceil(minutes / 5)


def duration(minutes: int) -> str:
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"


def count_words(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def chapter_block(chapter: int) -> str:
    listed = by_chapter()[chapter]
    total = sum(e.minutes for e in listed)
    reading = reading_minutes(chapter_notebooks("chapters")[chapter])
    lines = [f"Reading and running the chapter: about {duration(reading)}. "
             f"Exercises: {duration(total)} in all ({count_words(len(listed))} exercises, "
             "the sum of the estimates in their headings).", "",
             "| Exercise | Level | Time |", "|---|---|---|"]
    lines += [f"| {e.number} {e.title} | {'★' * e.stars} | {e.minutes} min |" for e in listed]
    lines.append(f"| **All {count_words(len(listed))}** | | **{duration(total)}** |")
    return "\n".join(lines) + "\n"


def overview_block() -> str:
    chapters = by_chapter()
    notebooks = chapter_notebooks("chapters")
    lines = ["| Chapter | Reading | Exercises | Exercise time | ★ / ★★ / ★★★ |",
             "|---|---|---|---|---|"]
    total_reading = total_exercise = total_count = 0
    for chapter, listed in chapters.items():
        reading = reading_minutes(notebooks[chapter])
        minutes = sum(e.minutes for e in listed)
        stars = " / ".join(str(sum(e.stars == s for e in listed)) for s in (1, 2, 3))
        lines.append(f"| {chapter} | {duration(reading)} | {len(listed)} | {duration(minutes)} "
                     f"| {stars} |")
        total_reading += reading
        total_exercise += minutes
        total_count += len(listed)
    lines.append(f"| **All** | **{duration(total_reading)}** | **{total_count}** "
                 f"| **{duration(total_exercise)}** | |")
    return "\n".join(lines) + "\n"


def generated(key: str) -> str:
    if key == "overview":
        return overview_block()
    match = re.fullmatch(r"chapter (\d+)", key)
    if not match:
        raise ValueError(f"unknown generated block {key!r}")
    return chapter_block(int(match[1]))


def render_blocks(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + generated(m["key"]) + m[4], text)


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def render_plans(text: str) -> str:
    """Fill the "Assigned time" cell of every course-plan row from its "Assigned" cell."""
    minutes = {e.number: e.minutes for e in exercises()}
    lines, header = text.split("\n"), None
    for index, line in enumerate(lines):
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if "Assigned" in cells and "Assigned time" in cells:
            header = (cells.index("Assigned"), cells.index("Assigned time"))
            continue
        if header is None or set(line) <= set("|-: "):
            continue
        assigned, time_column = header
        named = [f"{a}.{b}" for a, b in EXERCISE_ID.findall(cells[assigned])]
        unknown = [n for n in named if n not in minutes]
        if unknown:
            raise ValueError(f"{PLANS.name}: the plan assigns exercises that do not exist: {unknown}")
        cells[time_column] = duration(sum(minutes[n] for n in named)) if named else "—"
        lines[index] = "| " + " | ".join(cells) + " |"
    return "\n".join(lines)


def render(path: Path) -> str:
    text = render_blocks(path.read_text())
    return render_plans(text) if path == PLANS else text


def pages() -> list[Path]:
    return sorted(GUIDE.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a generated part is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in pages():
        text = path.read_text()
        new = render(path)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("Out of date with solutions/ and chapters/: " + ", ".join(map(str, stale))
              + ". Run `python -m tools.instructor_tables` to regenerate.", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(map(str, stale))) if stale else "instructors/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
