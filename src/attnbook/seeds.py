"""Seeds, and the measurements that `make seeds` collects across them.

A claim about a trained model is a claim about the method, not about one seed on
one CPU. Every notebook seeds itself through `attnbook.train.set_seed`, which
shifts its seed by the optional environment variable ``ATTNBOOK_SEED``; `make
seeds` re-runs the notebooks that train under several values of it and collects
what each run reported with `record_metric` into ``chapters/results/seeds.json``.
A chapter reads that table back with `seed_spread` to report mean and spread.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SEED_VARIABLE = "ATTNBOOK_SEED"
METRICS_VARIABLE = "ATTNBOOK_METRICS"
# Seeds of different runs stay apart: set_seed(1) under ATTNBOOK_SEED=0 is not
# set_seed(0) under ATTNBOOK_SEED=1.
SEED_STRIDE = 1000


def seed_offset() -> int:
    """The integer in ATTNBOOK_SEED, or 0 when it is unset (the stored outputs)."""
    text = os.environ.get(SEED_VARIABLE, "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE} must be an integer, got {text!r}") from None


def seeded(seed: int) -> int:
    """`seed` shifted by this run's ATTNBOOK_SEED: use it wherever a notebook seeds a generator."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed + SEED_STRIDE * seed_offset()


def record_metric(name: str, value: float) -> float:
    """Report a measured number to `make seeds` and return it unchanged.

    Outside `make seeds` (ATTNBOOK_METRICS unset) it only returns the value, so a
    notebook reads the same either way: ``acc = record_metric("exact match", acc)``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    value = float(value)
    path = os.environ.get(METRICS_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"name": name, "value": value}) + "\n")
    return value


def load_seed_runs(notebook: str, table: str | Path = "results/seeds.json") -> dict[int, dict]:
    """The runs of `notebook` (for example "chapters/03_multiplicative_attention.ipynb")
    in the committed table: {seed: {"metrics": {...}, "failures": [...], "seconds": s}}."""
    path = Path(table)
    if not path.exists():
        raise FileNotFoundError(f"no seed table at {path}; run `make seeds` first")
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    if notebook not in runs:
        raise KeyError(f"the seed table has no runs of {notebook}; it has {sorted(runs)}")
    return {int(seed): run for seed, run in runs[notebook].items()}


def seed_spread(notebook: str, metric: str, table: str | Path = "results/seeds.json") -> dict:
    """Mean, standard deviation, minimum and maximum of `metric` over the table's seeds."""
    runs = load_seed_runs(notebook, table)
    values = [run["metrics"][metric] for run in runs.values() if metric in run["metrics"]]
    if not values:
        raise KeyError(f"no run of {notebook} recorded a metric named {metric!r}")
    return summarize(values)


def summarize(values: list[float]) -> dict:
    """{"n", "mean", "std", "min", "max", "values"} of a list of numbers (std with n - 1)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize needs at least one value")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": mean, "std": std, "min": min(values), "max": max(values),
            "values": values}
