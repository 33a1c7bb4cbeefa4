"""`make seeds`: re-run every notebook that trains a model under several seeds.

    python -m tools.seeds                                   # every training notebook, seeds 0-5
    python -m tools.seeds chapters/03_multiplicative_attention.ipynb --seeds 0 1 2
    python -m tools.seeds --jobs 1

Each run is one notebook executed top to bottom with ATTNBOOK_SEED set, in a
scratch copy of its folder (so nothing in the repository is overwritten), with
errors allowed so that every failed assertion is seen, not just the first. What
each run reported through `attnbook.seeds.record_metric`, every error it raised
outside the cells that are meant to fail, its time and a fingerprint of the
notebook's code are merged into chapters/results/seeds.json seed by seed (runs of
other notebooks and of seeds not re-run are kept) and written as a readable table
to chapters/results/seeds.md, with the machine named. A seed whose run was made
with other code than the notebook now holds is marked there, to be re-run.
Exit status 1 when any assertion failed under any seed.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "chapters" / "results"
TABLE_JSON = RESULTS / "seeds.json"
TABLE_MD = RESULTS / "seeds.md"
DEFAULT_SEEDS = [0, 1, 2, 3, 4, 5]
# A notebook "trains" when its code runs an optimiser or a training loop of the package.
TRAINS = re.compile(r"train_seq2seq\(|optimizer\.step\(|\.step\(\)|train_[a-z_]*\(")


def code_of(path: Path) -> str:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in notebook.cells if c.cell_type == "code")


def code_fingerprint(path: Path) -> str:
    """A short hash of the notebook's code cells: which version of the code a run ran."""
    return hashlib.sha256(code_of(path).encode("utf-8")).hexdigest()[:12]


def training_notebooks() -> list[str]:
    """Chapters and solutions whose code trains a model (exercises are generated from solutions)."""
    found = []
    for folder in ("chapters", "solutions"):
        for path in sorted((ROOT / folder).glob("*.ipynb")):
            if TRAINS.search(code_of(path)):
                found.append(str(path.relative_to(ROOT)))
    return found


def _errors(notebook) -> list[str]:
    """One line per error in a cell that is not meant to fail: cell number, exception, message."""
    failures = []
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = " ".join(output.get("evalue", "").split())[:300]
                failures.append(f"cell {number}: {output.get('ename')}: {message}")
    return failures


def run_once(notebook: str, seed: int, threads: int, root: Path = ROOT) -> dict:
    """Execute `notebook` (a path relative to `root`) once under ATTNBOOK_SEED=seed in a
    scratch folder that holds a copy of chapters/results; return what it measured."""
    import nbformat
    from nbclient import NotebookClient

    source = root / notebook
    code = code_fingerprint(source)  # before the run: an edit made while it runs is not what ran
    with tempfile.TemporaryDirectory(prefix="attnbook-seeds-") as scratch:
        scratch = Path(scratch)
        shutil.copytree(root / "chapters" / "results", scratch / "chapters" / "results")
        if (root / "benchmarks").is_dir():  # chapters 10-11 plot the committed GPU results
            shutil.copytree(root / "benchmarks", scratch / "benchmarks")
        folder = scratch / source.parent.name
        folder.mkdir(exist_ok=True)
        metrics_file = scratch / "metrics.jsonl"
        environment = {
            "ATTNBOOK_SEED": str(seed),
            "ATTNBOOK_METRICS": str(metrics_file),
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "MPLBACKEND": "Agg",
        }
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)  # the kernel inherits this process's environment
        try:
            nb = nbformat.read(source, as_version=4)
            client = NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=True,
                                    resources={"metadata": {"path": str(folder)}})
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        metrics = {}
        if metrics_file.exists():
            for line in metrics_file.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                metrics[entry["name"]] = entry["value"]
    return {"notebook": notebook, "seed": seed, "seconds": round(seconds, 1),
            "metrics": metrics, "failures": _errors(nb), "code": code,
            "date": datetime.date.today().isoformat()}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def merge(runs: list[dict], jobs: int, path: Path = TABLE_JSON) -> dict:
    """Fold new runs into the table at `path` seed by seed: a re-run seed replaces its entry,
    other seeds and other notebooks stay as they were."""
    table = {"runs": {}}
    if path.exists():
        table = json.loads(path.read_text(encoding="utf-8"))
    for run in runs:
        entry = {key: run[key] for key in ("seconds", "metrics", "failures", "code", "date") if key in run}
        table["runs"].setdefault(run["notebook"], {})[str(run["seed"])] = entry
    for notebook, entries in table["runs"].items():
        table["runs"][notebook] = dict(sorted(entries.items(), key=lambda item: int(item[0])))
    table["machine"] = machine()
    table["date"] = datetime.date.today().isoformat()
    table["parallel_jobs"] = jobs
    table["runs"] = dict(sorted(table["runs"].items()))
    return table


def stale_seeds(notebook: str, runs: dict, root: Path = ROOT) -> list[str]:
    """Seeds whose run recorded other code than `notebook` now holds (runs that recorded no
    fingerprint are not judged)."""
    path = root / notebook
    if not path.exists():
        return []
    current = code_fingerprint(path)
    return [seed for seed, run in runs.items() if run.get("code") not in (None, current)]


def markdown(table: dict, root: Path = ROOT) -> str:
    from attnbook.seeds import summarize

    lines = ["# Claims under several seeds", "",
             f"Written by `make seeds` on {table['date']}: {table['machine']}, "
             f"{table['parallel_jobs']} notebooks at a time. Each notebook ran once per seed "
             "(ATTNBOOK_SEED); std is the standard deviation over the seeds (the spread the "
             "chapters compare gaps with) and range is max - min.", ""]
    for notebook, runs in table["runs"].items():
        seeds = sorted(runs, key=int)
        failed = [f"seed {s}, {f}" for s in seeds for f in runs[s]["failures"]]
        lines += [f"## {notebook}", "",
                  f"Seeds {', '.join(seeds)}; {len(failed)} failed assertion(s); "
                  f"{min(r['seconds'] for r in runs.values()):.0f}-"
                  f"{max(r['seconds'] for r in runs.values()):.0f} s per run.", ""]
        stale = stale_seeds(notebook, runs, root)
        if stale:
            lines += [f"**Seeds {', '.join(stale)} ran an earlier version of this notebook's code; "
                      "re-run them.**", ""]
        names = sorted({name for run in runs.values() for name in run["metrics"]})
        if names:
            lines += ["| metric | mean | std | min | max | range | " + " | ".join(seeds) + " |",
                      "|---|---|---|---|---|---|" + "---|" * len(seeds)]
            for name in names:
                values = [runs[s]["metrics"].get(name) for s in seeds]
                stats = summarize([v for v in values if v is not None])
                cells = " | ".join("" if v is None else f"{v:.4g}" for v in values)
                lines.append(f"| {name} | {stats['mean']:.4g} | {stats['std']:.3g} | "
                             f"{stats['min']:.4g} | {stats['max']:.4g} | "
                             f"{stats['max'] - stats['min']:.3g} | {cells} |")
            lines.append("")
        lines += [f"- {f}" for f in failed] + ([""] if failed else [])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every one that trains)")
    parser.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="notebooks executed at a time (default: one per core)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or training_notebooks()
    for notebook in notebooks:
        if not (ROOT / notebook).is_file():
            parser.error(f"no notebook at {notebook}")
    notebooks = [str((ROOT / n).resolve().relative_to(ROOT)) for n in notebooks]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [(n, s) for n in notebooks for s in args.seeds]
    print(f"{len(tasks)} runs: {len(notebooks)} notebooks x seeds {args.seeds}, "
          f"{args.jobs} at a time, {threads} thread(s) each", flush=True)
    start = time.perf_counter()
    runs = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_once, n, s, threads) for n, s in tasks]
        for future in futures:
            run = future.result()
            runs.append(run)
            status = "ok" if not run["failures"] else f"{len(run['failures'])} FAILED"
            print(f"  {run['notebook']} seed {run['seed']}: {run['seconds']:.0f} s, {status}"
                  + "".join(f"\n      {f}" for f in run["failures"]), flush=True)
    with open(RESULTS / ".seeds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `make seeds` at once must not lose each other's runs
        table = merge(runs, args.jobs)
        TABLE_JSON.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
        TABLE_MD.write_text(markdown(table), encoding="utf-8")
    failed = sum(len(r["failures"]) for r in runs)
    print(f"wrote {TABLE_JSON.relative_to(ROOT)} and {TABLE_MD.relative_to(ROOT)} "
          f"in {time.perf_counter() - start:.0f} s; {failed} failed assertion(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
