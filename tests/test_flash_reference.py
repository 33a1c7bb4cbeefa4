"""Tests of attnbook.flash.reference: the online softmax and tiled attention in PyTorch.

The tiled algorithm is checked against autograd of plain attention
(attnbook.attention.scaled_dot_product_attention with the causal mask, key and
value heads repeated for grouped-query heads) in float64 to 1e-10: outputs and
all three gradients, for lengths 1, 17, 100 and 1000, unequal query and key
lengths, causal and not, and grouped-query heads.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.flash.reference import (
    BLOCK_K,
    BLOCK_Q,
    TiledAttention,
    check_flash_inputs,
    flash_backward,
    flash_forward,
    forward_tile_step,
    online_logsumexp,
    online_softmax,
    online_softmax_update,
    tile_schedule,
    tiled_attention,
)

TOL = 1e-10


def plain_attention(q, k, v, causal=False, scale=None):
    """The book's plain attention, with k/v heads repeated for grouped-query heads."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = causal_mask(q.shape[2], k.shape[2]) if causal else None
    return scaled_dot_product_attention(q, k, v, mask, scale)[0]


def make_qkv(seed, b, h, h_kv, n_q, n_k, d, dv=None, dtype=torch.float64, size=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n_q, d, generator=g, dtype=dtype) * size
    k = torch.randn(b, h_kv, n_k, d, generator=g, dtype=dtype)
    v = torch.randn(b, h_kv, n_k, dv or d, generator=g, dtype=dtype)
    grad_out = torch.randn(b, h, n_q, dv or d, generator=g, dtype=dtype)
    return q, k, v, grad_out


def outputs_and_grads(fn, q, k, v, grad_out, *args):
    """fn(q, k, v, *args) and its gradients in q, k, v for the output gradient grad_out."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, *args)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def assert_close(ours, theirs, tol=TOL):
    for name, a, b in zip(["out", "dq", "dk", "dv"], ours, theirs):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.isfinite(a).all(), name
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert err <= tol, f"{name}: max error {err:.3g} > {tol}"


# ---------------------------------------------------------------- the online softmax

@pytest.mark.parametrize("block", [1, 3, 7, 64, 1000])
def test_online_softmax_equals_softmax(block):
    g = torch.Generator().manual_seed(block)
    x = torch.randn(4, 5, 37, generator=g, dtype=torch.float64) * 50  # logits in the hundreds
    assert (online_softmax(x, block) - torch.softmax(x, dim=-1)).abs().max() < 1e-12
    assert (online_logsumexp(x, block) - torch.logsumexp(x, dim=-1)).abs().max() < 1e-12


def test_online_softmax_masked_entries_and_empty_rows():
    x = torch.randn(3, 10, dtype=torch.float64)
    x[0, :6] = float("-inf")  # the first block(s) of row 0 hold nothing
    x[1] = float("-inf")  # row 1 holds nothing at all
    got = online_softmax(x, 4)
    assert torch.isfinite(got).all()
    assert torch.equal(got[1], torch.zeros(10, dtype=torch.float64))
    assert torch.allclose(got[[0, 2]], torch.softmax(x[[0, 2]], dim=-1), atol=1e-15)


def test_online_softmax_update_rescales_the_old_sum():
    m, s = torch.tensor([1.0]), torch.tensor([2.0])  # sum_j exp(x_j - 1) = 2 so far
    m2, s2 = online_softmax_update(m, s, torch.tensor([[3.0]]))
    assert m2.item() == 3.0
    assert math.isclose(s2.item(), 2 * math.exp(-2) + 1, rel_tol=1e-6)


def test_online_softmax_rejects_bad_blocks():
    with pytest.raises(ValueError, match="block_size"):
        online_softmax(torch.randn(3, 4), 0)


# ---------------------------------------------------------------- the 1e-10 grid

LENGTHS = [(1, 1), (17, 17), (100, 100), (1000, 1000),  # equal lengths
           (1, 17), (17, 100), (100, 1000), (1, 1000)]  # fewer queries than keys
HEADS = [(2, 2), (4, 2), (3, 1)]  # (H, H_kv): multi-head, grouped-query, multi-query
# Length 1000 in float64 is the slow part: there, grouped-query heads only (H_kv = 1 and 2).
GRID = [(n_q, n_k, heads) for n_q, n_k in LENGTHS for heads in HEADS
        if n_k < 1000 or heads != (2, 2)]


@pytest.mark.parametrize("n_q, n_k, heads", GRID)
@pytest.mark.parametrize("causal", [False, True])
def test_matches_autograd_of_plain_attention_float64(n_q, n_k, heads, causal):
    h, h_kv = heads
    b = 2 if n_k < 1000 else 1
    q, k, v, grad_out = make_qkv(n_q * 7 + n_k + h, b, h, h_kv, n_q, n_k, 16, dv=8)
    theirs = outputs_and_grads(lambda q, k, v: plain_attention(q, k, v, causal), q, k, v,
                               grad_out)
    # One tile (the defaults; two tiles at 1000) and tiles that do not divide the lengths.
    blocks = [(BLOCK_Q, BLOCK_K), (16, 24)] if n_k < 1000 else [(BLOCK_Q, BLOCK_K)]
    for block_q, block_k in blocks:
        ours = outputs_and_grads(tiled_attention, q, k, v, grad_out, causal, None, block_q,
                                 block_k)
        assert_close(ours, theirs)


@pytest.mark.parametrize("n_q, n_k", [(100, 17), (1000, 1), (17, 1000)])
def test_more_queries_than_keys_without_causal(n_q, n_k):
    q, k, v, grad_out = make_qkv(n_q + n_k, 1, 4, 2, n_q, n_k, 8)
    theirs = outputs_and_grads(plain_attention, q, k, v, grad_out)
    ours = outputs_and_grads(lambda q, k, v: tiled_attention(q, k, v, block_q=64, block_k=32),
                             q, k, v, grad_out)
    assert_close(ours, theirs)


def test_forward_log_sum_exp():
    q, k, v, _ = make_qkv(3, 2, 4, 2, 33, 50, 8)
    for causal in (False, True):
        out, lse = flash_forward(q, k, v, causal, scale=0.3, block_q=8, block_k=16)
        scores = 0.3 * q @ k.repeat_interleave(2, dim=1).transpose(-2, -1)
        if causal:
            scores = scores.masked_fill(~causal_mask(33, 50), float("-inf"))
        assert lse.shape == (2, 4, 33) and lse.dtype == torch.float64
        assert (lse - torch.logsumexp(scores, dim=-1)).abs().max() < TOL
        assert (out - plain_attention(q, k, v, causal, scale=0.3)).abs().max() < TOL


def test_scale_matters_and_gradcheck():
    q, k, v, grad_out = make_qkv(5, 1, 2, 1, 9, 11, 4)
    for causal in (False, True):
        theirs = outputs_and_grads(plain_attention, q, k, v, grad_out, causal, 2.5)
        ours = outputs_and_grads(tiled_attention, q, k, v, grad_out, causal, 2.5, 4, 3)
        assert_close(ours, theirs)
    inputs = tuple(t.clone().requires_grad_() for t in (q[:, :, :5], k[:, :, :6], v[:, :, :6]))
    assert torch.autograd.gradcheck(lambda q, k, v: tiled_attention(q, k, v, True, None, 2, 4),
                                    inputs)


def test_backward_called_directly():
    q, k, v, grad_out = make_qkv(6, 2, 4, 1, 40, 70, 8, dv=5)
    out, lse = flash_forward(q, k, v, causal=True, block_q=16, block_k=16)
    grads = flash_backward(q, k, v, out, lse, grad_out, causal=True, block_q=8, block_k=32)
    theirs = outputs_and_grads(lambda q, k, v: plain_attention(q, k, v, True), q, k, v,
                               grad_out)
    assert_close((out, *grads), theirs)


def test_against_torch_sdpa_and_its_causal_alignment():
    q, k, v, _ = make_qkv(7, 2, 3, 3, 40, 40, 16)
    for causal in (False, True):
        ours = tiled_attention(q, k, v, causal, block_q=16, block_k=16)
        assert (ours - F.scaled_dot_product_attention(q, k, v, is_causal=causal)).abs().max() < TOL
    # Unequal lengths: ours is bottom-right aligned; torch's is_causal is top-left.
    q = q[:, :, :10]
    ours = tiled_attention(q, k, v, True, block_q=16, block_k=16)
    bottom_right = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(10, 40))
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (ours - bottom_right).abs().max() < TOL
    assert (ours - top_left).abs().max() > 0.1


def test_lower_precisions():
    q, k, v, grad_out = make_qkv(8, 1, 4, 2, 70, 90, 32, dtype=torch.float64)
    theirs = outputs_and_grads(lambda q, k, v: plain_attention(q, k, v, True), q, k, v,
                               grad_out)
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 0.1), (torch.float16, 0.02)]:
        low = [t.to(dtype) for t in (q, k, v, grad_out)]
        ours = outputs_and_grads(lambda q, k, v: tiled_attention(q, k, v, True, None, 32, 32),
                                 *low)
        assert all(t.dtype == dtype for t in ours)
        assert_close([t.double() for t in ours], theirs, tol)
        _, lse = flash_forward(*low[:3], block_q=32, block_k=32)
        assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_no_nan_from_huge_logits_or_single_keys():
    q, k, v, grad_out = make_qkv(9, 1, 2, 2, 50, 50, 8, size=1e4)  # logits around 1e4
    ours = outputs_and_grads(lambda q, k, v: tiled_attention(q, k, v, True, None, 16, 16),
                             q, k, v, grad_out)
    assert all(torch.isfinite(t).all() for t in ours)
    theirs = outputs_and_grads(lambda q, k, v: plain_attention(q, k, v, True), q, k, v,
                               grad_out)
    assert (ours[0] - theirs[0]).abs().max() < 1e-8
    # The first query of a causal square problem sees one key: its output is that value.
    out = tiled_attention(*make_qkv(10, 1, 1, 1, 30, 30, 4)[:3], causal=True, block_k=8)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_future_values_never_change_earlier_outputs(dtype):
    """Exactly: the masked weights are exact zeros, not merely tiny (float32 masked tiles
    are exponentiated from a floor and zeroed after)."""
    q, k, v, grad_out = make_qkv(16, 1, 2, 1, 40, 40, 8, dtype=dtype)
    out = tiled_attention(q, k, v, True, None, 16, 16)
    changed = v.clone()
    changed[:, :, 30:] += 1e6  # keys 30 and on: hidden from queries 0 to 29
    out_changed = tiled_attention(q, k, changed, True, None, 16, 16)
    assert torch.equal(out[:, :, :30], out_changed[:, :, :30])
    assert not torch.equal(out[:, :, 30:], out_changed[:, :, 30:])
    q, k, changed = (t.clone().requires_grad_() for t in (q, k, changed))
    dq, dk, dv = torch.autograd.grad(tiled_attention(q, k, changed, True, None, 16, 16)[:, :, :20],
                                     (q, k, changed), grad_out[:, :, :20])
    assert torch.equal(dk[:, :, 20:], torch.zeros_like(dk[:, :, 20:]))  # keys no query used
    assert torch.equal(dv[:, :, 20:], torch.zeros_like(dv[:, :, 20:]))


def test_non_contiguous_inputs_and_empty_queries():
    q, k, v, grad_out = make_qkv(11, 2, 4, 2, 33, 33, 8)
    qt, kt, vt = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert not qt.is_contiguous()
    assert (tiled_attention(qt, kt, vt, True, None, 8, 8)
            - plain_attention(q, k, v, True)).abs().max() < TOL
    out, lse = flash_forward(q[:, :, :0], k, v, causal=True)
    assert out.shape == (2, 4, 0, 8) and lse.shape == (2, 4, 0)
    dq, dk, dv = flash_backward(q[:, :, :0], k, v, out, lse, grad_out[:, :, :0], True)
    assert dq.shape == (2, 4, 0, 8) and torch.equal(dk, torch.zeros_like(k))
    assert torch.equal(dv, torch.zeros_like(v))
    empty = q[:, :, :0].clone().requires_grad_()
    (grad,) = torch.autograd.grad(tiled_attention(empty, k, v).sum(), empty)
    assert grad.shape == (2, 4, 0, 8)


def test_half_precision_is_cast_before_it_is_scaled():
    """q * scale in bfloat16 would round twice; the reference scales in float32."""
    q, k, v, _ = make_qkv(17, 1, 1, 1, 8, 8, 16, dtype=torch.float32)
    q16, k16, v16 = (t.to(torch.bfloat16) for t in (q, k, v))
    scale = 0.3  # not a power of two: q * scale rounds in bfloat16
    _, lse = flash_forward(q16, k16, v16, scale=scale)
    scores = (q16.float() * scale) @ k16.float().transpose(-2, -1)
    assert (lse - torch.logsumexp(scores, dim=-1)).abs().max() < 1e-5
    rounded = (q16 * scale).float() @ k16.float().transpose(-2, -1)
    assert (torch.logsumexp(rounded, dim=-1) - torch.logsumexp(scores, dim=-1)).abs().max() > 1e-4


def test_causal_masks_are_built_once_per_pattern():
    """The diagonal tiles of a square problem share one mask: the forward builds it once."""
    from attnbook.flash.reference import _tile_hidden

    cache: dict = {}
    first = _tile_hidden(0, 16, 0, 16, 0, 2, "cpu", cache)
    assert _tile_hidden(32, 48, 32, 48, 0, 2, "cpu", cache) is first and len(cache) == 1
    assert first.shape == (32, 16) and torch.equal(first[:16], first[16:])
    assert torch.equal(first[:16], torch.ones(16, 16, dtype=torch.bool).triu(1))
    shifted = _tile_hidden(0, 16, 16, 32, 20, 1, "cpu", cache)  # query i sees key j <= i + 20
    rows, keys = torch.arange(16)[:, None], torch.arange(16, 32)[None, :]
    assert torch.equal(shifted, keys > rows + 20) and len(cache) == 2
    assert _tile_hidden(0, 16, 0, 16, 20, 1, "cpu", cache) is None  # wholly visible


def test_autograd_function_saves_only_linear_memory():
    q, k, v, _ = make_qkv(12, 1, 2, 1, 64, 64, 8)
    q.requires_grad_()
    out = TiledAttention.apply(q, k, v, False, None, 16, 16)
    saved = out.grad_fn.saved_tensors
    assert max(t.numel() for t in saved) == q.numel()  # q, k, v, out, lse: never 64 x 64


def test_memory_is_linear_in_length():
    """No single allocation of the forward or backward grows as Nq x Nk."""
    n, block = 512, 64
    q, k, v, grad_out = make_qkv(13, 1, 1, 1, n, n, 16, dtype=torch.float32)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out, lse = flash_forward(q, k, v, block_q=block, block_k=block)
        flash_backward(q, k, v, out, lse, grad_out, block_q=block, block_k=block)
    biggest = max(event.cpu_memory_usage for event in prof.events())
    # One tile (block x block) or one (n, d) tensor such as dq; the scores would be n x n.
    assert 0 < biggest <= max(block * block, n * 16) * 4 < n * n * 4, biggest


def test_tile_schedule_is_what_the_forward_computes():
    """Two products per listed tile, two masked_fill_ per masked tile (profiled): the
    hidden scores to -inf before the maximum, their exponentials to 0 after it."""
    from torch.profiler import ProfilerActivity, profile

    q, k, v, _ = make_qkv(14, 1, 2, 1, 100, 130, 8)
    for causal in (False, True):
        tiles = tile_schedule(100, 130, 32, 24, causal)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            flash_forward(q, k, v, causal, block_q=32, block_k=24)
        counts = {e.key: e.count for e in prof.key_averages()}
        assert counts["aten::bmm"] == 2 * len(tiles)  # S = Q K^T and P V
        assert counts.get("aten::masked_fill_", 0) == 2 * sum(t[4] for t in tiles)
    # Nq = 1000, Nk = 1300, blocks of 128: 60 tiles, 16 on the diagonal; 8 x 11 = 88 in all.
    causal = tile_schedule(1000, 1300, 128, 128, causal=True)
    assert len(causal) == 60 and sum(t[4] for t in causal) == 16
    assert len(tile_schedule(1000, 1300, 128, 128)) == 88
    with pytest.raises(ValueError, match="q length 5, k length 4"):
        tile_schedule(5, 4, causal=True)


def test_forward_tile_step_from_an_empty_start_and_fully_masked_rows():
    g = torch.Generator().manual_seed(15)
    scores = torch.randn(3, 6, generator=g, dtype=torch.float64)
    scores[1] = float("-inf")  # row 1 sees nothing in this tile
    v = torch.randn(6, 2, generator=g, dtype=torch.float64)
    acc, m, s = torch.zeros(3, 2, dtype=torch.float64), torch.full((3,), float("-inf"),
                                                                     dtype=torch.float64), \
        torch.zeros(3, dtype=torch.float64)
    expected = torch.softmax(scores[[0, 2]], dim=-1) @ v
    acc, m, s = forward_tile_step(acc, m, s, scores.clone(), v)
    assert torch.isfinite(acc).all() and s[1] == 0 and m[1] == float("-inf")
    assert torch.allclose((acc / s[:, None])[[0, 2]], expected, atol=1e-14)


# ---------------------------------------------------------------- bad input

BAD = [
    (dict(q=torch.randn(3, 5, 4)), "q must be a 4-D tensor"),
    (dict(k=torch.randn(1, 2, 5, 4, dtype=torch.float64)), "share one dtype"),
    (dict(v=torch.ones(1, 2, 5, 4, dtype=torch.int64)), "v must be float16"),
    (dict(q=torch.randn(2, 3, 5, 4)), "batch size"),
    (dict(q=torch.randn(1, 3, 5, 4)), "multiple of the key/value"),
    (dict(v=torch.randn(1, 2, 6, 4)), "k and v must have the same heads and length"),
    (dict(q=torch.randn(1, 2, 5, 3)), "same head dimension"),
    (dict(k=torch.randn(1, 2, 0, 4), v=torch.randn(1, 2, 0, 4)), "at least one key"),
    (dict(q=torch.randn(1, 2, 6, 4), causal=True), "q length 6, k length 5"),
]


@pytest.mark.parametrize("change, message", BAD)
def test_bad_input_names_argument_and_shapes(change, message):
    args = dict(q=torch.randn(1, 2, 5, 4), k=torch.randn(1, 2, 5, 4),
                v=torch.randn(1, 2, 5, 4), causal=False) | change
    for fn in (check_flash_inputs, flash_forward, tiled_attention):
        with pytest.raises(ValueError, match=message) as error:
            fn(**args)
        assert "(" in str(error.value) or "dtype" in str(error.value)


def test_bad_options():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="block_q"):
        flash_forward(q, q, q, block_q=0)
    with pytest.raises(ValueError, match="block_k"):
        flash_forward(q, q, q, block_k=2.5)
    with pytest.raises(ValueError, match="scale"):
        tiled_attention(q, q, q, scale=-1.0)
    out, lse = flash_forward(q, q, q)
    with pytest.raises(ValueError, match=r"lse must have shape \(1, 2, 5\)"):
        flash_backward(q, q, q, out, lse[..., :4], out)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        flash_backward(q, q, q, out, lse, out[:, :1])
