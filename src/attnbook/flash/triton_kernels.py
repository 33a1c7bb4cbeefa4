"""FlashAttention forward and backward as Triton kernels, as in FlashAttention-2.

The forward pass streams key/value tiles past a tile of queries and keeps, per query
row, a running maximum and sum (the online softmax of chapter 11). It writes the
output and the log-sum-exp of each row, nothing of size N x N. The backward pass
recomputes each tile of probabilities from the log-sum-exp instead of storing them.

Softmax is computed in base 2: exp(x) = exp2(x * log2(e)), and log2(e) is folded into
the scale once, so the inner loop does one multiply and one exp2 per score.

Causal attention aligns the diagonal at the bottom right, as `attnbook.attention.
causal_mask` does: query i sees key j when j <= i + (n_keys - n_queries). Each loop
is split into the tiles that need no mask (every key visible to every query, or all
in bounds) and the few on the diagonal or at the ragged end that do.

On a machine without CUDA, the kernels run in Triton's interpreter (TRITON_INTERPRET=1,
set below unless triton was imported first), which runs them with NumPy on CPU
tensors: slowly, but line for line the same program.
"""

from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available():
    # Without a GPU the kernels run in Triton's interpreter. Triton reads this variable
    # when it is first imported (its own @triton.jit functions depend on it), so it
    # must be set before anything imports triton.
    interpreting = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on")
    if "triton" in sys.modules and not interpreting:
        raise RuntimeError("triton was imported before attnbook.flash on a machine "
                           "without CUDA, so its kernels cannot run in the "
                           "interpreter: set TRITON_INTERPRET=1 in the environment, "
                           "or import attnbook.flash before triton")
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRETED = bool(triton.knobs.runtime.interpret)
LOG2E = 1.4426950408889634  # log2(e)
LN2 = 0.6931471805599453  # ln(2)


# ----------------------------------------------------------------------------- forward

@triton.jit
def _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, rows, start, end, n_keys,
               causal_offset, qk_scale, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Fold key tiles [start, end) into the running (acc, m_i, l_i) of a query tile."""
    dims = tl.arange(0, HEAD_DIM)
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + tl.arange(0, BLOCK_N)
        # K transposed, (HEAD_DIM, BLOCK_N), and V, (BLOCK_N, HEAD_DIM)
        kt_ptrs = k_base + cols[None, :] * HEAD_DIM + dims[:, None]
        v_ptrs = v_base + cols[:, None] * HEAD_DIM + dims[None, :]
        if MASKED:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < n_keys, other=0.0)
            v = tl.load(v_ptrs, mask=cols[:, None] < n_keys, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, kt) * qk_scale  # scores in base-2 units: (BLOCK_M, BLOCK_N)
        if MASKED:
            visible = cols[None, :] < n_keys
            if CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None] + causal_offset)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        rescale = tl.math.exp2(m_i - m_new)  # how much the old running sums shrink
        l_i = l_i * rescale + tl.sum(p, 1)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, qk_scale, n_queries, n_keys, n_heads, group_size,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr):
    """One program: one tile of BLOCK_M queries of one (batch, head)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)  # batch * n_heads + head
    kv_bh = bh // group_size  # the key/value head this query head reads (grouped)
    q_base = Q + bh.to(tl.int64) * n_queries * HEAD_DIM
    k_base = K + kv_bh.to(tl.int64) * n_keys * HEAD_DIM
    v_base = V + kv_bh.to(tl.int64) * n_keys * HEAD_DIM

    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q_ptrs = q_base + rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(q_ptrs, mask=rows[:, None] < n_queries, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (base 2)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # running sum of p @ V

    if CAUSAL:
        causal_offset = n_keys - n_queries
        # keys [0, unmasked_end) are visible to every query of this tile ...
        unmasked_end = (start_m + causal_offset + 1) // BLOCK_N * BLOCK_N
        # ... tiles up to the last query's diagonal need the mask; the rest are skipped
        masked_end = tl.minimum(n_keys, start_m + BLOCK_M + causal_offset)
    else:
        causal_offset = 0
        unmasked_end = n_keys // BLOCK_N * BLOCK_N  # whole tiles
        masked_end = n_keys  # the ragged last tile, if any
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, rows, 0, unmasked_end,
                               n_keys, causal_offset, qk_scale, HEAD_DIM, BLOCK_N,
                               False, CAUSAL)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, rows, unmasked_end,
                               masked_end, n_keys, causal_offset, qk_scale, HEAD_DIM,
                               BLOCK_N, True, CAUSAL)

    out = acc / l_i[:, None]
    # the natural log-sum-exp of the scaled scores: ln(2) * (m_i + log2(l_i))
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
    in_bounds = rows < n_queries
    o_base = O + bh.to(tl.int64) * n_queries * HEAD_DIM
    o_ptrs = o_base + rows[:, None] * HEAD_DIM + dims[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=in_bounds[:, None])
    tl.store(LSE + bh.to(tl.int64) * n_queries + rows, lse, mask=in_bounds)


# ----------------------------------------------------------------------------- backward

@triton.jit
def _bwd_delta(O, DO, DELTA, n_rows, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d dO_id * O_id: the term every dS of row i subtracts."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    offsets = rows[:, None].to(tl.int64) * HEAD_DIM + dims[None, :]
    o = tl.load(O + offsets, mask=rows[:, None] < n_rows, other=0.0).to(tl.float32)
    do = tl.load(DO + offsets, mask=rows[:, None] < n_rows, other=0.0).to(tl.float32)
    tl.store(DELTA + rows, tl.sum(o * do, 1), mask=rows < n_rows)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, start, end,
                n_queries, causal_offset, qk_scale, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Add query tiles [start, end) to dK and dV of one key tile (scores transposed)."""
    dims = tl.arange(0, HEAD_DIM)
    for start_m in range(start, end, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        rows = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = q_base + rows[:, None] * HEAD_DIM + dims[None, :]
        do_ptrs = do_base + rows[:, None] * HEAD_DIM + dims[None, :]
        if MASKED:  # rows past the end load as zeros, so they add nothing below
            q = tl.load(q_ptrs, mask=rows[:, None] < n_queries, other=0.0)
            do = tl.load(do_ptrs, mask=rows[:, None] < n_queries, other=0.0)
            lse = tl.load(lse_base + rows, mask=rows < n_queries, other=0.0)
            delta = tl.load(delta_base + rows, mask=rows < n_queries, other=0.0)
        else:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # scores, transposed: (BLOCK_N, BLOCK_M), in base-2 units
        st = tl.dot(k, tl.trans(q)) * qk_scale
        if MASKED and CAUSAL:
            visible = cols[:, None] <= rows[None, :] + causal_offset
            st = tl.where(visible, st, float("-inf"))
        pt = tl.math.exp2(st - lse[None, :] * 1.4426950408889634)  # P, recomputed
        dv += tl.dot(pt.to(do.dtype), do)
        dpt = tl.dot(v, tl.trans(do))  # dP transposed
        dst = pt * (dpt - delta[None, :])  # dS transposed
        dk += tl.dot(dst.to(q.dtype), q)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale, qk_scale, n_queries,
                   n_keys, n_heads, group_size, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """One program: dK and dV of one tile of BLOCK_N keys of one (batch, key/value
    head), summed over the group_size query heads that share it."""
    start_n = tl.program_id(0) * BLOCK_N
    kv_bh = tl.program_id(1)
    cols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    kv_base = kv_bh.to(tl.int64) * n_keys * HEAD_DIM
    kv_offsets = kv_base + cols[:, None] * HEAD_DIM + dims[None, :]
    k = tl.load(K + kv_offsets, mask=cols[:, None] < n_keys, other=0.0)
    v = tl.load(V + kv_offsets, mask=cols[:, None] < n_keys, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    whole_end = n_queries // BLOCK_M * BLOCK_M
    if CAUSAL:
        causal_offset = n_keys - n_queries
        # query i sees key j when i >= j - causal_offset: earlier tiles are skipped,
        first = tl.maximum(start_n - causal_offset, 0) // BLOCK_M * BLOCK_M
        # and from the first query that sees the whole key tile on, no mask is needed
        last_key = start_n + BLOCK_N - 1
        unmasked_start = (last_key - causal_offset + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        unmasked_start = tl.minimum(tl.maximum(unmasked_start, first), n_queries)
    else:
        causal_offset = 0
        first = 0
        unmasked_start = 0
    for g in range(group_size):
        bh = kv_bh * group_size + g
        q_base = Q + bh.to(tl.int64) * n_queries * HEAD_DIM
        do_base = DO + bh.to(tl.int64) * n_queries * HEAD_DIM
        lse_base = LSE + bh.to(tl.int64) * n_queries
        delta_base = DELTA + bh.to(tl.int64) * n_queries
        # the diagonal (masked), the tiles below it (unmasked), the ragged last tile
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols,
                             first, unmasked_start, n_queries, causal_offset, qk_scale,
                             HEAD_DIM, BLOCK_M, True, CAUSAL)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols,
                             unmasked_start, whole_end, n_queries, causal_offset,
                             qk_scale, HEAD_DIM, BLOCK_M, False, CAUSAL)
        ragged_start = tl.maximum(unmasked_start, whole_end)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols,
                             ragged_start, n_queries, n_queries, causal_offset,
                             qk_scale, HEAD_DIM, BLOCK_M, True, False)

    in_bounds = cols[:, None] < n_keys
    tl.store(DK + kv_offsets, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_bounds)
    tl.store(DV + kv_offsets, dv.to(DV.dtype.element_ty), mask=in_bounds)


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, k_base, v_base, rows, start, end, n_keys,
              causal_offset, qk_scale, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """Add the key tiles [start, end) to dQ of one query tile."""
    dims = tl.arange(0, HEAD_DIM)
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        cols = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + cols[:, None] * HEAD_DIM + dims[None, :]
        v_ptrs = v_base + cols[:, None] * HEAD_DIM + dims[None, :]
        if MASKED:  # keys past the end load as zeros: dS meets a zero row of K
            k = tl.load(k_ptrs, mask=cols[:, None] < n_keys, other=0.0)
            v = tl.load(v_ptrs, mask=cols[:, None] < n_keys, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED and CAUSAL:
            visible = cols[None, :] <= rows[:, None] + causal_offset
            s = tl.where(visible, s, float("-inf"))
        p = tl.math.exp2(s - lse[:, None] * 1.4426950408889634)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, sm_scale, qk_scale, n_queries, n_keys,
                 n_heads, group_size, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """One program: dQ of one tile of BLOCK_M queries of one (batch, head)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    kv_bh = bh // group_size
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    in_bounds = rows < n_queries
    head_start = bh.to(tl.int64) * n_queries * HEAD_DIM
    q_offsets = head_start + rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(Q + q_offsets, mask=in_bounds[:, None], other=0.0)
    do = tl.load(DO + q_offsets, mask=in_bounds[:, None], other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * n_queries + rows, mask=in_bounds, other=0.0)
    delta_ptrs = DELTA + bh.to(tl.int64) * n_queries + rows
    delta = tl.load(delta_ptrs, mask=in_bounds, other=0.0)
    k_base = K + kv_bh.to(tl.int64) * n_keys * HEAD_DIM
    v_base = V + kv_bh.to(tl.int64) * n_keys * HEAD_DIM
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if CAUSAL:  # the same split of the key tiles as in the forward pass
        causal_offset = n_keys - n_queries
        unmasked_end = (start_m + causal_offset + 1) // BLOCK_N * BLOCK_N
        masked_end = tl.minimum(n_keys, start_m + BLOCK_M + causal_offset)
    else:
        causal_offset = 0
        unmasked_end = n_keys // BLOCK_N * BLOCK_N
        masked_end = n_keys
    dq = _dq_tiles(dq, q, do, lse, delta, k_base, v_base, rows, 0, unmasked_end, n_keys,
                   causal_offset, qk_scale, HEAD_DIM, BLOCK_N, False, CAUSAL)
    dq = _dq_tiles(dq, q, do, lse, delta, k_base, v_base, rows, unmasked_end,
                   masked_end, n_keys, causal_offset, qk_scale, HEAD_DIM, BLOCK_N,
                   True, CAUSAL)
    dq = (dq * sm_scale).to(DQ.dtype.element_ty)
    tl.store(DQ + q_offsets, dq, mask=in_bounds[:, None])
