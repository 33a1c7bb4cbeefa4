"""Attention's core: masks, the masked softmax, and scaled dot-product attention.

Conventions (see the notation page): B = batch, H = heads, Lq / Lk = query and
key lengths, d = head dimension. A boolean mask is True where attention is
allowed; an additive (float) mask is added to the scores, with -inf to forbid.
A query whose every key is masked gets all-zero weights and a zero output,
never NaN.
"""

from __future__ import annotations

import math
import numbers

import torch


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) boolean mask, True at real (unpadded) positions."""
    if not torch.is_tensor(lengths) or lengths.dim() != 1:
        shape = tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__
        raise ValueError(f"lengths must be a 1-D (batch,) tensor, got {shape}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if len(lengths) and (lengths.min() < 0 or lengths.max() > max_len):
        raise ValueError(f"lengths of shape {tuple(lengths.shape)} must lie in [0, max_len={max_len}], "
                         f"got min {lengths.min().item()} and max {lengths.max().item()}")
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """(Lq, Lk) boolean mask letting query i see keys up to its own position.

    With more keys than queries (a cache of earlier keys), the queries are the
    last Lq positions: query i sees keys j <= i + (Lk - Lq).
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, got {n_queries}")
    if n_keys < n_queries:
        raise ValueError(f"n_keys ({n_keys}) must be >= n_queries ({n_queries})")
    q = torch.arange(n_queries, device=device)[:, None]
    k = torch.arange(n_keys, device=device)[None, :]
    return k <= q + (n_keys - n_queries)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None,
                   dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` that ignores masked-out entries (mask False, or score -inf).

    Stable for any finite logits: the row maximum is subtracted first, so no
    exponent is positive and nothing overflows. Half-precision scores are
    exponentiated and summed in float32, and the weights come back in the
    scores' dtype. A row with nothing left to attend to gives zeros, and zero
    gradients, not NaN.
    """
    if mask is not None:
        check_mask("mask", mask, scores.shape, scores.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean here, got dtype {mask.dtype}")
        scores = scores.masked_fill(~mask, float("-inf"))
    x = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    row_max = x.amax(dim=dim, keepdim=True)
    # A row masked everywhere has maximum -inf; subtract 0 there instead (-inf - -inf is NaN).
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(x - row_max.detach())  # in [0, 1]; exp(-inf) = 0 at masked entries
    total = exp.sum(dim=dim, keepdim=True)  # >= 1 (the maximum gives exp(0)), or 0 if all masked
    # Dividing a masked row's zeros by 1 (not by a tiny number, whose huge gradient
    # times exp's zero would be NaN) keeps its weights and gradients at zero.
    total = torch.where(total > 0, total, torch.ones_like(total))
    return (exp / total).to(scores.dtype)


def check_mask(name: str, mask: torch.Tensor, target_shape: torch.Size, device=None) -> None:
    """Raise unless `mask` is a tensor (on `device`, if given) that broadcasts to
    exactly `target_shape` without enlarging it."""
    if not torch.is_tensor(mask):
        raise ValueError(f"{name} must be a tensor, got a {type(mask).__name__}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, target_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != target_shape:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape {tuple(target_shape)}")
    if device is not None and mask.device != torch.device(device):
        raise ValueError(f"{name} of shape {tuple(mask.shape)} is on {mask.device}, but the scores "
                         f"are on {device}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise a ValueError naming the shapes unless q (..., Lq, d), k (..., Lk, d)
    and v (..., Lk, dv) fit together with identical leading dimensions."""
    for name, t in [("q", q), ("k", k), ("v", v)]:
        if not torch.is_tensor(t) or t.dim() < 2:
            raise ValueError(f"{name} must be a tensor with at least 2 dimensions (..., length, "
                             f"dim), got {tuple(t.shape) if torch.is_tensor(t) else type(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype} "
                             f"(shape {tuple(t.shape)})")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, "
                         f"v {v.dtype} (shapes {shapes})")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got q on {q.device}, k on {k.device}, "
                         f"v on {v.device} (shapes {shapes})")
    if k.shape[-2] == 0:
        raise ValueError(f"k must hold at least one key (dimension -2 > 0): {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension: {shapes}")
    if q.shape[-1] == 0:
        raise ValueError(f"q and k must have a head dimension d >= 1 (dimension -1): {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length (dimension -2): {shapes}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k and v must have the same leading (batch, head) dimensions: {shapes}")


def check_scale(scale) -> None:
    """Raise a ValueError unless `scale` is None or a positive, finite Python number."""
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"scale must be a positive number or None, got a {type(scale).__name__} "
                         f"({scale!r})")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive, finite number or None, got {scale!r}")


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v, returning (output, weights).

    q: (..., Lq, d), k: (..., Lk, d), v: (..., Lk, dv); mask: boolean (True =
    attend) or additive float, broadcastable to (..., Lq, Lk).
    Returns output (..., Lq, dv) and weights (..., Lq, Lk).
    """
    check_qkv(q, k, v)
    check_scale(scale)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # Scaling q before the product, not the product after it, keeps float16 scores
    # from overflowing when q . k is large but q . k * scale is not.
    scores = (q * scale) @ k.transpose(-2, -1)  # (..., Lq, d) @ (..., d, Lk) -> (..., Lq, Lk)
    if mask is None:
        weights = masked_softmax(scores)
    else:
        check_mask("mask", mask, scores.shape, scores.device)
        if mask.dtype == torch.bool:
            weights = masked_softmax(scores, mask)
        elif mask.dtype == scores.dtype:
            weights = masked_softmax(scores + mask)  # additive: -inf forbids
        else:
            raise ValueError(f"mask of shape {tuple(mask.shape)} must be boolean or have the "
                             f"scores' dtype {scores.dtype}, got {mask.dtype}")
    return weights @ v, weights  # (..., Lq, Lk) @ (..., Lk, dv) -> (..., Lq, dv)


# Score functions of Part I (Bahdanau, Luong)
#
# A score function rates how well each source position (a key) fits what the
# decoder is looking for now (the query): query (B, Dq), keys (B, S, Dk) ->
# scores (B, S). Padded keys get the score -inf, so `masked_softmax` gives them
# zero weight. The part of a score that depends only on the keys is computed
# once per input by `prepare_keys` and passed back as `prepared` at every step.


def check_query_keys(query: torch.Tensor, keys: torch.Tensor, query_dim: int, key_dim: int) -> None:
    """Raise a ValueError naming both shapes unless query is (B, query_dim) and keys (B, S, key_dim)."""
    shapes = f"query {tuple(query.shape)} and keys {tuple(keys.shape)}"
    if query.dim() != 2 or keys.dim() != 3:
        raise ValueError(f"query must be (batch, query_dim) and keys (batch, length, key_dim), "
                         f"got {shapes}")
    if query.shape[0] != keys.shape[0]:
        raise ValueError(f"query and keys must have the same batch size, got {shapes}")
    if query.shape[1] != query_dim or keys.shape[2] != key_dim:
        raise ValueError(f"this score takes query_dim={query_dim} and key_dim={key_dim}, got {shapes}")


class Score(torch.nn.Module):
    """Base class of the score functions: checks shapes and masks out padding."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim

    def prepare_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The part of the score that depends only on the keys (here: the keys themselves)."""
        return keys

    def score(self, query: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None,
                prepared: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Dq), keys (B, S, Dk), mask (B, S) True at real keys -> scores (B, S)."""
        check_query_keys(query, keys, self.query_dim, self.key_dim)
        if prepared is None:
            prepared = self.prepare_keys(keys)
        scores = self.score(query, prepared)  # (B, S)
        if mask is None:
            return scores
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True at real keys), got dtype {mask.dtype}")
        check_mask("mask", mask, scores.shape)
        return scores.masked_fill(~mask, float("-inf"))


class AdditiveScore(Score):
    """Bahdanau et al.: score(q, k) = v . tanh(W_q q + W_k k), a one-hidden-layer network."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__(query_dim, key_dim)
        self.W_q = torch.nn.Linear(query_dim, attn_dim, bias=False)
        self.W_k = torch.nn.Linear(key_dim, attn_dim)
        self.v = torch.nn.Linear(attn_dim, 1, bias=False)

    def prepare_keys(self, keys):
        return self.W_k(keys)  # (B, S, A): once per input, not once per output step

    def score(self, query, prepared):
        hidden = torch.tanh(self.W_q(query)[:, None, :] + prepared)  # (B, S, A)
        return self.v(hidden).squeeze(-1)  # (B, S)


class DotScore(Score):
    """Luong et al.: score(q, k) = q . k. Needs queries and keys of one size."""

    def __init__(self, query_dim: int, key_dim: int):
        if query_dim != key_dim:
            raise ValueError(f"the dot score needs query_dim == key_dim, got {query_dim} and "
                             f"{key_dim}; GeneralScore maps one onto the other")
        super().__init__(query_dim, key_dim)

    def score(self, query, prepared):
        # (B, S, D) * (B, 1, D), summed over D -> (B, S): one batched matrix-vector
        # product, written as a product and a sum.
        return (prepared * query[:, None, :]).sum(dim=-1)


class GeneralScore(Score):
    """Luong et al.: score(q, k) = q . (W k), a bilinear form q^T W k."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__(query_dim, key_dim)
        self.W = torch.nn.Linear(key_dim, query_dim, bias=False)

    def prepare_keys(self, keys):
        return self.W(keys)  # (B, S, Dq)

    def score(self, query, prepared):
        return (prepared * query[:, None, :]).sum(dim=-1)  # a dot product with W k: (B, S)


class ConcatScore(Score):
    """Luong et al.: score(q, k) = v . tanh(W [q; k]), written literally: the query is
    copied to every source position and concatenated with its key at every step, so
    the key's part of W [q; k], which does not depend on the step, is recomputed at
    every step. AdditiveScore is the same function with that part prepared once."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__(query_dim, key_dim)
        self.W = torch.nn.Linear(query_dim + key_dim, attn_dim)
        self.v = torch.nn.Linear(attn_dim, 1, bias=False)

    def score(self, query, prepared):
        copies = query[:, None, :].expand(-1, prepared.shape[1], -1)  # (B, S, Dq)
        hidden = torch.tanh(self.W(torch.cat([copies, prepared], dim=-1)))  # (B, S, A)
        return self.v(hidden).squeeze(-1)  # (B, S)


def local_window(centers: torch.Tensor, length: int, half_width: int) -> torch.Tensor:
    """Luong et al.'s local window: (B,) centres -> (B, length) boolean mask, True at
    the positions s with |s - round(centre)| <= half_width."""
    if centers.dim() != 1:
        raise ValueError(f"centers must be 1-D (batch,), got shape {tuple(centers.shape)}")
    positions = torch.arange(length, device=centers.device)
    return (positions[None, :] - centers.round()[:, None]).abs() <= half_width


def gaussian_window(centers: torch.Tensor, length: int, sigma: float) -> torch.Tensor:
    """exp(-(s - p)^2 / (2 sigma^2)) for every position s: (B,) centres -> (B, length).

    Local-p multiplies its attention weights by this bump, so that positions near
    the predicted centre p count most and p itself is learned by gradient descent.
    """
    if centers.dim() != 1:
        raise ValueError(f"centers must be 1-D (batch,), got shape {tuple(centers.shape)}")
    positions = torch.arange(length, device=centers.device, dtype=centers.dtype)
    return torch.exp(-((positions[None, :] - centers[:, None]) ** 2) / (2 * sigma**2))


def local_attention_weights(scores: torch.Tensor, centers: torch.Tensor, mask: torch.Tensor,
                            half_width: int, gaussian: bool) -> torch.Tensor:
    """Luong et al.'s local attention weights, (B, S): a softmax over the real positions
    inside the window [p - w, p + w] around each centre p (w = half_width), times a
    Gaussian of width sigma = w / 2 when `gaussian` (local-p). Zero outside the window,
    never NaN."""
    check_mask("mask", mask, scores.shape)
    window = local_window(centers, scores.shape[1], half_width) & mask  # (B, S)
    weights = masked_softmax(scores, window)
    if gaussian:
        weights = weights * gaussian_window(centers, scores.shape[1], half_width / 2)
    return weights
