"""Write the table of contents of the student build: the book without its solutions.

    python -m tools.student_toc _build/_toc_student.yml
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def student_toc() -> dict:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    toc["parts"] = [part for part in toc["parts"] if part.get("caption") != "Solutions"]
    return toc


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(student_toc(), sort_keys=False))
    print(f"wrote {target}")
