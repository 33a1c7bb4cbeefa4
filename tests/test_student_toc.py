import yaml

from tools.student_toc import ROOT, student_toc


def files(toc):
    return [entry["file"] for part in toc["parts"] for entry in part["chapters"]]


def test_student_build_has_every_chapter_and_exercise_but_no_solution():
    toc = student_toc()
    listed = files(toc)
    assert not [f for f in listed if f.startswith("solutions/")]
    assert "chapters/01_bottleneck" in listed and "exercises/01_bottleneck" in listed


def test_student_build_leaves_out_the_instructors_guide():
    toc = student_toc()
    assert not [f for f in files(toc) if f.startswith("instructors/")]
    assert "For instructors" not in [part["caption"] for part in toc["parts"]]
    assert all(part["chapters"] for part in toc["parts"])


def test_student_build_keeps_everything_else_in_order():
    full = files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    kept = [f for f in full if not f.startswith(("solutions/", "instructors/"))]
    assert files(student_toc()) == kept
