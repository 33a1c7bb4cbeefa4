"""Write the table of contents of the student build: the book without its solutions
and without the instructor's guide.

    python -m tools.student_toc _build/_toc_student.yml
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Folders whose pages students do not see; a part left with no page is dropped.
LEFT_OUT = ("solutions/", "instructors/")


def student_toc() -> dict:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = []
    for part in toc["parts"]:
        chapters = [entry for entry in part["chapters"] if not entry["file"].startswith(LEFT_OUT)]
        if chapters:
            parts.append({**part, "chapters": chapters})
    toc["parts"] = parts
    return toc


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(student_toc(), sort_keys=False))
    print(f"wrote {target}")
