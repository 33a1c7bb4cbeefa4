"""Sliding-window and sparse attention as masks, their cost, and a KV cache capped at
the window (chapter 12).

A sparse pattern here is a boolean mask (True = the query may attend to the key)
given to `attention.scaled_dot_product_attention`: the result is exactly dense
attention with that mask. A real sparse kernel skips the masked pairs; `mask_cost`
counts the pairs it would still score.

Masks follow `attention.causal_mask`: with more keys than queries, the queries are
the last Lq positions, so query i sits at position p = i + (Lk - Lq).

`SlidingWindowCache` keeps only the last `window` keys and values of each layer in a
ring buffer of `window` slots, (B, Hkv, window, d), so a decoding step costs the
same however long the text already is. Keys are stored already rotated (RoPE), as
`lm.KVCache` stores them, so their order in the buffer does not matter: softmax
attention over a set of keys does not depend on the order they are listed in.
"""

from __future__ import annotations

import torch

from attnbook.attention import check_qkv, scaled_dot_product_attention
from attnbook.cost import attention_flops
from attnbook.lm import KVCache


def _check_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _lengths(n_queries: int, n_keys: int | None) -> tuple[int, int]:
    n_keys = n_queries if n_keys is None else n_keys
    _check_int("n_queries", n_queries, 0)
    _check_int("n_keys", n_keys, 0)
    if n_keys < n_queries:
        raise ValueError(f"n_keys ({n_keys}) must be >= n_queries ({n_queries})")
    return n_queries, n_keys


def _offsets(n_queries: int, n_keys: int, device) -> torch.Tensor:
    """(Lq, Lk) matrix of p - j: how far key j lies behind query i's position p."""
    positions = torch.arange(n_queries, device=device)[:, None] + (n_keys - n_queries)
    return positions - torch.arange(n_keys, device=device)[None, :]


def sliding_window_mask(n_queries: int, n_keys: int | None = None, *, window: int,
                        device=None) -> torch.Tensor:
    """(Lq, Lk) boolean mask of causal sliding-window attention: the query at position p
    sees the `window` keys p - window < j <= p (itself and window - 1 before it).

    Bottom-right aligned like `causal_mask`; window >= Lk gives `causal_mask`.
    """
    n_queries, n_keys = _lengths(n_queries, n_keys)
    _check_int("window", window)
    behind = _offsets(n_queries, n_keys, device)
    return (behind >= 0) & (behind < window)


def local_global_mask(n_queries: int, n_keys: int | None = None, *, window: int,
                      n_global: int, causal: bool = True, device=None) -> torch.Tensor:
    """(Lq, Lk) boolean mask of local + global attention (Longformer, Beltagy et al. 2020).

    Local: the query at position p sees the keys p - window < j <= p (causal) or
    |p - j| < window (not causal). Global: the first `n_global` positions see every key
    and are seen by every query; with `causal=True` only keys j <= p are ever seen.
    """
    n_queries, n_keys = _lengths(n_queries, n_keys)
    _check_int("window", window)
    _check_int("n_global", n_global, 0)
    behind = _offsets(n_queries, n_keys, device)
    local = (behind >= 0) & (behind < window) if causal else behind.abs() < window
    positions = torch.arange(n_queries, device=device) + (n_keys - n_queries)
    global_rows = (positions < n_global)[:, None]  # global queries see everything
    global_cols = (torch.arange(n_keys, device=device) < n_global)[None, :]
    mask = local | global_rows | global_cols
    return mask & (behind >= 0) if causal else mask


def strided_mask(n_queries: int, n_keys: int | None = None, *, stride: int,
                 device=None) -> torch.Tensor:
    """(Lq, Lk) boolean mask of the causal strided pattern (Child et al. 2019): the query
    at position p sees the `stride` keys p - stride < j <= p (local) and every key
    j <= p with p - j a multiple of `stride` (strided), the union of their two heads."""
    n_queries, n_keys = _lengths(n_queries, n_keys)
    _check_int("stride", stride)
    behind = _offsets(n_queries, n_keys, device)
    return (behind >= 0) & ((behind < stride) | (behind % stride == 0))


def mask_cost(mask: torch.Tensor, head_dim: int | None = None) -> dict:
    """What a kernel that skips masked pairs would compute: {"pairs": scored pairs,
    "dense_pairs": Lq * Lk, "fraction": pairs / dense_pairs} per (Lq, Lk) mask, and
    with `head_dim` d also {"flops": 4 pairs d} (`cost.attention_flops` of the dense
    problem times the fraction: 2d FLOPs for a score and 2d for its share of P V)."""
    if not torch.is_tensor(mask) or mask.dtype != torch.bool or mask.dim() != 2:
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        dtype = f", dtype {mask.dtype}" if torch.is_tensor(mask) else ""
        raise ValueError(f"mask must be a 2-D boolean (Lq, Lk) tensor, got {shape}{dtype}")
    n_queries, n_keys = mask.shape
    pairs = int(mask.sum())
    dense = n_queries * n_keys
    cost = {"pairs": pairs, "dense_pairs": dense, "fraction": pairs / dense if dense else 0.0}
    if head_dim is not None:
        _check_int("head_dim", head_dim)
        cost["flops"] = attention_flops(n_queries, head_dim, n_keys) * pairs // dense
    return cost


class SlidingWindowCache:
    """Keys and values of the last `window` positions of every layer, in a ring buffer
    (B, Hkv, window, d) per layer.

    Same protocol as `lm.KVCache`: `length` counts the positions stored so far (the
    caller advances it, as `CausalLM.forward` does); `update(layer, k, v)` writes one
    new position at slot length % window, overwriting the oldest, and returns the keys
    and values to attend over, (B, Hkv, min(length + 1, window), d), in slot order.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, window: int,
                 head_dim: int, dtype: torch.dtype = torch.float32, device=None):
        for name, value in [("n_layers", n_layers), ("batch", batch),
                            ("n_kv_heads", n_kv_heads), ("window", window),
                            ("head_dim", head_dim)]:
            _check_int(name, value)
        shape = (batch, n_kv_heads, window, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch, self.window, self.length = batch, window, 0

    def nbytes(self) -> int:
        """Bytes the cache's tensors hold: independent of how many tokens were seen."""
        return sum(t.untyped_storage().nbytes() for t in self.keys + self.values)

    def update(self, layer: int, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one position's k, v (B, Hkv, 1, d) into `layer`'s ring; return the
        stored keys and values (B, Hkv, min(length + 1, window), d)."""
        expected = self.keys[0].shape[:2] + (1,) + self.keys[0].shape[3:]
        if not (torch.is_tensor(k) and torch.is_tensor(v)) or k.shape != expected \
                or v.shape != expected:
            shapes = (f"k {tuple(k.shape) if torch.is_tensor(k) else type(k).__name__}, "
                      f"v {tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}")
            raise ValueError(f"k and v must each hold one position, shape {tuple(expected)} "
                             f"(B, Hkv, 1, d); got {shapes}")
        if not 0 <= layer < len(self.keys):
            raise ValueError(f"layer must lie in [0, {len(self.keys)}), got {layer}")
        slot = self.length % self.window
        self.keys[layer][:, :, slot] = k[:, :, 0]
        self.values[layer][:, :, slot] = v[:, :, 0]
        filled = min(self.length + 1, self.window)
        return self.keys[layer][:, :, :filled], self.values[layer][:, :, :filled]


def decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                cache: SlidingWindowCache | KVCache, layer: int = 0) -> torch.Tensor:
    """One decoding step of one attention layer: store the new position's k, v (B, H, 1, d)
    in `cache` (a `SlidingWindowCache` or a full `lm.KVCache`), attend with q (B, H, 1, d)
    over what the cache returns, advance the cache by one position, return (B, H, 1, dv).

    One query against stored keys needs no mask: every stored key is in its past (and,
    for the sliding-window cache, in its window).
    """
    check_qkv(q, k, v)
    if q.shape[-2] != 1:
        raise ValueError(f"decode_step takes one position: q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)} must have length 1")
    keys, values = cache.update(layer, k, v)
    out, _ = scaled_dot_product_attention(q, keys, values)
    if layer == len(cache.keys) - 1:
        cache.length += 1
    return out

