"""Multi-head attention: H scaled dot-product attentions side by side, in subspaces of width D/H.

`MultiHeadAttention` projects queries, keys and values, splits the model width
D into H heads of width d = D/H, runs `attention.scaled_dot_product_attention`
on all heads at once, merges the heads and projects back. Optional position
hooks: `rope=True` rotates queries and keys (`positional.apply_rope`),
`alibi=True` adds ALiBi's distance bias to the scores (`positional.alibi_bias`).
`dropout=p` drops attention weights in training (chapter 7), rescaling the
kept ones by 1 / (1 - p); the weights it returns are those before dropout.

`copy_to_torch` / `copy_from_torch` move the weights to and from
`torch.nn.MultiheadAttention`, and `torch_attn_mask` writes our mask in its
convention, so the two can be compared.

Shapes: B = batch, Lq / Lk = query and key lengths, D = model width, H = heads, d = D/H.
A boolean mask is True where attention is allowed; a float mask is added to the scores.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbook.attention import check_mask, scaled_dot_product_attention
from attnbook.positional import alibi_bias, apply_rope, query_key_positions


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, d_model) -> (B, H, L, d): head h gets the h-th slice, of width d = d_model / H."""
    if not torch.is_tensor(x) or x.dim() != 3:
        raise ValueError(f"x must be a 3-D tensor (batch, length, width), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    batch, length, width = x.shape
    if n_heads < 1 or width % n_heads != 0:
        raise ValueError(f"the width of x {tuple(x.shape)} must be divisible by n_heads={n_heads}")
    x = x.view(batch, length, n_heads, width // n_heads)  # (B, L, H, d)
    return x.transpose(1, 2)                               # (B, H, L, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d), the inverse of `split_heads`."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (batch, heads, length, head_dim), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    batch, n_heads, length, head_dim = x.shape
    x = x.transpose(1, 2)                                  # (B, L, H, d)
    return x.reshape(batch, length, n_heads * head_dim)    # (B, L, D)


def check_mask_shape(mask: torch.Tensor, batch: int, n_heads: int, n_queries: int, n_keys: int) -> None:
    """Accept a mask of shape (Lq, Lk) or (B, H, Lq, Lk), any dimension 1 to broadcast.

    A 3-D mask is refused: PyTorch would read (B, Lq, Lk) as (H, Lq, Lk) and, when
    B == H, silently give batch element b's mask to head b of every batch element.
    """
    shape = tuple(mask.shape)
    full = (batch, n_heads, n_queries, n_keys)
    accepted = (f"MultiHeadAttention accepts a mask of shape (Lq, Lk) = {full[2:]} or "
                f"(B, H, Lq, Lk) = {full}, where any dimension may be 1 to broadcast")
    if mask.dim() not in (2, 4):
        hint = " (for a (B, Lq, Lk) mask, pass mask[:, None])" if mask.dim() == 3 else ""
        raise ValueError(f"mask of shape {shape} has {mask.dim()} dimensions; {accepted}{hint}")
    if any(m not in (1, n) for m, n in zip(shape, full[-mask.dim():])):
        raise ValueError(f"mask of shape {shape} does not fit the scores' shape {full}; {accepted}")


class MultiHeadAttention(nn.Module):
    """Multi-head attention with query, key, value and output projections of width d_model."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True,
                 rope: bool = False, alibi: bool = False, rope_base: float = 10_000.0,
                 dropout: float = 0.0):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
        if not isinstance(d_model, int) or d_model < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model!r} must be a positive multiple of n_heads={n_heads}")
        if rope and (d_model // n_heads) % 2 != 0:
            raise ValueError(f"rope needs an even head dimension, got d_model / n_heads = "
                             f"{d_model} / {n_heads} = {d_model // n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.rope, self.alibi, self.rope_base = rope, alibi, rope_base
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.weight_dropout = nn.Dropout(dropout)  # on the attention weights, in training

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Lq, D), key and value (B, Lk, D) (default: the query, i.e. self-attention);
        mask (Lq, Lk) or (B, H, Lq, Lk), any dimension 1 to broadcast (a 3-D mask is refused).
        Returns output (B, Lq, D), weights (B, H, Lq, Lk), before any dropout."""
        key = query if key is None else key
        value = key if value is None else value
        self.check_inputs(query, key, value, mask)
        q = split_heads(self.q_proj(query), self.n_heads)  # (B, H, Lq, d)
        k = split_heads(self.k_proj(key), self.n_heads)    # (B, H, Lk, d)
        v = split_heads(self.v_proj(value), self.n_heads)  # (B, H, Lk, d)
        if self.rope:
            q_pos, k_pos = query_key_positions(q.shape[-2], k.shape[-2], q.device)
            q, k = apply_rope(q, q_pos, self.rope_base), apply_rope(k, k_pos, self.rope_base)
        if self.alibi:
            mask = self.add_alibi(mask, q.shape[-2], k.shape[-2], q.dtype, q.device)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, Lq, d), (B, H, Lq, Lk)
        if self.training and self.weight_dropout.p > 0:
            # Drop weights, rescale the rest by 1 / (1 - p): rows sum to 1 in expectation.
            out = self.weight_dropout(weights) @ v  # (B, H, Lq, d)
        return self.out_proj(merge_heads(out)), weights

    def add_alibi(self, mask, n_queries: int, n_keys: int, dtype, device) -> torch.Tensor:
        """Fold ALiBi's (H, Lq, Lk) bias into `mask`, giving one additive mask."""
        bias = alibi_bias(self.n_heads, n_queries, n_keys, dtype, device)  # (H, Lq, Lk)
        if mask is None:
            return bias
        if mask.dtype == torch.bool:
            return torch.where(mask, bias, torch.tensor(float("-inf"), dtype=dtype, device=device))
        return mask + bias

    def check_inputs(self, query, key, value, mask) -> None:
        """Raise a ValueError naming the argument and the shapes unless the inputs fit."""
        for name, t in [("query", query), ("key", key), ("value", value)]:
            if not torch.is_tensor(t) or t.dim() != 3 or t.shape[-1] != self.d_model:
                shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise ValueError(f"{name} must have shape (batch, length, d_model={self.d_model}), "
                                 f"got {shape}")
            weight_dtype = self.q_proj.weight.dtype
            if t.dtype != weight_dtype:
                raise ValueError(f"{name} has dtype {t.dtype} but the weights have dtype "
                                 f"{weight_dtype}; convert one of them (e.g. .to({weight_dtype}))")
        shapes = f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        if not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(f"query, key and value must have the same batch size: {shapes}")
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key and value must have the same length: {shapes}")
        if key.shape[1] == 0:
            raise ValueError(f"key must hold at least one position (length >= 1): {shapes}")
        if mask is None:
            return
        if not torch.is_tensor(mask):
            raise ValueError(f"mask must be a tensor or None, got {type(mask).__name__}")
        if mask.dtype not in (torch.bool, query.dtype):
            raise ValueError(f"mask must be boolean or have the query's dtype {query.dtype}, "
                             f"got {mask.dtype}")
        check_mask_shape(mask, query.shape[0], self.n_heads, query.shape[1], key.shape[1])


# --- Comparing with torch.nn.MultiheadAttention ---------------------------------------------

def _check_pair(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    if not isinstance(ours, MultiHeadAttention) or not isinstance(theirs, nn.MultiheadAttention):
        raise ValueError(f"expected (MultiHeadAttention, nn.MultiheadAttention), got "
                         f"({type(ours).__name__}, {type(theirs).__name__})")
    if (ours.d_model, ours.n_heads) != (theirs.embed_dim, theirs.num_heads):
        raise ValueError(f"ours has d_model={ours.d_model}, n_heads={ours.n_heads}; theirs has "
                         f"embed_dim={theirs.embed_dim}, num_heads={theirs.num_heads}")
    if not theirs._qkv_same_embed_dim:
        raise ValueError("nn.MultiheadAttention must have kdim = vdim = embed_dim")
    if (ours.q_proj.bias is None) != (theirs.in_proj_bias is None):
        raise ValueError("one module has biases and the other has none")
    if theirs.bias_k is not None or ours.rope or ours.alibi:
        raise ValueError("add_bias_kv, rope and alibi have no counterpart on the other side")


@torch.no_grad()
def copy_to_torch(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> nn.MultiheadAttention:
    """Copy our projections into `theirs`, whose in_proj stacks W_q, W_k, W_v; return `theirs`."""
    _check_pair(ours, theirs)
    projections = [ours.q_proj, ours.k_proj, ours.v_proj]
    theirs.in_proj_weight.copy_(torch.cat([p.weight for p in projections]))  # (3D, D)
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    if theirs.in_proj_bias is not None:
        theirs.in_proj_bias.copy_(torch.cat([p.bias for p in projections]))  # (3D,)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    return theirs


@torch.no_grad()
def copy_from_torch(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> MultiHeadAttention:
    """Copy the weights of `theirs` into our projections; return `ours`."""
    _check_pair(ours, theirs)
    projections = [ours.q_proj, ours.k_proj, ours.v_proj]
    for proj, weight in zip(projections, theirs.in_proj_weight.chunk(3)):
        proj.weight.copy_(weight)
    ours.out_proj.weight.copy_(theirs.out_proj.weight)
    if theirs.in_proj_bias is not None:
        for proj, bias in zip(projections, theirs.in_proj_bias.chunk(3)):
            proj.bias.copy_(bias)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)
    return ours


def to_torch(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    """A batch-first nn.MultiheadAttention with our weights, dtype and device."""
    weight = ours.q_proj.weight
    theirs = nn.MultiheadAttention(ours.d_model, ours.n_heads, bias=ours.q_proj.bias is not None,
                                   batch_first=True, device=weight.device, dtype=weight.dtype)
    return copy_to_torch(ours, theirs)


def torch_attn_mask(mask: torch.Tensor, batch: int, n_heads: int, n_queries: int,
                    n_keys: int) -> torch.Tensor:
    """Our mask (broadcastable to (B, H, Lq, Lk)) as nn.MultiheadAttention's attn_mask:
    (B*H, Lq, Lk), boolean True where attention is *forbidden*, or the same additive floats."""
    shape = torch.Size((batch, n_heads, n_queries, n_keys))
    check_mask("mask", mask, shape)
    check_mask_shape(mask, batch, n_heads, n_queries, n_keys)
    mask = mask.expand(shape).reshape(batch * n_heads, n_queries, n_keys)
    return ~mask if mask.dtype == torch.bool else mask


__all__ = ["split_heads", "merge_heads", "check_mask_shape", "MultiHeadAttention", "copy_to_torch",
           "copy_from_torch", "to_torch", "torch_attn_mask"]
