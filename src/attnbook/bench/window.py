"""The sliding-window decoding benchmark of chapter 12 (`python -m attnbook.bench window`):
the time of one decoding step of one attention layer, with a cache capped at the window
(`sparse.SlidingWindowCache`) against a full, preallocated cache (`lm.KVCache`), for a
context that already holds `context` tokens.

The caches are filled with random keys and values directly (decoding the context token
by token first would only take longer, and the step's time depends on the sizes alone);
each timed run makes `steps` decoding steps from that context.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnbook.bench import time_callable
from attnbook.lm import KVCache
from attnbook.sparse import SlidingWindowCache, decode_step


def _filled_caches(context: int, window: int, heads: int, head_dim: int, steps: int,
                   generator: torch.Generator):
    full = KVCache(1, 1, heads, context + steps, head_dim)
    ring = SlidingWindowCache(1, 1, heads, window, head_dim)
    for cache in (full, ring):
        size = min(context, cache.keys[0].shape[2])
        cache.keys[0][:, :, :size] = torch.randn(1, heads, size, head_dim, generator=generator)
        cache.values[0][:, :, :size] = torch.randn(1, heads, size, head_dim,
                                                   generator=generator)
    return full, ring


def window_benchmark(contexts: list[int], window: int = 1024, heads: int = 4,
                     head_dim: int = 64, steps: int = 16, repeats: int = 3, warmup: int = 1,
                     timer: Callable | None = None) -> list[dict]:
    """Milliseconds per decoded token at each context length; rows {"context", "window",
    "heads", "d", "steps", "window_ms", "full_ms", "ratio"} with ratio = full / window.
    `timer(fn, repeats)` returns seconds (default: the fastest of `repeats` runs)."""
    if timer is None:
        def timer(fn, repeats):
            return time_callable(fn, repeats=repeats, warmup=warmup, statistic="min")
    g = torch.Generator().manual_seed(0)
    new = [tuple(torch.randn(1, heads, 1, head_dim, generator=g) for _ in range(3))
           for _ in range(steps)]
    rows = []
    for context in contexts:
        full, ring = _filled_caches(context, window, heads, head_dim, steps, g)
        ms = {}
        for name, cache in (("window", ring), ("full", full)):
            def run(cache=cache, context=context):
                cache.length = context  # every run decodes from the same context
                with torch.no_grad():
                    for q, k, v in new:
                        decode_step(q, k, v, cache)
            ms[name] = 1000 * timer(run, repeats) / steps
        rows.append({"context": context, "window": window, "heads": heads, "d": head_dim,
                     "steps": steps, "window_ms": ms["window"], "full_ms": ms["full"],
                     "ratio": ms["full"] / ms["window"]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a text table."""
    lines = [f"{'context':>8} {'window ms/token':>16} {'full ms/token':>14} {'full/window':>12}"]
    for row in rows:
        lines.append(f"{row['context']:>8} {row['window_ms']:>16.3f} {row['full_ms']:>14.3f} "
                     f"{row['ratio']:>11.1f}x")
    return "\n".join(lines)
