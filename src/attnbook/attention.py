"""Attention's core: masks, the masked softmax, and scaled dot-product attention.

Conventions (see the notation page): B = batch, H = heads, Lq / Lk = query and
key lengths, d = head dimension. A boolean mask is True where attention is
allowed; an additive (float) mask is added to the scores, with -inf to forbid.
A query whose every key is masked gets all-zero weights and a zero output,
never NaN.
"""

from __future__ import annotations

import math

import torch


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) boolean mask, True at real (unpadded) positions."""
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (batch,), got shape {tuple(lengths.shape)}")
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """(Lq, Lk) boolean mask letting query i see keys up to its own position.

    With more keys than queries (a cache of earlier keys), the queries are the
    last Lq positions: query i sees keys j <= i + (Lk - Lq).
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_keys < n_queries:
        raise ValueError(f"n_keys ({n_keys}) must be >= n_queries ({n_queries})")
    q = torch.arange(n_queries, device=device)[:, None]
    k = torch.arange(n_keys, device=device)[None, :]
    return k <= q + (n_keys - n_queries)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None,
                   dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` that ignores masked-out entries (mask False, or score -inf).

    Stable for any finite logits (the row maximum is subtracted first); a row
    with nothing left to attend to gives zeros, and zero gradients, not NaN.
    """
    if mask is not None:
        check_mask("mask", mask, scores.shape)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean here, got dtype {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max.detach())  # exp(-inf) = 0 at masked entries
    total = exp.sum(dim=dim, keepdim=True)
    return exp / total.clamp_min(torch.finfo(exp.dtype).tiny)


def check_mask(name: str, mask: torch.Tensor, target_shape: torch.Size) -> None:
    """Raise unless `mask` broadcasts to exactly `target_shape` without enlarging it."""
    try:
        broadcast = torch.broadcast_shapes(mask.shape, target_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != target_shape:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape {tuple(target_shape)}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise a ValueError naming the shapes unless q (..., Lq, d), k (..., Lk, d)
    and v (..., Lk, dv) fit together with identical leading dimensions."""
    for name, t in [("q", q), ("k", k), ("v", v)]:
        if not torch.is_tensor(t) or t.dim() < 2:
            raise ValueError(f"{name} must be a tensor with at least 2 dimensions (..., length, "
                             f"dim), got {tuple(t.shape) if torch.is_tensor(t) else type(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension: {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length (dimension -2): {shapes}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k and v must have the same leading (batch, head) dimensions: {shapes}")


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v, returning (output, weights).

    q: (..., Lq, d), k: (..., Lk, d), v: (..., Lk, dv); mask: boolean (True =
    attend) or additive float, broadcastable to (..., Lq, Lk).
    Returns output (..., Lq, dv) and weights (..., Lq, Lk).
    """
    check_qkv(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if mask is None:
        weights = masked_softmax(scores)
    elif mask.dtype == torch.bool:
        weights = masked_softmax(scores, mask)
    elif mask.dtype == scores.dtype:
        check_mask("mask", mask, scores.shape)
        weights = masked_softmax(scores + mask)
    else:
        raise ValueError(f"mask must be boolean or have the scores' dtype {scores.dtype}, "
                         f"got {mask.dtype}")
    return weights @ v, weights
