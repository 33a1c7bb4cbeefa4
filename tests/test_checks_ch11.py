"""Mutation tests of the chapter 11 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention import causal_mask
from attnbook.checks.ch11 import (
    check_merge_partials,
    check_tile_count,
    check_tile_step,
    check_tiled_backward,
    check_tiles_predicted,
    count_ops,
)
from attnbook.checks.core import CheckFailed
from attnbook.flash.reference import flash_forward

INF = float("-inf")

# --- 11.1 one tile step, in base 2 ---------------------------------------------------------

LN2 = math.log(2.0)


def tile_step_solution(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    scores = qk_scale * q_tile @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, INF)
    new_max = torch.maximum(row_max, scores.amax(dim=-1))
    safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    rescale = torch.exp2(row_max - safe)
    p = torch.exp2(scores - safe[..., None])
    return acc * rescale[..., None] + p @ v_tile, new_max, row_sum * rescale + p.sum(-1)


def tile_step_natural_inside(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale,
                             mask=None):
    """Correct, written differently: natural exponentials of the scores times ln 2, the
    old state merged through torch.where, einsum for the products."""
    scores = qk_scale * q_tile @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = torch.where(mask, scores, torch.full_like(scores, INF))
    tile_max = scores.max(dim=-1).values
    new_max = torch.where(tile_max > row_max, tile_max, row_max)
    finite = torch.isfinite(new_max)
    shift = torch.where(finite, new_max, 0.0)
    p = torch.exp((scores - shift.unsqueeze(-1)) * LN2)
    old = torch.where(finite, torch.exp((row_max - shift) * LN2), 0.0)
    return (torch.einsum("...r,...rc->...rc", old, acc)
            + torch.einsum("...rk,...kc->...rc", p, v_tile), new_max, old * row_sum + p.sum(-1))


@pytest.mark.parametrize("student", [tile_step_solution, tile_step_natural_inside])
def test_11_1_passes_correct_answers_written_differently(student, capsys):
    check_tile_step(student)
    assert "✅ Exercise 11.1" in capsys.readouterr().out


def natural_exp(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """Copies the chapter's natural-log step: exp where the base-2 scores need exp2."""
    scores = qk_scale * q_tile @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, INF)
    new_max = torch.maximum(row_max, scores.amax(dim=-1))
    safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    rescale = torch.exp(row_max - safe)
    p = torch.exp(scores - safe[..., None])
    return acc * rescale[..., None] + p @ v_tile, new_max, row_sum * rescale + p.sum(-1)


def natural_max(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """Works in natural units (qk_scale / log2 e) and returns the natural maximum."""
    new_acc, new_max, new_sum = tile_step_solution(q_tile, k_tile, v_tile, acc, row_max,
                                                   row_sum, qk_scale, mask)
    return new_acc, new_max * LN2, new_sum


def no_rescale(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """Forgets that the old acc and sum were relative to the old maximum."""
    scores = qk_scale * q_tile @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, INF)
    new_max = torch.maximum(row_max, scores.amax(dim=-1))
    safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
    p = torch.exp2(scores - safe[..., None])
    return acc + p @ v_tile, new_max, row_sum + p.sum(-1)


def unsafe_max(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """The kernel's step copied as it is: subtracts the new maximum even when it is -inf,
    and 2^(-inf - -inf) is NaN."""
    scores = qk_scale * q_tile @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, INF)
    new_max = torch.maximum(row_max, scores.amax(dim=-1))
    rescale = torch.exp2(row_max - new_max)
    p = torch.exp2(scores - new_max[..., None])
    return acc * rescale[..., None] + p @ v_tile, new_max, row_sum * rescale + p.sum(-1)


def ignores_mask(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    return tile_step_solution(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, None)


def own_scale(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """Ignores qk_scale and uses the kernel's usual log2(e) / sqrt(d)."""
    return tile_step_solution(q_tile, k_tile, v_tile, acc, row_max, row_sum,
                              math.log2(math.e) * q_tile.shape[-1] ** -0.5, mask)


def in_place(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    new_acc, new_max, new_sum = tile_step_solution(q_tile, k_tile, v_tile, acc, row_max,
                                                   row_sum, qk_scale, mask)
    acc.copy_(new_acc)
    return acc, new_max, new_sum


def returns_output(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    new_acc, new_max, new_sum = tile_step_solution(q_tile, k_tile, v_tile, acc, row_max,
                                                   row_sum, qk_scale, mask)
    return new_acc / new_sum[..., None]


@pytest.mark.parametrize("student, verdict", [
    (natural_exp, r"first tile of 5 rows .*the acc \(item 0\): .*values are wrong"),
    (natural_max, r"first tile of 5 rows .*the row_max \(item 1\): .*values are wrong"),
    (no_rescale, r"second tile whose scores exceed.*the acc \(item 0\): .*values are wrong"),
    (unsafe_max, r"row 0 .*the acc \(item 0\): the result contains NaN"),
    (ignores_mask, r"causal diagonal .*values are wrong"),
    (own_scale, r"first tile of 5 rows .*2-D tiles: the acc \(item 0\): .*values are"),
    (in_place, r"changed its `acc` in place"),
    (returns_output, r"return the tuple \(acc, row_max, row_sum\), got Tensor"),
])
def test_11_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_tile_step(student)


# --- 11.2 merge two parts ------------------------------------------------------------------


def merge_solution(out_a, lse_a, out_b, lse_b):
    lse = torch.logaddexp(lse_a, lse_b)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return (torch.exp(lse_a - safe)[..., None] * out_a
            + torch.exp(lse_b - safe)[..., None] * out_b, lse)


def merge_by_max(out_a, lse_a, out_b, lse_b):
    """Correct, written differently: relative to the larger lse, as the online softmax does."""
    m = torch.maximum(lse_a, lse_b)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    wa, wb = torch.exp(lse_a - m), torch.exp(lse_b - m)
    total = wa + wb
    lse = m + torch.log(total)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return (wa[..., None] * out_a + wb[..., None] * out_b) / total[..., None], lse


@pytest.mark.parametrize("student", [merge_solution, merge_by_max])
def test_11_2_passes_correct_answers_written_differently(student, capsys):
    check_merge_partials(student)
    assert "✅ Exercise 11.2" in capsys.readouterr().out


def merge_naive_exp(out_a, lse_a, out_b, lse_b):
    wa, wb = torch.exp(lse_a), torch.exp(lse_b)  # overflows near 1000
    total = wa + wb
    return (wa[..., None] * out_a + wb[..., None] * out_b) / total[..., None], torch.log(total)


def merge_average(out_a, lse_a, out_b, lse_b):
    return (out_a + out_b) / 2, torch.logaddexp(lse_a, lse_b)


def merge_max_lse(out_a, lse_a, out_b, lse_b):
    out, _ = merge_solution(out_a, lse_a, out_b, lse_b)
    return out, torch.maximum(lse_a, lse_b)


def merge_softmax_weights(out_a, lse_a, out_b, lse_b):
    """Right except where both parts are empty: softmax of (-inf, -inf) is NaN."""
    w = torch.softmax(torch.stack([lse_a, lse_b]), dim=0)
    return w[0][..., None] * out_a + w[1][..., None] * out_b, torch.logaddexp(lse_a, lse_b)


@pytest.mark.parametrize("student, verdict", [
    (merge_naive_exp, r"near 1000 .*the out \(item 0\): the result contains NaN"),
    (merge_average, r"two parts of one attention .*the out \(item 0\): .*values are wrong"),
    (merge_max_lse, r"two parts of one attention .*the lse \(item 1\): .*values are wrong"),
    (merge_softmax_weights, r"both parts are empty .*contains NaN"),
])
def test_11_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_merge_partials(student)


# --- 11.3 the causal backward --------------------------------------------------------------


def backward_as_given(q, k, v, out, lse, grad_out, causal=False, block=16):
    """The buggy backward of the exercise: it skips the tiles above the diagonal, but
    does not mask the tiles that cross it."""
    scale = q.shape[-1] ** -0.5
    n_q, n_k = q.shape[-2], k.shape[-2]
    offset = n_k - n_q
    delta = (grad_out * out).sum(dim=-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for k0 in range(0, n_k, block):
        kb, vb = k[..., k0:k0 + block, :], v[..., k0:k0 + block, :]
        for q0 in range(0, n_q, block):
            if causal and k0 > q0 + block - 1 + offset:
                continue
            qb, dob = q[..., q0:q0 + block, :], grad_out[..., q0:q0 + block, :]
            p = torch.exp(scale * qb @ kb.transpose(-2, -1) - lse[..., q0:q0 + block, None])
            dv[..., k0:k0 + block, :] += p.transpose(-2, -1) @ dob
            dp = dob @ vb.transpose(-2, -1)
            ds = p * (dp - delta[..., q0:q0 + block, None])
            dq[..., q0:q0 + block, :] += scale * ds @ kb
            dk[..., k0:k0 + block, :] += scale * ds.transpose(-2, -1) @ qb
    return dq, dk, dv


def backward_with(mask_fn, where="p"):
    """The given backward with a tile mask from mask_fn(n_q, n_k) applied to P (or dS)."""
    def backward(q, k, v, out, lse, grad_out, causal=False, block=16):
        scale = q.shape[-1] ** -0.5
        n_q, n_k = q.shape[-2], k.shape[-2]
        mask = mask_fn(n_q, n_k) if causal else torch.ones(n_q, n_k, dtype=torch.bool)
        delta = (grad_out * out).sum(dim=-1)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for k0 in range(0, n_k, block):
            kb, vb = k[..., k0:k0 + block, :], v[..., k0:k0 + block, :]
            for q0 in range(0, n_q, block):
                qb, dob = q[..., q0:q0 + block, :], grad_out[..., q0:q0 + block, :]
                tile = mask[q0:q0 + block, k0:k0 + block]
                p = torch.exp(scale * qb @ kb.transpose(-2, -1) - lse[..., q0:q0 + block, None])
                if where == "p":
                    p = p * tile
                dv[..., k0:k0 + block, :] += p.transpose(-2, -1) @ dob
                ds = p * (dob @ vb.transpose(-2, -1) - delta[..., q0:q0 + block, None])
                if where == "ds":
                    ds = ds * tile
                dq[..., q0:q0 + block, :] += scale * ds @ kb
                dk[..., k0:k0 + block, :] += scale * ds.transpose(-2, -1) @ qb
        return dq, dk, dv
    return backward


def skip_bound_off_by_one(q, k, v, out, lse, grad_out, causal=False, block=16):
    """Masks the diagonal tiles, but skips one tile too many: `>=` for `>` in the skip
    test drops a tile whose first key only its last query sees."""
    scale = q.shape[-1] ** -0.5
    n_q, n_k = q.shape[-2], k.shape[-2]
    offset = n_k - n_q
    visible = causal_mask(n_q, n_k)
    delta = (grad_out * out).sum(dim=-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for k0 in range(0, n_k, block):
        kb, vb = k[..., k0:k0 + block, :], v[..., k0:k0 + block, :]
        for q0 in range(0, n_q, block):
            if causal and k0 >= q0 + block - 1 + offset:
                continue
            qb, dob = q[..., q0:q0 + block, :], grad_out[..., q0:q0 + block, :]
            s = scale * qb @ kb.transpose(-2, -1)
            if causal:
                s = s.masked_fill(~visible[q0:q0 + block, k0:k0 + block], INF)
            p = torch.exp(s - lse[..., q0:q0 + block, None])
            dv[..., k0:k0 + block, :] += p.transpose(-2, -1) @ dob
            ds = p * (dob @ vb.transpose(-2, -1) - delta[..., q0:q0 + block, None])
            dq[..., q0:q0 + block, :] += scale * ds @ kb
            dk[..., k0:k0 + block, :] += scale * ds.transpose(-2, -1) @ qb
    return dq, dk, dv


def top_left(n_q, n_k):
    return torch.ones(n_q, n_k, dtype=torch.bool).tril()


def backward_autograd(q, k, v, out, lse, grad_out, causal=False, block=16):
    """Correct, written differently: no tiles at all, autograd of plain attention."""
    from attnbook.attention import scaled_dot_product_attention

    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    o = scaled_dot_product_attention(q, k, v, mask)[0]
    return torch.autograd.grad(o, (q, k, v), grad_out)


@pytest.mark.parametrize("student", [backward_with(causal_mask), backward_autograd])
def test_11_3_passes_correct_answers_written_differently(student, capsys):
    check_tiled_backward(student)
    assert "✅ Exercise 11.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (backward_as_given, r"Nq = 48, Nk = 48, causal, block = 16: the dq \(item 0\)"),
    (backward_with(top_left), r"Nq = 20, Nk = 45, causal, block = 16: the dq"),
    (backward_with(causal_mask, where="ds"), r"Nq = 48, Nk = 48, causal.*the dv \(item 2\)"),
    (skip_bound_off_by_one, r"Nq = 20, Nk = 37, causal, block = 16: the dq \(item 0\)"),
])
def test_11_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_tiled_backward(student)


# --- 11.4 count the tiles ------------------------------------------------------------------


def measure():
    q = torch.randn(1, 1, 1000, 16)
    k, v = torch.randn(1, 1, 1300, 16), torch.randn(1, 1, 1300, 16)
    counts = count_ops(lambda: flash_forward(q, k, v, causal=True, block_q=128, block_k=128))
    return counts["aten::bmm"] // 2, counts.get("aten::masked_fill_", 0) // 2


def test_11_4_right_prediction_and_measurement(capsys):
    check_tiles_predicted(60, 16)
    tiles, masked = measure()
    check_tile_count(60, 16, tiles, masked)
    out = capsys.readouterr().out
    assert "✅ Exercise 11.4 (prediction): recorded 60" in out
    assert "✅ Exercise 11.4: prediction and measurement agree: 60 tiles of 88" in out


@pytest.mark.parametrize("args, verdict", [
    ((..., 16), r"replace the \.\.\. with your prediction of the tiles computed"),
    ((60.0, 16), "must be a whole number of tiles"),
    ((10, 16), "16 masked tiles cannot be more than the 10"),
])
def test_11_4_prediction_must_be_written_down(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_tiles_predicted(*args)


@pytest.mark.parametrize("args, verdict", [
    ((36, 8, 60, 16), r"prediction of the tiles computed, 36, is off by -24 \(40%\)"),
    ((64, 8, 60, 16), r"prediction of the tiles computed, 64, is off by \+4"),
    ((60, 8, 60, 16), r"prediction of the masked tiles, 8, is off by -8"),
    ((60, 16, 120, 16), r"measurement of the tiles computed, 120, is off by \+60"),
    ((60, 16, 60, ...), r"replace the \.\.\. with your measurement of the masked"),
])
def test_11_4_says_which_is_off(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_tile_count(*args)
