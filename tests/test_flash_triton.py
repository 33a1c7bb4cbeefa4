"""The Triton FlashAttention kernels, run in Triton's interpreter on the CPU.

Forward and the three gradients against autograd of plain attention in float64, for
odd and unequal lengths, both causal settings, grouped-query heads and every head
dimension the kernels accept. A backward that ignores the causal flag (a bug published
kernels have had) fails these tests: `test_a_backward_that_ignores_causal_is_caught`
shows it.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from attnbook.attention import causal_mask  # noqa: E402
from attnbook.flash import (
    flash_attention,  # noqa: E402
    triton_kernels,  # noqa: E402
)
from attnbook.flash import function as flash_function  # noqa: E402

pytestmark = pytest.mark.skipif(not triton_kernels.INTERPRETED,
                                reason="these tests run the kernels in Triton's interpreter (CPU)")

# (n_queries, n_keys, heads, kv_heads): lengths of 1, odd lengths, lengths that are not
# multiples of the tile, more keys than queries, grouped-query and multi-query heads.
SHAPES = [(1, 1, 1, 1), (17, 17, 2, 2), (33, 33, 2, 2), (40, 40, 4, 2), (19, 50, 2, 1), (16, 64, 4, 1)]
HEAD_DIMS = [16, 32, 64, 128]


def plain_attention(q, k, v, causal):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2]), float("-inf"))
    return scores.softmax(-1) @ v


def inputs(n_queries, n_keys, heads, kv_heads, head_dim, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n_queries, head_dim, generator=generator)
    k = torch.randn(batch, kv_heads, n_keys, head_dim, generator=generator)
    v = torch.randn(batch, kv_heads, n_keys, head_dim, generator=generator)
    grad = torch.randn(batch, heads, n_queries, head_dim, generator=generator)
    return q, k, v, grad


def value_and_grads(fn, q, k, v, grad, causal):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, causal)
    return [out.detach(), *torch.autograd.grad(out, (q, k, v), grad)]


def assert_matches_reference(results, q, k, v, grad, causal, atol=2e-5):
    expected = value_and_grads(plain_attention, q.double(), k.double(), v.double(), grad.double(), causal)
    for name, got, want in zip(["output", "dq", "dk", "dv"], results, expected):
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        error = (got.double() - want).abs().max().item()
        assert error < atol, f"{name}: max error {error:.2e}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "q{}-k{}-h{}-kv{}".format(*s))
def test_forward_and_gradients_match_plain_attention(shape, head_dim, causal):
    q, k, v, grad = inputs(*shape, head_dim)
    ours = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3]), q, k, v, grad, causal)
    assert_matches_reference(ours, q, k, v, grad, causal)


def test_log_sum_exp_is_that_of_each_row():
    q, k, v, _ = inputs(21, 30, 2, 2, 16)
    _, lse = flash_function.flash_forward_triton(q, k, v, causal=True, scale=0.25, autotune=False)
    scores = (q @ k.transpose(-1, -2) * 0.25).masked_fill(~causal_mask(21, 30), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=1e-5, rtol=1e-5)


def test_scale_is_used():
    q, k, v, grad = inputs(9, 9, 1, 1, 16)
    ours = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3], scale=0.5), q, k, v, grad, False)
    # scale 0.5 with head_dim 16 equals the default scale with q multiplied by 2
    theirs = value_and_grads(lambda *a: flash_attention(a[0] * 2.0, *a[1:3], causal=a[3]),
                             q, k, v, grad, False)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-5)


def test_a_backward_that_ignores_causal_is_caught(monkeypatch):
    """The gradient tests above fail for a backward that drops the causal flag."""
    q, k, v, grad = inputs(17, 17, 2, 2, 16)
    real_backward = flash_function.flash_backward_triton

    def backward_without_causal(q, k, v, out, lse, grad_out, causal, scale, autotune):
        return real_backward(q, k, v, out, lse, grad_out, False, scale, autotune)
    monkeypatch.setattr(flash_function, "flash_backward_triton", backward_without_causal)
    buggy = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3]), q, k, v, grad, True)
    with pytest.raises(AssertionError, match="dq|dk|dv"):
        assert_matches_reference(buggy, q, k, v, grad, True)


def test_no_nan_for_rows_at_every_tile_boundary():
    q, k, v, grad = inputs(31, 31, 1, 1, 16)
    q[..., 0, :] = 1e4  # a huge logit: the running maximum must keep exp() finite
    ours = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3]), q, k, v, grad, True)
    assert all(torch.isfinite(x).all() for x in ours)


def test_empty_query_gives_empty_output():
    q, k, v, _ = inputs(1, 5, 1, 1, 16)
    assert flash_attention(q[:, :, :0], k, v).shape == (2, 1, 0, 16)


@pytest.mark.parametrize("change, message", [
    (lambda q, k, v: (q[0], k, v), "q must be a 4-D tensor"),
    (lambda q, k, v: (q, k, v[:, :, :3]), "k and v must have the same shape"),
    (lambda q, k, v: (q[..., :8].contiguous(), k[..., :8].contiguous(), v[..., :8].contiguous()),
     "head_dim must be one of"),
    (lambda q, k, v: (q, k[:1], v[:1]), "must agree in batch and head_dim"),
    (lambda q, k, v: (q[:, :3], k, v), r"q's heads \(3\) must be a multiple of k's heads \(2\)"),
    (lambda q, k, v: (q.double(), k.double(), v.double()), "float32 CPU tensors"),
    (lambda q, k, v: (q.half(), k.half(), v.half()), "float32 CPU tensors"),
    (lambda q, k, v: (q, k.double(), v), "must have one dtype"),
    (lambda q, k, v: (q, k[:, :, :0], v[:, :, :0]), "at least one key"),
])
def test_bad_input_is_named(change, message):
    q, k, v, _ = inputs(6, 6, 4, 2, 16)
    with pytest.raises(ValueError, match=message):
        flash_attention(*change(q, k, v))


def test_causal_needs_as_many_keys_as_queries():
    q, k, v, _ = inputs(8, 5, 1, 1, 16)
    with pytest.raises(ValueError, match=r"causal attention needs at least as many keys as queries"):
        flash_attention(q, k, v, causal=True)


def test_empty_query_is_differentiable():
    q, k, v, _ = inputs(1, 5, 1, 1, 16)
    q, k, v = (x.requires_grad_() for x in (q[:, :, :0].clone(), k, v))
    out = flash_attention(q, k, v)
    out.sum().backward()
    assert q.grad.shape == q.shape and (k.grad == 0).all() and (v.grad == 0).all()


def test_non_contiguous_inputs_and_gradients():
    q, k, v, grad = inputs(13, 13, 2, 2, 16)
    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))  # strided views
    assert not q.is_contiguous()
    ours = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3]), q, k, v,
                           grad.transpose(-1, -2).contiguous().transpose(-1, -2), True)
    assert_matches_reference(ours, q, k, v, grad, True)
