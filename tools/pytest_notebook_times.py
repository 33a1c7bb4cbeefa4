"""A pytest plugin: add up the time nbval spends in each notebook and print it at the end."""

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if ".ipynb" in report.nodeid:
        _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.write_sep("-", "seconds per notebook")
    for name, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{seconds:7.1f}  {name}")
