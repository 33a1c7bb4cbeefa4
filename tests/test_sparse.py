"""Sliding-window and sparse masks, their cost, and the cache capped at the window."""

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.lm import KVCache
from attnbook.positional import apply_rope
from attnbook.sparse import (
    SlidingWindowCache,
    decode_step,
    local_global_mask,
    mask_cost,
    sliding_window_mask,
    strided_mask,
)


def window_pairs(n, w):
    """Scored pairs of a causal window w over n tokens."""
    return n * (n + 1) // 2 if w >= n else n * w - w * (w - 1) // 2


def test_sliding_window_mask_by_definition_and_alignment():
    for n_q, n_k, w in [(7, 7, 3), (4, 10, 2), (5, 5, 1), (6, 9, 20), (0, 3, 2)]:
        mask = sliding_window_mask(n_q, n_k, window=w)
        assert mask.shape == (n_q, n_k) and mask.dtype == torch.bool
        for i in range(n_q):
            p = i + n_k - n_q
            for j in range(n_k):
                assert mask[i, j] == (p - w < j <= p)
    assert torch.equal(sliding_window_mask(9, window=9), causal_mask(9))
    assert torch.equal(sliding_window_mask(3, 8, window=100), causal_mask(3, 8))


@pytest.mark.parametrize("n,w", [(1, 1), (10, 3), (17, 17), (17, 40), (64, 8), (33, 1)])
def test_window_cost_equals_its_formula(n, w):
    cost = mask_cost(sliding_window_mask(n, window=w), head_dim=16)
    assert cost["pairs"] == window_pairs(n, w)
    assert cost["dense_pairs"] == n * n
    assert cost["fraction"] == window_pairs(n, w) / (n * n)
    assert cost["flops"] == 4 * 16 * window_pairs(n, w)


def test_local_global_and_strided_costs_equal_their_formulas():
    n, w, g = 40, 4, 3
    # causal: local band of window_pairs; global columns add the keys j < g further than
    # w - 1 behind; global rows add nothing beyond causality (they are the first rows).
    expected = window_pairs(n, w) + sum(max(0, min(g, i - w + 1)) for i in range(n))
    assert mask_cost(local_global_mask(n, window=w, n_global=g))["pairs"] == expected
    mask = local_global_mask(n, window=w, n_global=g, causal=False)
    band = sum(1 for i in range(n) for j in range(n) if abs(i - j) < w)
    outside = sum(1 for i in range(n) for j in range(n) if abs(i - j) >= w and (i < g or j < g))
    assert mask_cost(mask)["pairs"] == band + outside
    assert mask[:g].all() and mask[:, :g].all()  # global tokens see and are seen by all
    s = 5
    strided = strided_mask(n, stride=s)
    # query i: min(i + 1, s) local keys, and i // s strided ones at distances s, 2s, ...
    formula = sum(min(i + 1, s) + i // s for i in range(n))
    assert mask_cost(strided)["pairs"] == formula
    assert not (strided & ~causal_mask(n)).any()


@pytest.mark.parametrize("make", [
    lambda n_q, n_k: sliding_window_mask(n_q, n_k, window=4),
    lambda n_q, n_k: local_global_mask(n_q, n_k, window=3, n_global=2),
    lambda n_q, n_k: strided_mask(n_q, n_k, stride=3),
])
def test_banded_masks_equal_dense_attention_with_that_mask(make):
    g = torch.Generator().manual_seed(0)
    for n_q, n_k in [(13, 13), (5, 13), (1, 9)]:
        q = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64)
        k = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64)
        v = torch.randn(2, 3, n_k, 5, generator=g, dtype=torch.float64)
        mask = make(n_q, n_k)
        ours, weights = scaled_dot_product_attention(q, k, v, mask)
        torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert (ours - torch_out).abs().max() < 1e-12
        assert torch.equal(weights > 0, mask.expand_as(weights))
        assert not torch.isnan(ours).any()


def test_mask_cost_bad_input():
    with pytest.raises(ValueError, match="mask"):
        mask_cost(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        mask_cost(torch.ones(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, window=0)
    with pytest.raises(ValueError, match="n_keys"):
        sliding_window_mask(5, 3, window=2)
    with pytest.raises(ValueError, match="stride"):
        strided_mask(4, stride=True)


@pytest.mark.parametrize("window", [1, 5, 8])
def test_window_cache_equals_full_attention_with_the_window_mask(window):
    """Decode 3.5 windows token by token (several wraps of the ring), keys rotated with
    RoPE before they are stored: every step equals full attention with the mask."""
    g = torch.Generator().manual_seed(window)
    n, heads, d = 4 * window + 3, 2, 8
    positions = torch.arange(n)
    q = apply_rope(torch.randn(1, heads, n, d, generator=g, dtype=torch.float64), positions)
    k = apply_rope(torch.randn(1, heads, n, d, generator=g, dtype=torch.float64), positions)
    v = torch.randn(1, heads, n, d, generator=g, dtype=torch.float64)
    expected, _ = scaled_dot_product_attention(q, k, v, sliding_window_mask(n, window=window))
    ring = SlidingWindowCache(1, 1, heads, window, d, dtype=torch.float64)
    full = KVCache(1, 1, heads, n, d, dtype=torch.float64)
    for t in range(n):
        step = slice(t, t + 1)
        out = decode_step(q[:, :, step], k[:, :, step], v[:, :, step], ring)
        assert (out - expected[:, :, step]).abs().max() < 1e-12, t
        dense = decode_step(q[:, :, step], k[:, :, step], v[:, :, step], full)
        causal_out, _ = scaled_dot_product_attention(q[:, :, step], k[:, :, : t + 1],
                                                     v[:, :, : t + 1])
        assert (dense - causal_out).abs().max() < 1e-12
    assert ring.length == full.length == n
    assert ring.nbytes() == 2 * heads * window * d * 8


def test_window_cache_layers_and_bad_input():
    cache = SlidingWindowCache(2, 1, 2, 4, 8)
    k = torch.randn(1, 2, 1, 8)
    keys, values = cache.update(1, k, k)
    assert keys.shape == (1, 2, 1, 8) and torch.equal(keys[:, :, 0], k[:, :, 0])
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 8\)"):
        cache.update(0, torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match="layer"):
        cache.update(2, k, k)
    with pytest.raises(ValueError, match="window"):
        SlidingWindowCache(1, 1, 1, 0, 8)
    with pytest.raises(ValueError, match="one position"):
        decode_step(torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8),
                    cache)
