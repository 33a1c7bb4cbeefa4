"""Position encodings: sinusoidal, learned, rotary (RoPE) and ALiBi.

Attention alone treats its keys as a set; these are the ways the book gives it
a sense of order.

- `sinusoidal_encoding` and `LearnedPositions` make a vector per absolute
  position, added to the token embeddings (Vaswani et al., 2017).
- `apply_rope` rotates queries and keys by angles proportional to their
  positions, so that q . k depends only on the offset (Su et al., 2021).
- `alibi_bias` adds a penalty linear in the query-key distance to the scores,
  with one slope per head (Press et al., 2022).

Conventions: L = length, D = model width, d = head dimension, H = heads. When
there are more keys than queries, the queries are the last Lq positions, as in
`attention.causal_mask`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_even(name: str, value: int) -> None:
    if value % 2 != 0:
        raise ValueError(f"{name} must be even (dimensions come in sin/cos pairs), got {value}")


# --- Sinusoidal ---------------------------------------------------------------------------

def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10_000.0,
                        dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The (n_positions, d_model) table of Vaswani et al.:

        PE[p, 2i] = sin(p / base^(2i / d_model)),  PE[p, 2i + 1] = cos(p / base^(2i / d_model)).
    """
    _check_positive_int("n_positions", n_positions)
    _check_positive_int("d_model", d_model)
    _check_even("d_model", d_model)
    positions = torch.arange(n_positions, dtype=torch.float64, device=device)  # (L,)
    i = torch.arange(d_model // 2, dtype=torch.float64, device=device)        # (D/2,)
    angles = positions[:, None] / base ** (2 * i / d_model)                   # (L, D/2)
    table = torch.empty(n_positions, d_model, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.to(dtype)


class SinusoidalPositions(nn.Module):
    """Adds the sinusoidal table to a (B, L, D) input; any length works."""

    def __init__(self, d_model: int, base: float = 10_000.0):
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_even("d_model", d_model)
        self.d_model, self.base = d_model, base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width("x", x, self.d_model)
        table = sinusoidal_encoding(x.shape[-2], self.d_model, self.base, x.dtype, x.device)
        return x + table  # (B, L, D) + (L, D)


# --- Learned ------------------------------------------------------------------------------

class LearnedPositions(nn.Module):
    """One trained vector per position, added to a (B, L, D) input.

    The table has `max_len` rows, so positions from `max_len` on do not exist:
    a longer input raises a ValueError rather than inventing a vector.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        _check_positive_int("max_len", max_len)
        _check_positive_int("d_model", d_model)
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_width("x", x, self.table.embedding_dim)
        length, max_len = x.shape[-2], self.table.num_embeddings
        if length > max_len:
            raise ValueError(f"x of shape {tuple(x.shape)} has length {length}, but learned "
                             f"positions exist only for the first max_len={max_len} positions")
        return x + self.table.weight[:length]  # (B, L, D) + (L, D)


def _check_width(name: str, x: torch.Tensor, width: int) -> None:
    if not torch.is_tensor(x) or x.dim() < 2 or x.shape[-1] != width:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must have shape (..., length, {width}), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


# --- Rotary (RoPE) ------------------------------------------------------------------------

def rope_frequencies(d: int, base: float = 10_000.0, device=None) -> torch.Tensor:
    """(d/2,) rotation speeds theta_i = base^(-2i/d), one per pair of dimensions."""
    _check_positive_int("d", d)
    _check_even("d", d)
    i = torch.arange(d // 2, dtype=torch.float64, device=device)
    return base ** (-2 * i / d)


def query_key_positions(n_queries: int, n_keys: int | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of Lq queries and Lk keys; the queries are the last Lq positions."""
    n_keys = n_queries if n_keys is None else n_keys
    if n_keys < n_queries:
        raise ValueError(f"n_keys ({n_keys}) must be >= n_queries ({n_queries})")
    keys = torch.arange(n_keys, device=device)
    return keys[n_keys - n_queries:], keys


def apply_rope(x: torch.Tensor, positions: torch.Tensor | None = None,
               base: float = 10_000.0) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) of x (..., L, d) by the angle positions * theta_i.

    positions: (L,) (default 0, 1, ..., L-1), integer or float. The pairs are the
    adjacent dimensions of the RoFormer paper (some libraries pair i with i + d/2).
    """
    if not torch.is_tensor(x) or x.dim() < 2:
        raise ValueError(f"x must be a tensor (..., length, dim), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    length, d = x.shape[-2], x.shape[-1]
    if d % 2 != 0:
        raise ValueError(f"x of shape {tuple(x.shape)} must have an even last dimension for RoPE")
    if positions is None:
        positions = torch.arange(length, device=x.device)
    if positions.shape != (length,):
        raise ValueError(f"positions of shape {tuple(positions.shape)} must have shape ({length},) "
                         f"to match x of shape {tuple(x.shape)}")
    angles = positions.double()[:, None] * rope_frequencies(d, base, x.device)  # (L, d/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    pairs = x.unflatten(-1, (d // 2, 2))                                       # (..., L, d/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]                                   # (..., L, d/2)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2)                                                 # (..., L, d)


# --- ALiBi --------------------------------------------------------------------------------

def alibi_slopes(n_heads: int) -> torch.Tensor:
    """(H,) slopes of Press et al.: for H a power of two, 2^(-8/H), 2^(-16/H), ..., 2^(-8).

    Otherwise, the slopes of the power of two just below H, then every other
    slope of the next power of two, as in the paper's code.
    """
    _check_positive_int("n_heads", n_heads)

    def power_of_two(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    lower = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(lower) + power_of_two(2 * lower)[0::2][:n_heads - lower]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(n_heads: int, n_queries: int, n_keys: int | None = None,
               dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(H, Lq, Lk) additive bias -slope_h * |i - j| between query position i and key position j.

    Add it to the scores (it broadcasts over the batch); with a causal mask only
    j <= i is left, which is the paper's -slope * (i - j).
    """
    n_keys = n_queries if n_keys is None else n_keys
    _check_positive_int("n_queries", n_queries)
    _check_positive_int("n_keys", n_keys)
    query_pos, key_pos = query_key_positions(n_queries, n_keys, device)
    distance = (query_pos[:, None] - key_pos[None, :]).abs()                  # (Lq, Lk)
    slopes = alibi_slopes(n_heads).to(device)                                 # (H,)
    return (-slopes[:, None, None] * distance).to(dtype)                      # (H, Lq, Lk)


__all__ = ["sinusoidal_encoding", "SinusoidalPositions", "LearnedPositions", "rope_frequencies",
           "query_key_positions", "apply_rope", "alibi_slopes", "alibi_bias"]
