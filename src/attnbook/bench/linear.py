"""The linear-attention benchmark of chapter 12 (`python -m attnbook.bench linear`): causal
linear attention computed token by token (the recurrence) against chunk by chunk, and
against the quadratic masked form, on one CPU thread.

Every row's "speedup" is the recurrent form's time divided by that row's time, both
measured in the same run on the same inputs: the named baseline is "recurrent".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnbook.bench import time_callable
from attnbook.linear_attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
)

BASELINE = "recurrent"


def implementations(chunk_size: int = 64) -> dict[str, Callable]:
    """name -> f(q, k, v): the three computations of causal linear attention."""
    return {
        "recurrent": causal_linear_attention_recurrent,
        "chunked": lambda q, k, v: causal_linear_attention_chunked(q, k, v, chunk_size),
        "parallel": causal_linear_attention_parallel,
    }


def linear_benchmark(lengths: list[int], heads: list[int] = (1,), head_dim: int = 64,
                     chunk_size: int = 64, repeats: int = 3, warmup: int = 1,
                     timer: Callable | None = None, only: list[str] | None = None
                     ) -> list[dict]:
    """Seconds of each implementation on q, k, v of shape (1, heads, N, head_dim), float32,
    for every N in `lengths` and every number of heads; rows {"N", "heads", "d", "chunk",
    "impl", "seconds", "speedup"} with speedup = recurrent seconds / seconds.
    `timer(fn, repeats)` returns seconds (default: the fastest of `repeats` runs after
    `warmup` untimed ones)."""
    if timer is None:
        def timer(fn, repeats):
            return time_callable(fn, repeats=repeats, warmup=warmup, statistic="min")
    impls = implementations(chunk_size)
    names = [BASELINE] + [n for n in impls if n != BASELINE and (only is None or n in only)]
    rows = []
    for n_heads in heads:
        for n in lengths:
            g = torch.Generator().manual_seed(n)
            q, k, v = (torch.randn(1, n_heads, n, head_dim, generator=g) for _ in range(3))
            seconds = {}
            with torch.no_grad():
                for name in names:
                    seconds[name] = timer(lambda f=impls[name], x=(q, k, v): f(*x), repeats)
            for name in names:
                rows.append({"N": n, "heads": n_heads, "d": head_dim, "chunk": chunk_size,
                             "impl": name, "seconds": seconds[name],
                             "speedup": seconds[BASELINE] / seconds[name]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a text table, speed-ups against the recurrent form."""
    lines = [f"{'heads':>5} {'N':>6} {'impl':>10} {'ms':>9} {'speed-up vs recurrent':>22}"]
    for row in rows:
        lines.append(f"{row['heads']:>5} {row['N']:>6} {row['impl']:>10} "
                     f"{1000 * row['seconds']:>9.2f} {row['speedup']:>21.1f}x")
    return "\n".join(lines)
