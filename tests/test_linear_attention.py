"""Linear attention: the reordering, the three causal forms, the recall experiment."""

import math

import pytest
import torch

from attnbook.attention import causal_mask
from attnbook.linear_attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
    elu_feature_map,
    linear_attention,
    recall_error,
)


def explicit(q, k, v, causal=False):
    """The N x N form, written out: weights phi(q_i) . phi(k_j), normalised per row."""
    sim = elu_feature_map(q) @ elu_feature_map(k).transpose(-2, -1)
    if causal:
        sim = sim.masked_fill(~causal_mask(q.shape[-2]), 0.0)
    return (sim / sim.sum(-1, keepdim=True)) @ v


def qkv(shape_q, n_k, dv, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=g, dtype=torch.float64) * scale
    k = torch.randn(*shape_q[:-2], n_k, shape_q[-1], generator=g, dtype=torch.float64) * scale
    v = torch.randn(*shape_q[:-2], n_k, dv, generator=g, dtype=torch.float64)
    return q, k, v


def test_elu_feature_map_is_positive():
    x = torch.linspace(-50, 50, 101, dtype=torch.float64)
    assert (elu_feature_map(x) > 0).all()
    assert torch.allclose(elu_feature_map(x), torch.nn.functional.elu(x) + 1, atol=1e-15)


@pytest.mark.parametrize("n_q,n_k", [(7, 7), (5, 11), (1, 1)])
def test_non_causal_equals_explicit_form(n_q, n_k):
    q, k, v = qkv((2, 3, n_q, 6), n_k, 4, seed=n_q + n_k)
    assert (linear_attention(q, k, v) - explicit(q, k, v)).abs().max() < 1e-12
    q3, k3, v3 = q[0], k[0], v[0]  # 3-D input
    assert (linear_attention(q3, k3, v3) - explicit(q3, k3, v3)).abs().max() < 1e-12


@pytest.mark.parametrize("n", [1, 2, 13, 64, 101])
def test_three_causal_forms_agree_in_float64(n):
    q, k, v = qkv((2, 3, n, 8), n, 5, seed=n, scale=2.0)
    parallel = causal_linear_attention_parallel(q, k, v)
    assert (parallel - explicit(q, k, v, causal=True)).abs().max() < 1e-10
    assert (causal_linear_attention_recurrent(q, k, v) - parallel).abs().max() < 1e-10
    for chunk in [1, 3, 16, n, n + 5]:  # chunk 1, not dividing n, and >= n
        chunked = causal_linear_attention_chunked(q, k, v, chunk)
        assert (chunked - parallel).abs().max() < 1e-10, chunk
        assert not torch.isnan(chunked).any()


def test_causal_output_ignores_the_future():
    q, k, v = qkv((1, 2, 12, 4), 12, 3, seed=5)
    out = causal_linear_attention_chunked(q, k, v, 5)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 7:] += 1.0
    v2[:, :, 7:] -= 3.0
    assert torch.equal(causal_linear_attention_chunked(q, k2, v2, 5)[:, :, :7], out[:, :, :7])


def test_zero_features_give_zero_not_nan():
    q, k, v = qkv((1, 1, 6, 4), 6, 3, seed=1)
    relu = torch.relu
    q[..., 2, :] = -1.0  # relu gives a zero feature vector: normaliser 0
    for out in [linear_attention(q, k, v, relu), causal_linear_attention_parallel(q, k, v, relu),
                causal_linear_attention_recurrent(q, k, v, relu),
                causal_linear_attention_chunked(q, k, v, 4, relu)]:
        assert not torch.isnan(out).any() and (out[..., 2, :] == 0).all()


def test_bad_input_names_argument_and_shapes():
    q, k, v = qkv((1, 2, 5, 4), 5, 3, seed=0)
    with pytest.raises(ValueError, match=r"q \(1, 2, 5, 4\), k \(1, 2, 5, 3\)"):
        linear_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="as many queries as keys"):
        causal_linear_attention_parallel(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match="chunk_size"):
        causal_linear_attention_chunked(q, k, v, 0)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, lambda x: x.sum(-2))
    with pytest.raises(ValueError, match="method"):
        recall_error("hard", 4, 8, torch.Generator())


def test_recall_softmax_retrieves_and_linear_state_saturates():
    """For generator seeds 0-5: softmax (scale 4 sqrt d) finds the values at every size;
    the fast-weight memory's error is close to (n - 1) / d; linear attention, even with
    q and k scaled by 64 before the feature map, is far off from n = d pairs on."""
    for seed in range(6):
        def g(s=seed):
            return torch.Generator().manual_seed(s)
        for n in [1, 16, 64, 256]:
            assert recall_error("softmax", n, 32, g()) < 1e-3
            fast = recall_error("fast-weight", n, 32, g())
            if n >= 16:
                assert 0.6 < fast / ((n - 1) / 32) < 1.6, (seed, n, fast)
            if n >= 32:
                assert recall_error("linear", n, 32, g(), scale=64.0) > 0.85
        sharp, plain = (recall_error("linear", 2, 32, g(), scale=c) for c in (64.0, 1.0))
        assert sharp < plain  # a sharper feature map helps with few pairs
        assert recall_error("softmax", 16, 32, g(), scale=32**-0.5) > 0.5  # the usual scale
        assert recall_error("linear", 1, 32, g()) < 1e-20
    assert math.isfinite(recall_error("linear", 512, 16, torch.Generator().manual_seed(0)))


def test_recall_scale_is_checked():
    with pytest.raises(ValueError, match="scale"):
        recall_error("softmax", 4, 8, torch.Generator(), scale=0.0)
    with pytest.raises(ValueError, match="fast-weight"):
        recall_error("fast-weight", 4, 8, torch.Generator(), scale=2.0)
