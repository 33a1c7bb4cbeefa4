"""The linear-attention benchmark of chapter 12 (`python -m attnbook.bench linear`): causal
linear attention computed token by token (a recurrence) against chunk by chunk, and
against the quadratic masked form, on one CPU thread.

The named baseline is "lean recurrent", `lean_recurrence`: the leanest reasonable
token-by-token recurrence, two in-place operations per token into preallocated tensors.
The package's teaching function `causal_linear_attention_recurrent` (readable: a new
state per step, a multiply-then-sum read-out) is timed too, as "recurrent", but no
speed-up is measured against it. Every row's "speedup" is the lean recurrence's time
divided by that row's time, both measured in the same run on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attnbook.bench import time_callable
from attnbook.linear_attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
    elu_feature_map,
)

BASELINE = "lean recurrent"


def lean_recurrence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal linear attention (elu + 1 features) strictly one token at a time, with as
    little work per token as PyTorch allows: V gets a column of ones, so the state
    S = sum phi(k) [v, 1]^T also carries the normaliser z; per token one in-place
    S.baddbmm_(phi(k_t), [v_t, 1]) and one bmm of phi(q_t) with S written straight into
    a preallocated output; one division at the end. q, k (..., N, d), v (..., N, dv)."""
    *batch, n, d = q.shape
    dv = v.shape[-1]
    phi_q = elu_feature_map(q).reshape(-1, n, d).transpose(0, 1)  # (N, B, d)
    phi_k = elu_feature_map(k).reshape(-1, n, d).transpose(0, 1)
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
    v1 = v1.reshape(-1, n, dv + 1).transpose(0, 1)  # (N, B, dv + 1)
    state = q.new_zeros(phi_q.shape[1], d, dv + 1)  # [S, z]: (B, d, dv + 1)
    out = q.new_empty(n, phi_q.shape[1], 1, dv + 1)
    keys, values, queries = phi_k[..., None], v1[:, :, None, :], phi_q[:, :, None, :]
    for t in range(n):
        state.baddbmm_(keys[t], values[t])  # S += phi(k_t) [v_t, 1]^T, in place
        torch.bmm(queries[t], state, out=out[t])  # [phi(q_t) S, phi(q_t) . z]
    out = out[:, :, 0].transpose(0, 1).reshape(*batch, n, dv + 1)
    return out[..., :dv] / out[..., dv:]


def implementations(chunk_size: int = 64) -> dict[str, Callable]:
    """name -> f(q, k, v): the computations of causal linear attention that are timed.
    "chunked" uses `chunk_size`; "chunked C/2" and "chunked 2C" the half and the double,
    so the file shows how the time depends on the chunk size."""
    def chunked(size):
        return lambda q, k, v: causal_linear_attention_chunked(q, k, v, size)
    return {
        BASELINE: lean_recurrence,
        "recurrent": causal_linear_attention_recurrent,
        "chunked": chunked(chunk_size),
        "chunked C/2": chunked(max(1, chunk_size // 2)),
        "chunked 2C": chunked(2 * chunk_size),
        "parallel": causal_linear_attention_parallel,
    }


def linear_benchmark(lengths: list[int], heads: list[int] = (1,), head_dim: int = 64,
                     chunk_size: int = 64, repeats: int = 3, warmup: int = 1,
                     timer: Callable | None = None, only: list[str] | None = None
                     ) -> list[dict]:
    """Seconds of each implementation on q, k, v of shape (1, heads, N, head_dim), float32,
    for every N in `lengths` and every number of heads; rows {"N", "heads", "d", "chunk",
    "impl", "seconds", "speedup", "baseline"} with speedup = lean recurrence seconds /
    seconds. `only` picks implementations besides the baseline. `timer(fn, repeats)`
    returns seconds (default: the fastest of `repeats` runs after `warmup` untimed ones)."""
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
                             "speedup": seconds[BASELINE] / seconds[name],
                             "baseline": BASELINE})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a text table, speed-ups against the lean recurrence."""
    lines = [f"{'heads':>5} {'N':>6} {'impl':>14} {'ms':>9} {'speed-up vs ' + BASELINE:>26}"]
    for row in rows:
        lines.append(f"{row['heads']:>5} {row['N']:>6} {row['impl']:>14} "
                     f"{1000 * row['seconds']:>9.2f} {row['speedup']:>25.1f}x")
    return "\n".join(lines)
