"""The instructor's guide (instructors/): complete, in step with the notebooks, and
left out of the student build."""

import json
import re

import pytest
import yaml

from tools import instructor_tables
from tools.student_toc import ROOT, student_toc

GUIDE = ROOT / "instructors"
HEADING = re.compile(r"^#{2,4} Exercise (\d+\.\d+): .+ \((★{1,3}), (\d+) min\)\s*$")
GENERATED = re.compile(r"<!-- BEGIN generated: ([^>]*?) -->\n(.*?)<!-- END generated -->", re.DOTALL)
SUBSECTIONS = ["Prerequisites", "Learning objectives", "Time", "Exercises",
               "Discussion questions", "Mistakes students make", "The hardest idea"]


def minutes(text: str) -> int:
    """'1 h 05 min', '1 h' or '45 min' as minutes (a second parser, not the tool's)."""
    match = re.fullmatch(r"\**(?:(\d+) h)? ?(?:(\d+) min)?\**", text.strip())
    assert match and any(match.groups()), f"not a duration: {text!r}"
    return 60 * int(match[1] or 0) + int(match[2] or 0)


def heading_times() -> dict[str, dict[str, int]]:
    """{chapter: {exercise: minutes}} read from the headings of solutions/, with json."""
    chapters = {}
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        found = {}
        for cell in cells:
            if cell["cell_type"] == "markdown":
                for line in "".join(cell["source"]).splitlines():
                    if match := HEADING.match(line):
                        found[match[1]] = int(match[3])
        chapters[str(int(path.name[:2]))] = found
    return chapters


def chapter_sections() -> dict[str, str]:
    """{chapter number: the text of its section} over the part pages."""
    sections = {}
    for path in sorted(GUIDE.glob("part*.md")):
        pieces = re.split(r"^## Chapter (\d+): .*$", path.read_text(), flags=re.MULTILINE)
        for number, body in zip(pieces[1::2], pieces[2::2]):
            assert number not in sections, f"chapter {number} has two sections"
            sections[number] = body
    return sections


def subsection(body: str, title: str) -> str:
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", body, re.MULTILINE | re.DOTALL)
    assert match, f"no '### {title}'"
    return match[1]


def without_generated(text: str) -> str:
    return GENERATED.sub("", text)


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def test_the_generated_parts_are_up_to_date():
    assert instructor_tables.main(["--check"]) == 0, \
        "run `python -m tools.instructor_tables` and commit instructors/"


def test_every_chapter_has_a_section_with_every_part():
    chapters = {str(int(p.name[:2])) for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")}
    sections = chapter_sections()
    assert set(sections) == chapters
    for number, body in sections.items():
        for title in SUBSECTIONS:
            assert subsection(body, title).strip(), f"chapter {number}: '{title}' is empty"
        questions = re.findall(r"^\d+\. ", subsection(body, "Discussion questions"), re.MULTILINE)
        assert 2 <= len(questions) <= 4, f"chapter {number}: {len(questions)} discussion questions"
        mistakes = re.findall(r"^- ", subsection(body, "Mistakes students make"), re.MULTILINE)
        assert len(mistakes) >= 2, f"chapter {number}: too few mistakes listed"
        objectives = re.findall(r"^- ", subsection(body, "Learning objectives"), re.MULTILINE)
        assert len(objectives) >= 3, f"chapter {number}: too few learning objectives"
        assert re.search(r"\{doc\}`\.\./chapters/\d\d_", body), f"chapter {number}: no link"


def test_every_exercise_is_placed_in_class_or_assigned_and_named_in_the_mistakes():
    sections = chapter_sections()
    for chapter, times in heading_times().items():
        placed = subsection(without_generated(sections[chapter]), "Exercises")
        mistakes = subsection(sections[chapter], "Mistakes students make")
        for exercise in times:
            assert re.search(rf"\b{re.escape(exercise)}\b", placed), \
                f"exercise {exercise} is neither used in class nor assigned in the guide"
            assert f"**{exercise}**" in mistakes, f"exercise {exercise} has no mistakes listed"
        named = set(re.findall(r"\b(\d+\.\d+)\b", placed))
        assert named <= set(times), f"chapter {chapter}: the guide names {named - set(times)}"


def test_the_times_in_the_guide_are_the_sums_of_the_headings():
    sections, chapters = chapter_sections(), heading_times()
    for chapter, times in chapters.items():
        blocks = dict(GENERATED.findall(sections[chapter]))
        rows = table_rows(blocks[f"chapter {chapter}"])[1:]
        listed = {row[0].split(" ", 1)[0]: minutes(row[2]) for row in rows[:-1]}
        assert listed == times, f"chapter {chapter}: the table and the headings disagree"
        assert minutes(rows[-1][2]) == sum(times.values())
    overview = dict(GENERATED.findall((GUIDE / "index.md").read_text()))["overview"]
    rows = table_rows(overview)[1:]
    for row in rows[:-1]:
        assert int(row[2]) == len(chapters[row[0]])
        assert minutes(row[3]) == sum(chapters[row[0]].values())
    assert minutes(rows[-1][3]) == sum(sum(t.values()) for t in chapters.values())


def test_the_course_plans_name_real_exercises_and_add_up():
    known = {e: m for times in heading_times().values() for e, m in times.items()}
    tables = [table_rows(t) for t in re.split(r"\n(?=## )", (GUIDE / "course_plans.md").read_text())]
    tables = [rows for rows in tables if rows and "Assigned time" in rows[0]]
    assert len(tables) == 2
    for rows in tables:
        header = rows[0]
        for row in rows[1:]:
            cell = dict(zip(header, row))
            assigned = re.findall(r"\b\d+\.\d+\b", cell["Assigned"])
            assert set(assigned + re.findall(r"\b\d+\.\d+\b", cell["In class"])) <= set(known)
            assert minutes(cell["Assigned time"]) == sum(known[e] for e in assigned)
    assert [row[0] for row in tables[0][1:]] == [str(w) for w in range(1, 13)]
    assert [row[0] for row in tables[1][1:]] == [str(w) for w in range(1, 7)]


def files(toc):
    return [entry["file"] for part in toc["parts"] for entry in part["chapters"]]


def test_the_full_book_has_the_instructor_part_and_every_page_of_it():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    part = [p for p in toc["parts"] if p["caption"] == "For instructors"]
    assert len(part) == 1
    pages = sorted(f"instructors/{p.stem}" for p in GUIDE.glob("*.md"))
    assert sorted(files({"parts": part})) == pages
    assert files({"parts": part})[0] == "instructors/index"


def test_the_student_build_has_neither_solutions_nor_the_guide():
    listed = files(student_toc())
    assert not [f for f in listed if f.startswith(("solutions/", "instructors/"))]
    assert "chapters/04_queries_keys_values" in listed


@pytest.mark.parametrize("broken, message", [
    ("## Exercise 4.9: Missing its time (★★)", "without a difficulty and a time"),
])
def test_the_tool_refuses_a_heading_without_a_time(tmp_path, monkeypatch, broken, message):
    folder = tmp_path / "solutions"
    folder.mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": broken}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / "04_x.ipynb").write_text(json.dumps(notebook))
    monkeypatch.setattr(instructor_tables, "ROOT", tmp_path)
    with pytest.raises(ValueError, match=message):
        instructor_tables.exercises()
