from tools.student_toc import student_toc


def files(toc):
    return [entry["file"] for part in toc["parts"] for entry in part["chapters"]]


def test_student_build_has_every_chapter_and_exercise_but_no_solution():
    toc = student_toc()
    listed = files(toc)
    assert not [f for f in listed if f.startswith("solutions/")]
    assert "chapters/01_bottleneck" in listed and "exercises/01_bottleneck" in listed
