"""The KV-cache benchmark of chapter 9: generation with the cache against recomputing
every step, in tokens per second (`python -m attnbook.bench kvcache`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnbook.bench import time_callable
from attnbook.lm import CausalLM, generate


def kv_cache_benchmark(model: CausalLM, lengths: list[int], prompt_len: int = 1,
                       repeats: int = 3, warmup: int = 1,
                       timer: Callable | None = None) -> list[dict]:
    """Tokens per second of greedy generation with and without the cache, for each number
    of new tokens in `lengths`; rows {"new_tokens", "cached_tok_s", "recompute_tok_s",
    "speedup"}. `timer(fn, repeats)` returns seconds (default: the fastest of
    `repeats` runs after `warmup` untimed ones, by attnbook.bench.time_callable)."""
    if timer is None:
        def timer(fn, repeats):
            return time_callable(fn, repeats=repeats, warmup=warmup, statistic="min")

    device = model.embed.weight.device
    prompt = torch.zeros(1, prompt_len, dtype=torch.long, device=device)
    model.eval()
    rows = []
    for n_new in lengths:
        seconds = {}
        for use_cache in (True, False):
            def run(n_new=n_new, use_cache=use_cache):
                generate(model, prompt, n_new, use_cache=use_cache, greedy=True)
            seconds[use_cache] = timer(run, repeats)
        rows.append({"new_tokens": n_new, "cached_tok_s": n_new / seconds[True],
                     "recompute_tok_s": n_new / seconds[False],
                     "speedup": seconds[False] / seconds[True]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The benchmark's rows as a text table."""
    lines = [f"{'new tokens':>10} {'cached tok/s':>13} {'recompute tok/s':>16} {'speed-up':>9}"]
    for row in rows:
        lines.append(f"{row['new_tokens']:>10} {row['cached_tok_s']:>13.0f} "
                     f"{row['recompute_tok_s']:>16.0f} {row['speedup']:>8.1f}x")
    return "\n".join(lines)
