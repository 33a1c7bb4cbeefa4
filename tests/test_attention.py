"""Tests of attnbook.attention's core: masks, masked softmax, scaled dot-product attention.

The rest of the book builds on these functions, so they are tested hardest:
against PyTorch's own `scaled_dot_product_attention` on random shapes and masks
(hypothesis), for causality, for fully masked rows, for large logits, and for
the errors that bad input raises.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention import (
    causal_mask,
    check_mask,
    check_qkv,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


# ---------------------------------------------------------------- random problems

@st.composite
def problems(draw, dtype=torch.float64):
    """q, k, v of random shapes, a mask of a random broadcastable shape (or None),
    and the scale to use. Lengths include 1, odd and unequal lengths."""
    batch = draw(st.integers(1, 3))
    heads = draw(st.integers(1, 3))
    lq = draw(st.sampled_from([1, 2, 3, 5, 7, 8]))
    lk = draw(st.sampled_from([1, 2, 3, 5, 7, 8]))
    d = draw(st.sampled_from([1, 2, 3, 4, 7, 16]))
    dv = draw(st.sampled_from([1, 3, 4, 8]))
    logit_size = draw(st.sampled_from([1.0, 10.0, 300.0]))  # 300: logits in the thousands
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, lq, d, generator=g, dtype=dtype) * logit_size
    k = torch.randn(batch, heads, lk, d, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, lk, dv, generator=g, dtype=dtype)

    kind = draw(st.sampled_from(["none", "bool", "additive"]))
    mask = None
    if kind != "none":
        # Each of (B, H, Lq, Lk) kept or broadcast (1); leading dimensions maybe dropped.
        full = (batch, heads, lq, lk)
        shape = tuple(n if draw(st.booleans()) else 1 for n in full)
        shape = shape[draw(st.integers(0, 2)):]
        allowed = torch.rand(shape, generator=g) < draw(st.sampled_from([0.3, 0.7, 1.0]))
        if draw(st.booleans()) and shape[-2] > 1:
            allowed[..., 0, :] = False  # a fully masked row of queries
        if kind == "bool":
            mask = allowed
        else:
            bias = torch.randn(shape, generator=g, dtype=dtype)
            mask = torch.where(allowed, bias, torch.full_like(bias, float("-inf")))
    scale = draw(st.sampled_from([None, None, 0.5, 1.0]))
    return q, k, v, mask, scale


def fully_masked_rows(mask, scores_shape):
    """(..., Lq) boolean: True where a query may attend to no key at all."""
    if mask is None:
        return torch.zeros(scores_shape[:-1], dtype=torch.bool)
    allowed = mask if mask.dtype == torch.bool else torch.isfinite(mask)
    return ~allowed.expand(scores_shape).any(-1)


# ---------------------------------------------------------------- against PyTorch

@SETTINGS
@given(problems())
def test_matches_pytorch_on_rows_that_attend(problem):
    q, k, v, mask, scale = problem
    out, weights = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    assert out.shape == (*q.shape[:-1], v.shape[-1])
    assert weights.shape == (*q.shape[:-1], k.shape[-2])
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()

    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    dead = fully_masked_rows(mask, weights.shape)  # (B, H, Lq)
    torch.testing.assert_close(out[~dead], expected[~dead], rtol=1e-9, atol=1e-9)
    # Rows with keys to attend to sum to one; masked entries get exactly zero weight.
    torch.testing.assert_close(weights.sum(-1)[~dead], torch.ones_like(weights.sum(-1)[~dead]))
    if mask is not None:
        allowed = mask if mask.dtype == torch.bool else torch.isfinite(mask)
        assert (weights[~allowed.expand(weights.shape)] == 0).all()
    # Fully masked rows: zero weights, zero output, never NaN.
    assert (weights[dead] == 0).all() and (out[dead] == 0).all()


@SETTINGS
@given(problems())
def test_gradients_are_finite_and_zero_through_fully_masked_rows(problem):
    q, k, v, mask, scale = problem
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out, _ = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (out * upstream).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    dead = fully_masked_rows(mask, (*q.shape[:-1], k.shape[-2]))
    assert (q.grad[dead] == 0).all()


@SETTINGS
@given(problems())
def test_gradients_match_pytorch_when_no_row_is_fully_masked(problem):
    q, k, v, mask, scale = problem
    if fully_masked_rows(mask, (*q.shape[:-1], k.shape[-2])).any():
        return
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    theirs = [t.clone().requires_grad_() for t in (q, k, v)]
    out, _ = scaled_dot_product_attention(*ours, mask, scale=scale)
    expected = F.scaled_dot_product_attention(*theirs, attn_mask=mask, scale=scale)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-7)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(problems(dtype=torch.float32))
def test_float32_matches_float64(problem):
    q, k, v, mask, scale = problem
    out32, w32 = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    mask64 = mask.double() if mask is not None and mask.is_floating_point() else mask
    out64, w64 = scaled_dot_product_attention(q.double(), k.double(), v.double(), mask64, scale=scale)
    assert out32.dtype == w32.dtype == torch.float32
    # Logits in the thousands: float32 rounds each score by up to ~1e-4, which moves
    # a weight by as much; the output stays close.
    torch.testing.assert_close(w32.double(), w64, rtol=0, atol=2e-3)
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-2)


def test_boolean_and_additive_masks_agree():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g) for n in (5, 6, 6))
    allowed = torch.rand(2, 1, 5, 6, generator=g) < 0.5
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    out_bool, w_bool = scaled_dot_product_attention(q, k, v, allowed)
    out_add, w_add = scaled_dot_product_attention(q, k, v, additive)
    torch.testing.assert_close(out_bool, out_add)
    torch.testing.assert_close(w_bool, w_add)


def test_works_without_batch_or_head_dimensions():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(3, 5))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(3, 5)))
    assert weights.shape == (3, 5)


# ---------------------------------------------------------------- large logits, low precision

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_masked_softmax_survives_logits_that_overflow_exp(dtype):
    # exp(12) overflows float16 and exp(100) float32: the naive softmax gives NaN here.
    logits = torch.tensor([[12.0, 11.0, 10.0], [100.0, 101.0, 102.0], [-1e4, -1e4 - 1, -1e4 - 2]])
    weights = masked_softmax(logits.to(dtype))
    expected = torch.softmax(logits.to(dtype).double(), dim=-1)  # of the logits as rounded to dtype
    assert weights.dtype == dtype
    assert torch.isfinite(weights).all()
    tolerance = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(weights.double(), expected, rtol=0, atol=tolerance)


def test_float16_attention_with_a_large_dot_product_does_not_overflow():
    # q . k = 64 * 40 * 40 = 102400 overflows float16 (max 65504), q . k / 8 does not.
    q = torch.full((1, 2, 64), 40.0, dtype=torch.float16)
    k = torch.full((1, 3, 64), 40.0, dtype=torch.float16)
    v = torch.arange(6, dtype=torch.float16).reshape(1, 3, 2)
    out, weights = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(weights.float(), torch.full((1, 2, 3), 1 / 3), rtol=0, atol=1e-3)


def test_masked_softmax_matches_torch_softmax_along_any_dim():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    for dim in (0, 1, -1):
        torch.testing.assert_close(masked_softmax(scores, dim=dim), torch.softmax(scores, dim=dim))


def test_masked_softmax_of_a_fully_masked_row_is_zero_with_zero_gradient():
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True])[:, None].expand(3, 4)
    weights = masked_softmax(scores, mask)
    assert (weights[1] == 0).all()
    torch.testing.assert_close(weights[[0, 2]].sum(-1), torch.ones(2, dtype=torch.float64))
    (weights * torch.randn(3, 4, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1] == 0).all()


# ---------------------------------------------------------------- causality and padding

@SETTINGS
@given(st.integers(1, 9), st.integers(0, 4), st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_changing_a_future_position_never_changes_an_earlier_output(n_queries, extra_keys, d, seed, data):
    """Queries are the last n_queries of n_keys positions (as with a cache of earlier keys)."""
    n_keys = n_queries + extra_keys
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, n_queries, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, n_keys, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, n_keys, 3, generator=g, dtype=torch.float64)
    mask = causal_mask(n_queries, n_keys)
    out, _ = scaled_dot_product_attention(q, k, v, mask)

    changed = data.draw(st.integers(0, n_keys - 1), label="changed key position")
    k2, v2 = k.clone(), v.clone()
    k2[:, changed] = torch.randn(2, d, generator=g, dtype=torch.float64) * 100
    v2[:, changed] = torch.randn(2, 3, generator=g, dtype=torch.float64) * 100
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask)
    # Query i sits at position i + extra_keys; only queries at or after `changed` may move.
    earlier = torch.arange(n_queries) + extra_keys < changed
    assert torch.equal(out[:, earlier], out2[:, earlier])


@SETTINGS
@given(st.integers(2, 9), st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_causal_self_attention_ignores_the_future_of_its_input(length, d, seed, data):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, d, generator=g, dtype=torch.float64)
    w_q, w_k, w_v = (torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(3))

    def self_attention(x):
        return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, causal_mask(length))[0]

    t = data.draw(st.integers(1, length - 1), label="changed position")
    x2 = x.clone()
    x2[:, t:] = torch.randn(1, length - t, d, generator=g, dtype=torch.float64)
    assert torch.equal(self_attention(x)[:, :t], self_attention(x2)[:, :t])


@SETTINGS
@given(st.lists(st.integers(1, 7), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_padded_keys_never_change_real_outputs(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    batch, max_len = len(lengths), max(lengths)
    lengths_t = torch.tensor(lengths)
    q = torch.randn(batch, 2, 3, generator=g, dtype=torch.float64)
    k = torch.randn(batch, max_len, 3, generator=g, dtype=torch.float64)
    v = torch.randn(batch, max_len, 2, generator=g, dtype=torch.float64)
    mask = padding_mask(lengths_t, max_len)[:, None, :]  # (B, 1, Lk): every query, real keys only
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    for b, n in enumerate(lengths):
        alone, _ = scaled_dot_product_attention(q[b], k[b, :n], v[b, :n])
        torch.testing.assert_close(out[b], alone)
        assert (weights[b, :, n:] == 0).all()


# ---------------------------------------------------------------- the mask helpers

def test_padding_mask_values():
    mask = padding_mask(torch.tensor([3, 1, 0]), 4)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_causal_mask_square_is_lower_triangular():
    for n in (1, 2, 5):
        assert torch.equal(causal_mask(n), torch.ones(n, n, dtype=torch.bool).tril())


def test_causal_mask_with_cached_keys_aligns_queries_to_the_end():
    # 2 new queries after 3 cached keys: positions 3 and 4 of 5.
    assert causal_mask(2, 5).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_causal_mask_takes_its_device():
    assert causal_mask(3, device="cpu").device == torch.device("cpu")


# ---------------------------------------------------------------- bad input

def qkv(q_shape=(2, 3, 4), k_shape=(2, 5, 4), v_shape=(2, 5, 6), dtype=torch.float32):
    return tuple(torch.zeros(shape, dtype=dtype) for shape in (q_shape, k_shape, v_shape))


@pytest.mark.parametrize("shapes, words", [
    (((2, 3, 4), (2, 5, 8), (2, 5, 6)), ["q and k", "last dimension", "(2, 3, 4)", "(2, 5, 8)"]),
    (((2, 3, 4), (2, 5, 4), (2, 7, 6)), ["k and v", "length", "(2, 5, 4)", "(2, 7, 6)"]),
    (((2, 3, 4), (3, 5, 4), (3, 5, 6)), ["leading", "(2, 3, 4)", "(3, 5, 4)"]),
    (((4,), (5, 4), (5, 6)), ["q must be", "at least 2 dimensions", "(4,)"]),
    (((3, 4), (5, 4), (5,)), ["v must be", "(5,)"]),
    (((2, 3, 4), (2, 0, 4), (2, 0, 6)), ["at least one key", "(2, 0, 4)"]),
])
def test_mismatched_shapes_name_the_arguments_and_shapes(shapes, words):
    with pytest.raises(ValueError) as error:
        scaled_dot_product_attention(*qkv(*shapes))
    for word in words:
        assert word in str(error.value)


def test_wrong_dtypes_name_the_arguments():
    q, k, v = qkv()
    integer_k = r"k must be a floating-point tensor, got dtype torch.int64 \(shape \(2, 5, 4\)\)"
    with pytest.raises(ValueError, match=integer_k):
        scaled_dot_product_attention(q, k.long(), v)
    with pytest.raises(ValueError, match=r"q torch.float32, k torch.float64, v torch.float32.*\(2, 5, 4\)"):
        scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(ValueError, match=r"q must be a tensor"):
        scaled_dot_product_attention([[1.0]], k, v)


@pytest.mark.parametrize("mask_shape", [(3, 4), (2, 1, 5, 1, 1), (3, 3, 5), (5, 3)])
def test_a_mask_that_does_not_broadcast_names_both_shapes(mask_shape):
    q, k, v = qkv()  # scores (2, 3, 5)
    for mask in (torch.ones(mask_shape, dtype=torch.bool), torch.zeros(mask_shape)):
        with pytest.raises(ValueError) as error:
            scaled_dot_product_attention(q, k, v, mask)
        assert f"mask of shape {mask_shape}" in str(error.value)
        assert "(2, 3, 5)" in str(error.value)


def test_a_mask_of_the_wrong_dtype_is_refused():
    q, k, v = qkv()
    for mask, word in [(torch.ones(3, 5, dtype=torch.long), "torch.int64"),
                       (torch.zeros(3, 5, dtype=torch.float64), "torch.float64")]:
        with pytest.raises(ValueError, match=f"mask of shape \\(3, 5\\) must be boolean or have the "
                                             f"scores' dtype torch.float32, got {word}"):
            scaled_dot_product_attention(q, k, v, mask)
    with pytest.raises(ValueError, match="mask must be a tensor"):
        scaled_dot_product_attention(q, k, v, [[True] * 5] * 3)
    with pytest.raises(ValueError, match="mask must be boolean here"):
        masked_softmax(torch.zeros(3, 5), torch.zeros(3, 5))


def test_mask_helpers_refuse_bad_input():
    with pytest.raises(ValueError, match=r"lengths must be a 1-D \(batch,\) tensor, got \(2, 1\)"):
        padding_mask(torch.ones(2, 1, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="lengths must hold integers"):
        padding_mask(torch.tensor([1.5]), 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, max_len=3\], got min 1 and max 4"):
        padding_mask(torch.tensor([1, 4]), 3)
    with pytest.raises(ValueError, match=r"n_keys \(2\) must be >= n_queries \(3\)"):
        causal_mask(3, 2)
    with pytest.raises(ValueError, match="n_queries must be >= 0"):
        causal_mask(-1)


def test_check_helpers_are_silent_on_good_input():
    check_qkv(*qkv())
    check_mask("mask", torch.ones(1, 5, dtype=torch.bool), torch.Size((2, 3, 5)))


def test_default_scale_is_one_over_sqrt_d():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 9, generator=g), torch.randn(6, 9, generator=g), torch.randn(6, 2, generator=g)
    default, _ = scaled_dot_product_attention(q, k, v)
    explicit, _ = scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(9))
    torch.testing.assert_close(default, explicit)


def test_a_head_dimension_of_zero_is_a_value_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match=r"head dimension d >= 1 .*q \(2, 3, 0\), k \(2, 5, 0\)"):
        scaled_dot_product_attention(*qkv((2, 3, 0), (2, 5, 0), (2, 5, 6)))
    with pytest.raises(ValueError, match="head dimension"):  # an explicit scale does not help
        scaled_dot_product_attention(*qkv((3, 0), (5, 0), (5, 6)), scale=1.0)


@pytest.mark.parametrize("scale, words", [
    (0, "positive, finite number or None, got 0"),
    (-0.5, "got -0.5"),
    (float("nan"), "got nan"),
    (float("inf"), "got inf"),
    ("0.5", "got a str"),
    (True, "got a bool"),
    (torch.tensor(0.5), "got a Tensor"),
])
def test_a_scale_that_is_not_a_positive_number_is_refused(scale, words):
    with pytest.raises(ValueError, match=r"scale must be a positive") as error:
        scaled_dot_product_attention(*qkv(), scale=scale)
    assert words in str(error.value)


def test_integer_and_numpy_scales_are_accepted():
    import numpy as np

    q, k, v = (t.normal_() for t in qkv())
    expected, _ = scaled_dot_product_attention(q, k, v, scale=2.0)
    for scale in (2, np.float64(2.0)):
        torch.testing.assert_close(scaled_dot_product_attention(q, k, v, scale=scale)[0], expected)
