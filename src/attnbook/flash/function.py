"""`flash_attention`: the Triton kernels of `triton_kernels` behind a torch.autograd.Function.

The forward saves q, k, v, the output and the log-sum-exp (O(N) memory, nothing N x N);
the backward launches three kernels: delta = rowsum(dO * O), then dK and dV per key
tile, then dQ per query tile.
"""

from __future__ import annotations

import math

import torch

from attnbook.flash import triton_kernels as kernels

HEAD_DIMS = (16, 32, 64, 128)
GPU_DTYPES = (torch.float16, torch.bfloat16)
INTERPRETER_DTYPES = (torch.float32,)

# Tile sizes and launch settings: (BLOCK_M, BLOCK_N, num_warps, num_stages).
# One fixed setting for every shape ("untuned"), and the lists the autotuner tries.
FIXED_CONFIG = {"forward": (64, 64, 4, 2), "dkdv": (32, 64, 4, 2), "dq": (64, 32, 4, 2)}
TUNING_CONFIGS = {
    "forward": [(64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4)],
    "dkdv": [(32, 64, 4, 3), (64, 64, 4, 3), (32, 128, 8, 3), (64, 128, 8, 2), (16, 128, 4, 3)],
    "dq": [(64, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 8, 3), (128, 128, 8, 2)],
}
INTERPRETER_CONFIG = {"forward": (16, 16, 1, 1), "dkdv": (16, 16, 1, 1), "dq": (16, 16, 1, 1)}


def _autotuned(kernel, configs):
    import triton
    choices = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
               for m, n, w, s in configs]
    return triton.autotune(choices, key=["n_queries", "n_keys", "HEAD_DIM", "CAUSAL"])(kernel)


_TUNED = {}


def _launch(name: str, kernel, grid_rows: int, grid_heads: int, args: tuple, head_dim: int, causal: bool,
            autotune: bool) -> None:
    """Launch `kernel` on a grid of (tiles of grid_rows, grid_heads)."""
    import triton
    if autotune:
        if name not in _TUNED:
            _TUNED[name] = _autotuned(kernel, TUNING_CONFIGS[name])

        def grid(meta):
            block = meta["BLOCK_N"] if name == "dkdv" else meta["BLOCK_M"]
            return (triton.cdiv(grid_rows, block), grid_heads)
        _TUNED[name][grid](*args, HEAD_DIM=head_dim, CAUSAL=causal)
        return
    config = INTERPRETER_CONFIG if kernels.INTERPRETED else FIXED_CONFIG
    block_m, block_n, warps, stages = config[name]
    block = block_n if name == "dkdv" else block_m
    kernel[(triton.cdiv(grid_rows, block), grid_heads)](
        *args, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        num_warps=warps, num_stages=stages)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    """Raise ValueError naming the argument for anything the kernels do not support."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, length, head_dim), got {shape}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    (batch, heads, n_queries, head_dim), (kv_batch, kv_heads, n_keys, kv_dim) = q.shape, k.shape
    if kv_batch != batch or kv_dim != head_dim:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch and head_dim")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"q's heads ({heads}) must be a multiple of k's heads ({kv_heads}), "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if n_keys == 0:
        raise ValueError(f"k must hold at least one key, got k {tuple(k.shape)}")
    if causal and n_keys < n_queries:
        raise ValueError(f"causal attention needs at least as many keys as queries (the diagonal is "
                         f"aligned at the bottom right), got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if batch * heads > 65535:
        raise ValueError(f"batch * heads must be at most 65535 (the kernels' second grid axis), "
                         f"got q {tuple(q.shape)}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {head_dim} (q {tuple(q.shape)})")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    _check_device_and_dtype(q)


def _check_device_and_dtype(q: torch.Tensor) -> None:
    if kernels.INTERPRETED:
        if q.device.type != "cpu" or q.dtype not in INTERPRETER_DTYPES:
            raise ValueError(f"in Triton's interpreter (TRITON_INTERPRET=1) the kernels take float32 CPU "
                             f"tensors, got {q.dtype} on {q.device}")
    elif q.device.type != "cuda" or q.dtype not in GPU_DTYPES:
        raise ValueError(f"on the GPU the kernels take float16 or bfloat16 CUDA tensors, got {q.dtype} on "
                         f"{q.device} (set TRITON_INTERPRET=1 before importing attnbook.flash to run them "
                         f"on CPU tensors)")


def flash_forward_triton(q, k, v, causal: bool, scale: float, autotune: bool):
    """Launch the forward kernel: returns (out, lse), lse of shape (B, H, Nq) in float32."""
    batch, heads, n_queries, head_dim = q.shape
    n_keys, group_size = k.shape[2], heads // k.shape[1]
    out = torch.empty_like(q)
    lse = torch.empty(batch, heads, n_queries, device=q.device, dtype=torch.float32)
    if n_queries == 0:
        return out, lse
    args = (q, k, v, out, lse, scale * kernels.LOG2E, n_queries, n_keys, heads, group_size)
    _launch("forward", kernels._attn_fwd, n_queries, batch * heads, args, head_dim, causal, autotune)
    return out, lse


def flash_backward_triton(q, k, v, out, lse, grad_out, causal: bool, scale: float, autotune: bool):
    """Launch the three backward kernels: returns (dq, dk, dv)."""
    import triton
    batch, heads, n_queries, head_dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    group_size = heads // kv_heads
    grad_out = grad_out.contiguous()
    if n_queries == 0:  # no query: no gradient reaches k or v
        return torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = torch.empty_like(lse)
    rows = batch * heads * n_queries
    block = 16 if kernels.INTERPRETED else 128
    kernels._bwd_delta[(triton.cdiv(rows, block),)](out, grad_out, delta, rows, HEAD_DIM=head_dim,
                                                    BLOCK_M=block)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (scale, scale * kernels.LOG2E, n_queries, n_keys, heads, group_size)
    _launch("dkdv", kernels._attn_bwd_dkdv, n_keys, batch * kv_heads,
            (q, k, v, grad_out, lse, delta, dk, dv, *common), head_dim, causal, autotune)
    _launch("dq", kernels._attn_bwd_dq, n_queries, batch * heads,
            (q, k, v, grad_out, lse, delta, dq, *common), head_dim, causal, autotune)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """softmax(q kᵀ · scale [+ causal mask]) v, forward and backward by the Triton kernels."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float, autotune: bool):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = flash_forward_triton(q, k, v, causal, scale, autotune)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale, ctx.autotune = causal, scale, autotune
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward_triton(q, k, v, out, lse, grad_out, ctx.causal, ctx.scale,
                                           ctx.autotune)
        return dq, dk, dv, None, None, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, autotune: bool | None = None) -> torch.Tensor:
    """FlashAttention by the book's Triton kernels; differentiable in q, k and v.

    q: (B, H, Nq, d); k, v: (B, H_kv, Nk, d) with H a multiple of H_kv (grouped-query
    heads); d in 16, 32, 64, 128. float16/bfloat16 CUDA tensors, or float32 CPU tensors
    in Triton's interpreter. causal: query i sees keys j <= i + Nk - Nq. scale defaults
    to 1/sqrt(d). autotune (default: on the GPU) picks tile sizes per shape.

    The kernels read contiguous (B, H, N, d) tensors: other layouts, such as a
    transposed (B, N, H, d) view, are copied first. Differentiable once (no
    second-order gradients).
    """
    check_inputs(q, k, v, causal)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if autotune is None:
        autotune = not kernels.INTERPRETED
    return FlashAttentionFunction.apply(q, k, v, bool(causal), float(scale), bool(autotune))
