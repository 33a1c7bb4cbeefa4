"""FlashAttention in plain PyTorch: the online softmax and the tiled algorithm.

This is the reference the Triton kernels are tested against, and the algorithm
chapter 11 derives. It never builds the (Nq, Nk) matrix of scores: it walks over
blocks of queries and blocks of keys, keeps a running maximum and a running sum
per query row (the online softmax), and stores only the output and the row's
log-sum-exp. The backward pass recomputes each tile of scores from that
log-sum-exp (FlashAttention-2, Dao 2023). Memory is linear in the sequence
length; the work is the same as plain attention's, in a few large matrix
products per tile.

Shapes: q (B, H, Nq, d), k (B, H_kv, Nk, d), v (B, H_kv, Nk, dv), with H a
multiple of H_kv (grouped-query heads: query head h reads key/value head
h // (H // H_kv), as `repeat_interleave` would copy them). Causal with Nq != Nk
is aligned bottom-right, as `attnbook.attention.causal_mask`: query i sees keys
j <= i + (Nk - Nq), so the queries are the last Nq positions (this is also
FlashAttention-2's convention; torch's `scaled_dot_product_attention(...,
is_causal=True)` aligns top-left instead).
"""

from __future__ import annotations

import math

import torch

from attnbook.attention import check_scale

BLOCK_Q = 512  # rows of queries per tile: large enough that Python's loop costs little
BLOCK_K = 512  # keys per tile
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------- the online softmax

def online_softmax_update(running_max: torch.Tensor, running_sum: torch.Tensor,
                          block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the online softmax: fold a block of scores (..., b) into the
    running maximum m and running sum l = sum_j exp(x_j - m) of the row (...,).

    The old sum was taken relative to the old maximum; relative to the new one it
    is l * exp(m_old - m_new), so the sum is rescaled, never recomputed.
    """
    new_max = torch.maximum(running_max, block.amax(dim=-1))
    # A row that has seen only -inf so far keeps m = -inf; subtract 0 there (not -inf).
    safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    rescale = torch.exp(running_max - safe_max)  # exp(-inf) = 0 for an empty start
    new_terms = torch.exp(block - safe_max[..., None]).sum(dim=-1)
    return new_max, running_sum * rescale + new_terms


def online_logsumexp(x: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """log(sum_j exp(x_j)) over the last dimension, in ONE pass over blocks of
    `block_size` entries (the running maximum and sum of the online softmax)."""
    _check_block("block_size", block_size)
    running_max = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)
    running_sum = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[-1], block_size):
        running_max, running_sum = online_softmax_update(
            running_max, running_sum, x[..., start:start + block_size])
    return running_max + torch.log(running_sum)


def online_softmax(x: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """softmax over the last dimension, with its normaliser found in one streaming
    pass over blocks (running maximum and sum); the weights are then exp(x - lse).
    Equal to torch.softmax(x, dim=-1) to rounding; a row of all -inf gives zeros."""
    lse = online_logsumexp(x, block_size)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # empty rows: exp(-inf) = 0
    return torch.exp(x - lse[..., None])


# ---------------------------------------------------------------- checking the input

def _check_block(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_flash_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       causal: bool = False) -> None:
    """Raise a ValueError naming the argument and the shapes unless q (B, H, Nq, d),
    k (B, H_kv, Nk, d) and v (B, H_kv, Nk, dv) fit: one float dtype and device,
    H a multiple of H_kv, Nk >= 1, and Nk >= Nq when causal."""
    for name, t in [("q", q), ("k", k), ("v", v)]:
        if not torch.is_tensor(t) or t.dim() != 4:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, length, dim), got {got}")
        if t.dtype not in DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got dtype "
                             f"{t.dtype} (shape {tuple(t.shape)})")
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, "
                         f"v {v.dtype} (shapes {shapes})")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got q on {q.device}, k on "
                         f"{k.device}, v on {v.device} (shapes {shapes})")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"q, k and v must have the same batch size (dimension 0): {shapes}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same heads and length (dimensions 1, 2): "
                         f"{shapes}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"the query heads H = q.shape[1] must be a multiple of the key/value "
                         f"heads H_kv = k.shape[1] >= 1: {shapes}")
    if q.shape[3] != k.shape[3] or q.shape[3] == 0:
        raise ValueError(f"q and k must have the same head dimension d >= 1 (dimension 3): "
                         f"{shapes}")
    if k.shape[2] == 0:
        raise ValueError(f"k must hold at least one key (dimension 2 > 0): {shapes}")
    if causal and k.shape[2] < q.shape[2]:
        raise ValueError(f"causal attention aligns the queries with the last keys, so it needs "
                         f"at least as many keys as queries: q length {q.shape[2]}, k length "
                         f"{k.shape[2]} ({shapes})")


def _grouped(q: torch.Tensor, n_kv: int) -> torch.Tensor:
    """(B, H, N, d) -> (B, H_kv, group, N, d): query head h = kv_head * group + i."""
    b, h, n, d = q.shape
    return q.view(b, n_kv, h // n_kv, n, d)


def _rows(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of every group, (B, H_kv, g, N, ...) -> (B, H_kv, g * rows, ...)."""
    b, h_kv, g = x.shape[:3]
    return x[:, :, :, start:stop].reshape(b, h_kv, g * (stop - start), *x.shape[4:])


def _needs_mask(q_start: int, k_stop: int, offset: int) -> bool:
    """Whether a causal tile crosses the diagonal: its last key is hidden from its first query."""
    return k_stop - 1 > q_start + offset


def _tile_hidden(q_start: int, q_stop: int, k_start: int, k_stop: int, offset: int,
                 group: int, device, cache: dict | None = None) -> torch.Tensor | None:
    """The causal mask of one tile as the scores (g * rows, keys) of a group see it: True
    where key j is HIDDEN from query i (j > i + offset). None when the tile lies wholly on
    or below the diagonal (nothing to hide). The mask depends only on the tile's shape and
    on where the diagonal crosses it, so `cache` (a dict) lets one pass build each once."""
    if not _needs_mask(q_start, k_stop, offset):
        return None
    key = (q_stop - q_start, k_stop - k_start, q_start + offset - k_start)
    if cache is not None and key in cache:
        return cache[key]
    rows = torch.arange(q_stop - q_start, device=device)[:, None]
    keys = torch.arange(k_stop - k_start, device=device)[None, :]
    hidden = keys > rows + key[2]  # (rows, keys): key k_start + c, query q_start + r
    hidden = hidden.repeat(group, 1) if group > 1 else hidden
    if cache is not None:
        cache[key] = hidden
    return hidden


# exp of a float32 below about -87.3, whose result is subnormal or rounds to 0 (and of -inf),
# leaves PyTorch's vectorised fast path: several to hundreds of times slower (measured
# in chapter 11). exp(-80) = 2e-35 is 0 next to the row's largest term, exp(0) = 1.
_EXP_FLOOR = -80.0


def _exp_tile(x: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
    """exp(x) in place, with exact zeros where `hidden` (broadcast to x) is True."""
    if hidden is None:
        return x.exp_()
    return x.clamp_(min=_EXP_FLOOR).exp_().masked_fill_(hidden, 0.0)


def _key_stop(q_stop: int, n_keys: int, causal: bool, offset: int) -> int:
    """One past the last key any query of the block q_start:q_stop may see."""
    return min(n_keys, q_stop + offset) if causal else n_keys


def tile_schedule(n_queries: int, n_keys: int, block_q: int = BLOCK_Q, block_k: int = BLOCK_K,
                  causal: bool = False) -> list[tuple[int, int, int, int, bool]]:
    """The tiles flash_forward computes, in its order: (q_start, q_stop, k_start, k_stop,
    masked) for each query block, then each key block it visits. Causal: key blocks
    wholly above the diagonal are not listed (skipped), and `masked` is True for the
    tiles that cross it."""
    if causal and n_keys < n_queries:
        raise ValueError(f"causal attention needs at least as many keys as queries: q length "
                         f"{n_queries}, k length {n_keys}")
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    offset, tiles = n_keys - n_queries, []
    for q_start in range(0, n_queries, block_q):
        q_stop = min(q_start + block_q, n_queries)
        for k_start in range(0, _key_stop(q_stop, n_keys, causal, offset), block_k):
            k_stop = min(k_start + block_k, n_keys)
            masked = causal and _needs_mask(q_start, k_stop, offset)
            tiles.append((q_start, q_stop, k_start, k_stop, masked))
    return tiles


def forward_tile_step(acc: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor,
                      scores: torch.Tensor, v_tile: torch.Tensor,
                      hidden: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile into the running state of its query rows: the online softmax,
    carrying the output along.

    acc (..., rows, dv) = sum_j exp(s_j - m) v_j so far, row_max m and row_sum
    l = sum_j exp(s_j - m) (..., rows); scores (..., rows, keys) are the tile's scaled
    scores, -inf where masked; v_tile (..., keys, dv). Returns the new (acc, row_max,
    row_sum). Works in place: `scores` becomes the tile's exp(S - m_new), and acc
    and row_sum are rescaled where they lie. `hidden`, if given, marks the masked
    scores (True, broadcast to scores), which lets the exponential skip the slow
    exp(-inf).
    """
    if hidden is not None:
        scores.masked_fill_(hidden, float("-inf"))
    new_max = torch.maximum(row_max, scores.amax(dim=-1))
    # A row that has seen no visible key yet has m = -inf: subtract 0 there, not -inf.
    safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    rescale = torch.exp(row_max - safe_max)  # how much the old sum and output shrink
    # exp(S - m_new), exactly 0 where masked
    probs = _exp_tile(scores.sub_(safe_max[..., None]), hidden)
    row_sum.mul_(rescale).add_(probs.sum(dim=-1))
    acc.mul_(rescale[..., None]).add_(probs @ v_tile)  # acc * rescale + P V
    return acc, new_max, row_sum


# ---------------------------------------------------------------- forward

def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  causal: bool = False, scale: float | None = None,
                  block_q: int = BLOCK_Q, block_k: int = BLOCK_K
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled attention forward: (out (B, H, Nq, dv), lse (B, H, Nq)).

    lse is the natural log-sum-exp of each query row's scaled scores, all that the
    backward pass needs to rebuild the softmax. Half-precision inputs are
    accumulated in float32: out comes back in the input dtype, lse in float32
    (in the input dtype for float32 and float64). Extra memory: O(B H Nq) plus
    one tile of block_q x block_k scores per (batch, head), never Nq x Nk.
    """
    check_flash_inputs(q, k, v, causal)
    check_scale(scale)
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    b, h, n_q, _ = q.shape
    h_kv, n_k, dv = k.shape[1], k.shape[2], v.shape[3]
    group, offset = h // h_kv, n_k - n_q
    half = q.dtype in (torch.float16, torch.bfloat16)
    acc_dtype = torch.float32 if half else q.dtype
    qg = _grouped(q, h_kv)
    out = torch.empty(b, h_kv, group, n_q, dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_kv, group, n_q, dtype=acc_dtype, device=q.device)
    masks: dict = {}  # the causal masks of the tiles on the diagonal, built once each
    for q_start in range(0, n_q, block_q):
        q_stop = min(q_start + block_q, n_q)
        rows = group * (q_stop - q_start)  # a group's query heads share each key tile
        # (BH, rows, d): cast before scaling, so that half precision rounds only once
        q_tile = (_rows(qg, q_start, q_stop).to(acc_dtype) * scale).flatten(0, 1)
        like = {"dtype": acc_dtype, "device": q.device}
        row_max = torch.full((b * h_kv, rows), float("-inf"), **like)
        row_sum = torch.zeros_like(row_max)  # (BH, rows)
        acc = torch.zeros(b * h_kv, rows, dv, **like)
        buffer = torch.empty(b * h_kv, rows, block_k, **like)
        # Causal: key blocks wholly above the diagonal are skipped, not masked.
        for k_start in range(0, _key_stop(q_stop, n_k, causal, offset), block_k):
            k_stop = min(k_start + block_k, n_k)
            # (BH, keys, d) and (BH, keys, dv)
            k_tile = k[:, :, k_start:k_stop].to(acc_dtype).flatten(0, 1)
            v_tile = v[:, :, k_start:k_stop].to(acc_dtype).flatten(0, 1)
            scores = buffer[:, :, :k_stop - k_start]  # one tile's memory, reused
            torch.bmm(q_tile, k_tile.transpose(1, 2), out=scores)  # (BH, rows, keys)
            hidden = (_tile_hidden(q_start, q_stop, k_start, k_stop, offset, group,
                                   q.device, masks) if causal else None)
            acc, row_max, row_sum = forward_tile_step(acc, row_max, row_sum, scores,
                                                      v_tile, hidden)
        # Divide once, at the end of the row, not per tile (every row saw key 0: l > 0).
        n_rows = q_stop - q_start
        out_tile = (acc / row_sum[..., None]).view(b, h_kv, group, n_rows, dv)
        out[:, :, :, q_start:q_stop] = out_tile.to(q.dtype)
        lse_tile = row_max + torch.log(row_sum)  # (BH, rows)
        lse[:, :, :, q_start:q_stop] = lse_tile.view(b, h_kv, group, n_rows)
    return out.view(b, h, n_q, dv), lse.view(b, h, n_q)


# ---------------------------------------------------------------- backward

def flash_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor,
                   causal: bool = False, scale: float | None = None,
                   block_q: int = BLOCK_Q, block_k: int = BLOCK_K
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of tiled attention, recomputing each tile of scores.

    FlashAttention-2's backward: D = rowsum(dO * O); per tile S = scale q k^T,
    P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P * (dP - D),
    dQ += dS K * scale, dK += dS^T Q * scale. The outer loop runs over key blocks
    (their dK, dV stay in one accumulator), the inner over query blocks; the
    query heads of a group add into their shared dk and dv.
    """
    check_flash_inputs(q, k, v, causal)
    check_scale(scale)
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    b, h, n_q, _ = q.shape
    h_kv, n_k, dv_dim = k.shape[1], k.shape[2], v.shape[3]
    expected = [("out", out, (b, h, n_q, dv_dim)), ("lse", lse, (b, h, n_q)),
                ("grad_out", grad_out, (b, h, n_q, dv_dim))]
    for name, t, shape in expected:
        if not torch.is_tensor(t) or tuple(t.shape) != shape:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must have shape {shape} for q {tuple(q.shape)} "
                             f"and v {tuple(v.shape)}, got {got}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    group, offset = h // h_kv, n_k - n_q
    half = q.dtype in (torch.float16, torch.bfloat16)
    acc_dtype = torch.float32 if half else q.dtype
    qg = _grouped(q, h_kv)
    dog = _grouped(grad_out, h_kv)
    lse_g = lse.view(b, h_kv, group, n_q).to(acc_dtype)
    # D_i = sum_c dO_ic O_ic = sum_j P_ij dP_ij: one number per query row.
    delta = (grad_out.to(acc_dtype) * out.to(acc_dtype)).sum(dim=-1)
    delta = delta.view(b, h_kv, group, n_q)
    dq = torch.zeros(b, h_kv, group, n_q, q.shape[3], dtype=acc_dtype,
                     device=q.device)
    dk = torch.empty(b, h_kv, n_k, k.shape[3], dtype=k.dtype, device=q.device)
    dv = torch.empty(b, h_kv, n_k, dv_dim, dtype=v.dtype, device=q.device)
    masks: dict = {}
    for k_start in range(0, n_k, block_k):
        k_stop = min(k_start + block_k, n_k)
        k_tile = k[:, :, k_start:k_stop].to(acc_dtype).flatten(0, 1)  # (BH, keys, d)
        v_tile = v[:, :, k_start:k_stop].to(acc_dtype).flatten(0, 1)  # (BH, keys, dv)
        dk_acc = torch.zeros_like(k_tile)
        dv_acc = torch.zeros_like(v_tile)
        # Causal: rows i < k_start - offset see none of these keys; skip their blocks.
        first_row = max(0, k_start - offset) if causal else 0
        for q_start in range(first_row // block_q * block_q, n_q, block_q):
            q_stop = min(q_start + block_q, n_q)
            q_tile = (_rows(qg, q_start, q_stop).to(acc_dtype) * scale).flatten(0, 1)
            do_tile = _rows(dog, q_start, q_stop).to(acc_dtype).flatten(0, 1)
            lse_tile = _rows(lse_g, q_start, q_stop).flatten(0, 1)  # (BH, rows)
            delta_tile = _rows(delta, q_start, q_stop).flatten(0, 1)  # (BH, rows)
            scores = torch.bmm(q_tile, k_tile.transpose(1, 2))  # (BH, rows, keys)
            hidden = (_tile_hidden(q_start, q_stop, k_start, k_stop, offset, group,
                                   q.device, masks) if causal else None)
            # P, from the lse
            probs = _exp_tile(scores.sub_(lse_tile[..., None]), hidden)
            # dV += P^T dO (the query heads of a group add up)
            dv_acc.baddbmm_(probs.transpose(1, 2), do_tile)
            dprobs = torch.bmm(do_tile, v_tile.transpose(1, 2))  # dP = dO V^T
            dscores = probs.mul_(dprobs.sub_(delta_tile[..., None]))  # dS = P (dP - D)
            dq_tile = torch.bmm(dscores, k_tile).mul_(scale)  # dQ = dS K scale
            n_rows = q_stop - q_start
            dq[:, :, :, q_start:q_stop] += dq_tile.view(b, h_kv, group, n_rows, -1)
            # dK += dS^T Q scale (the scale is in q_tile)
            dk_acc.baddbmm_(dscores.transpose(1, 2), q_tile)
        dk[:, :, k_start:k_stop] = dk_acc.view(b, h_kv, k_stop - k_start, -1)
        dv[:, :, k_start:k_stop] = dv_acc.view(b, h_kv, k_stop - k_start, -1)
    return dq.view(b, h, n_q, q.shape[3]).to(q.dtype), dk, dv


# ---------------------------------------------------------------- autograd

class TiledAttention(torch.autograd.Function):
    """Tiled attention as one differentiable operation: flash_forward saves only
    q, k, v, the output and the log-sum-exp; flash_backward recomputes the rest."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None, block_q=BLOCK_Q, block_k=BLOCK_K):
        out, lse = flash_forward(q, k, v, causal, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, scale, block_q, block_k)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(q, k, v, out, lse, grad_out.contiguous(), *ctx.options)
        return dq, dk, dv, None, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, block_q: int = BLOCK_Q,
                    block_k: int = BLOCK_K) -> torch.Tensor:
    """softmax(scale q k^T [+ causal mask]) v, tiled: q (B, H, Nq, d), k (B, H_kv, Nk, d),
    v (B, H_kv, Nk, dv) -> (B, H, Nq, dv). Differentiable in q, k and v."""
    check_flash_inputs(q, k, v, causal)
    return TiledAttention.apply(q, k, v, causal, scale, block_q, block_k)
