"""Run notebooks top to bottom in place, storing their outputs, as the book is built from them.

    python -m tools.execute_notebooks chapters/01_bottleneck.ipynb solutions/01_bottleneck.ipynb

Cells tagged `raises-exception` may fail (the exercise stubs and their checks);
any other error stops with the cell that failed. Widget state is not stored:
the website shows static figures instead, and never loads widget scripts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 600) -> float:
    """Execute the notebook at `path` in its own folder and save it; return the seconds taken."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=True)
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    print(f"executed {path} in {seconds:.1f} s")
    return seconds


if __name__ == "__main__":
    for name in sys.argv[1:]:
        execute(Path(name))
