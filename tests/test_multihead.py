"""Tests of attnbook.multihead against PyTorch's own multi-head attention and SDPA."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnbook.attention import causal_mask
from attnbook.multihead import (
    MultiHeadAttention,
    copy_from_torch,
    merge_heads,
    split_heads,
    to_torch,
    torch_attn_mask,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@st.composite
def problems(draw):
    """A random module, inputs and mask; about one mask in three leaves a query row with no key."""
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batch, n_heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    n_queries, n_keys = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    mask_kind = draw(st.sampled_from(["none", "bool", "additive", "causal", "padding"]))
    logit_scale = draw(st.sampled_from([1.0, 1.0, 30.0]))  # 30: logits in the hundreds
    bias = draw(st.booleans())
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d_model = n_heads * head_dim
    module = MultiHeadAttention(d_model, n_heads, bias=bias).to(dtype)
    with torch.no_grad():
        module.q_proj.weight.mul_(logit_scale)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    query = rand(batch, n_queries, d_model)
    key, value = rand(batch, n_keys, d_model), rand(batch, n_keys, d_model)
    if mask_kind == "bool":
        mask = torch.rand(batch, 1, n_queries, n_keys, generator=generator) < 0.7
    elif mask_kind == "additive":
        mask = rand(batch, n_heads, n_queries, n_keys)
        mask = mask.masked_fill(torch.rand(mask.shape, generator=generator) < 0.3, float("-inf"))
    elif mask_kind == "causal":
        mask = causal_mask(n_queries, max(n_keys, n_queries))[:, :n_keys]  # (Lq, Lk)
    elif mask_kind == "padding":
        lengths = torch.randint(0, n_keys + 1, (batch,), generator=generator)
        mask = (torch.arange(n_keys)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    else:
        mask = None
    return module, query, key, value, mask


def _allowed_rows(mask, shape):
    """(B, H, Lq) True where the query row has at least one key to attend to."""
    if mask is None:
        return torch.ones(shape[:-1], dtype=torch.bool)
    allowed = mask.expand(shape) if mask.dtype == torch.bool else torch.isfinite(mask).expand(shape)
    return allowed.any(dim=-1)


@SETTINGS
@given(problems())
def test_equals_nn_multihead_attention(problem):
    module, query, key, value, mask = problem
    batch, n_queries, n_keys, n_heads = query.shape[0], query.shape[1], key.shape[1], module.n_heads
    ours, weights = module(query, key, value, mask)
    theirs = to_torch(module)
    attn_mask = None if mask is None else torch_attn_mask(mask, batch, n_heads, n_queries, n_keys)
    expected, expected_weights = theirs(query, key, value, attn_mask=attn_mask,
                                        need_weights=True, average_attn_weights=False)
    rows = _allowed_rows(mask, weights.shape)  # (B, H, Lq)
    assert not torch.isnan(ours).any() and not torch.isnan(weights).any()
    # PyTorch gives NaN where a row has no key; we give zero weights there.
    assert torch.equal(weights[~rows], torch.zeros_like(weights[~rows]))
    tol = TOLERANCE[query.dtype]
    assert torch.allclose(weights[rows], expected_weights[rows], atol=tol, rtol=0)
    full_rows = rows.all(dim=1)  # (B, Lq): every head has keys, so the output is comparable
    assert torch.allclose(ours[full_rows], expected[full_rows], atol=tol, rtol=0)


@SETTINGS
@given(problems())
def test_equals_functional_scaled_dot_product_attention(problem):
    module, query, key, value, mask = problem
    ours, _ = module(query, key, value, mask)
    q = split_heads(module.q_proj(query), module.n_heads)  # (B, H, Lq, d)
    k = split_heads(module.k_proj(key), module.n_heads)
    v = split_heads(module.v_proj(value), module.n_heads)
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Lq, d)
    expected = module.out_proj(merge_heads(heads))
    rows = _allowed_rows(mask, q.shape[:-1] + (k.shape[-2],))  # (B, H, Lq)
    full_rows = rows.all(dim=1)
    tol = TOLERANCE[query.dtype]
    assert torch.allclose(ours[full_rows], expected[full_rows], atol=tol, rtol=0)
    # a query with no key left gets a zero attention output, so only the output bias remains
    bias = module.out_proj.bias
    bias = torch.zeros(module.d_model, dtype=query.dtype) if bias is None else bias
    empty = ~rows.any(dim=1)
    assert torch.allclose(ours[empty], bias.expand_as(ours[empty]), atol=tol)


@SETTINGS
@given(batch=st.integers(1, 3), length=st.integers(1, 8), n_heads=st.integers(1, 5),
       head_dim=st.integers(1, 5))
def test_split_and_merge_heads_are_inverses(batch, length, n_heads, head_dim):
    x = torch.randn(batch, length, n_heads * head_dim)
    heads = split_heads(x, n_heads)
    assert heads.shape == (batch, n_heads, length, head_dim)
    last = n_heads - 1  # head h is the h-th slice of the width
    assert torch.equal(heads[:, last], x[:, :, last * head_dim:(last + 1) * head_dim])
    assert torch.equal(merge_heads(heads), x)


def test_copy_from_torch_round_trip():
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(12, 3, batch_first=True)
    ours = copy_from_torch(theirs, MultiHeadAttention(12, 3))
    x = torch.randn(2, 5, 12)
    assert torch.allclose(ours(x)[0], theirs(x, x, x)[0], atol=1e-6)
    assert torch.equal(to_torch(ours).in_proj_weight, theirs.in_proj_weight)


@pytest.mark.parametrize("position", [{}, {"rope": True}, {"alibi": True}, {"rope": True, "alibi": True}])
@pytest.mark.parametrize("length", [1, 2, 7, 16])
def test_causal_outputs_never_see_the_future(position, length):
    torch.manual_seed(length)
    module = MultiHeadAttention(16, 4, **position).double()
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = causal_mask(length)
    before, _ = module(x, mask=mask)
    for t in range(length):
        changed = x.clone()
        changed[:, t:] = torch.randn(2, length - t, 16, dtype=torch.float64) * 10
        after, _ = module(changed, mask=mask)
        assert torch.equal(after[:, :t], before[:, :t]), f"changing position {t} changed an earlier output"
        if t < length:
            assert not torch.allclose(after[:, t], before[:, t])


def test_alibi_and_rope_keep_rows_with_no_keys_finite():
    module = MultiHeadAttention(8, 2, rope=True, alibi=True)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    mask[..., 1, :] = False
    out, weights = module(torch.randn(1, 3, 8), mask=mask)
    assert torch.isfinite(out).all() and torch.equal(weights[0, :, 1], torch.zeros(2, 3))


def test_alibi_is_added_to_the_scores():
    torch.manual_seed(0)
    module = MultiHeadAttention(8, 2, alibi=True)
    with torch.no_grad():
        module.q_proj.weight.zero_()
        module.q_proj.bias.zero_()  # all scores 0: the weights are softmax(bias) alone
    _, weights = module(torch.randn(1, 4, 8), mask=causal_mask(4))
    slope = 2.0 ** -4  # the first of two heads
    expected = torch.softmax(-slope * torch.tensor([3.0, 2.0, 1.0, 0.0]), dim=0)
    assert torch.allclose(weights[0, 0, 3], expected, atol=1e-6)


# --- Bad input ------------------------------------------------------------------------------

def test_width_must_divide_into_heads():
    with pytest.raises(ValueError, match="d_model=10 must be a positive multiple of n_heads=4"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="n_heads must be a positive integer"):
        MultiHeadAttention(8, 0)
    with pytest.raises(ValueError, match=r"rope needs an even head dimension.*12 / 4 = 3"):
        MultiHeadAttention(12, 4, rope=True)
    with pytest.raises(ValueError, match=r"\(2, 3, 10\) must be divisible by n_heads=4"):
        split_heads(torch.zeros(2, 3, 10), 4)


@pytest.mark.parametrize("args, words", [
    ((torch.zeros(2, 3, 8),), r"query must have shape \(batch, length, d_model=16\), got \(2, 3, 8\)"),
    ((torch.zeros(3, 16),), r"query must have shape .* got \(3, 16\)"),
    ((torch.zeros(2, 3, 16), torch.zeros(3, 4, 16)),
     r"same batch size: query \(2, 3, 16\), key \(3, 4, 16\), value \(3, 4, 16\)"),
    ((torch.zeros(2, 3, 16), torch.zeros(2, 4, 16), torch.zeros(2, 5, 16)),
     r"key and value must have the same length: .*key \(2, 4, 16\), value \(2, 5, 16\)"),
    ((torch.zeros(2, 3, 16), torch.zeros(2, 4, 16, dtype=torch.float64)),
     r"key has dtype torch.float64 but the weights have dtype torch.float32"),
    ((torch.zeros(2, 3, 16, dtype=torch.long),), r"query has dtype torch.int64"),
])
def test_bad_inputs_name_the_argument_and_shapes(args, words):
    module = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=words):
        module(*args)


@pytest.mark.parametrize("mask, words", [
    (torch.ones(3, 5, dtype=torch.bool), r"mask of shape \(3, 5\) does not fit the scores' shape "
                                         r"\(2, 4, 3, 4\); .* \(Lq, Lk\) = \(3, 4\)"),
    (torch.ones(2, 4, 3, 4, 1, dtype=torch.bool), r"mask of shape \(2, 4, 3, 4, 1\) has 5 dimensions"),
    (torch.ones(3, 4, 3, 4, dtype=torch.bool), r"mask of shape \(3, 4, 3, 4\) does not fit"),
    (torch.ones(3, 4, dtype=torch.long), r"mask must be boolean or have the query's dtype"),
    (torch.zeros(3, 4, dtype=torch.float64), r"mask must be boolean or have the query's dtype torch.float32"),
])
def test_bad_masks_are_named(mask, words):
    module = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=words):
        module(torch.zeros(2, 3, 16), torch.zeros(2, 4, 16), mask=mask)


def test_copy_needs_matching_modules():
    with pytest.raises(ValueError, match="d_model=8, n_heads=2; theirs has embed_dim=8, num_heads=4"):
        copy_from_torch(nn.MultiheadAttention(8, 4), MultiHeadAttention(8, 2))
    with pytest.raises(ValueError, match="biases"):
        copy_from_torch(nn.MultiheadAttention(8, 2, bias=False), MultiHeadAttention(8, 2))


def test_an_empty_key_is_named_as_the_callers_key():
    module = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"key must hold at least one position .*key \(2, 0, 16\)"):
        module(torch.zeros(2, 3, 16), torch.zeros(2, 0, 16))


@pytest.mark.parametrize("batch", [2, 3])  # 2 == n_heads: the case PyTorch's broadcasting hid
def test_a_3d_mask_is_refused_with_the_accepted_shapes(batch):
    module = MultiHeadAttention(8, 2)
    query = torch.randn(batch, 3, 8)
    mask = torch.ones(batch, 3, 3, dtype=torch.bool)
    words = (rf"mask of shape \({batch}, 3, 3\) has 3 dimensions; MultiHeadAttention accepts a mask "
             rf"of shape \(Lq, Lk\) = \(3, 3\) or \(B, H, Lq, Lk\) = \({batch}, 2, 3, 3\), where "
             r"any dimension may be 1 to broadcast \(for a \(B, Lq, Lk\) mask, pass mask\[:, None\]\)")
    with pytest.raises(ValueError, match=words):
        module(query, mask=mask)
    with pytest.raises(ValueError, match="has 1 dimensions"):
        module(query, mask=torch.ones(3, dtype=torch.bool))


def test_a_per_batch_mask_as_the_error_suggests_masks_each_batch_element():
    torch.manual_seed(0)
    module = MultiHeadAttention(8, 2)
    query = torch.randn(2, 3, 8)
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    mask[1, :, 1:] = False  # batch element 1 sees only its first key, in every head
    _, weights = module(query, mask=mask[:, None])
    assert (weights[1, :, :, 1:] == 0).all() and (weights[0] > 0).all()


@pytest.mark.parametrize("shape", [(3, 4), (1, 4), (3, 1), (2, 4, 3, 4), (2, 1, 1, 4), (1, 4, 3, 4),
                                   (1, 1, 1, 1)])
def test_accepted_mask_shapes_broadcast_over_batch_and_heads(shape):
    torch.manual_seed(0)
    module = MultiHeadAttention(16, 4)
    query, key = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    mask = torch.rand(shape) < 0.7
    _, weights = module(query, key, mask=mask)
    assert (weights[~mask.expand(2, 4, 3, 4)] == 0).all()


def test_torch_attn_mask_refuses_a_3d_mask_too():
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 4\) has 3 dimensions"):
        torch_attn_mask(torch.ones(2, 3, 4, dtype=torch.bool), 2, 2, 3, 4)


# --- Dropout on the attention weights -------------------------------------------------------

def dropped_weights(module, query, mask=None):
    """The weights after dropout that the training forward used, recovered from its output
    (out_proj is invertible here), by the same dropout draw under the same seed."""
    torch.manual_seed(1)
    out, weights = module(query, mask=mask)
    torch.manual_seed(1)
    kept = module.weight_dropout(weights)  # the draw the forward made
    v = split_heads(module.v_proj(query), module.n_heads)
    expected = module.out_proj(merge_heads(kept @ v))
    return out, weights, kept, expected


@pytest.mark.parametrize("position", [{}, {"rope": True}, {"alibi": True}])
def test_dropout_in_training_drops_weights_and_returns_them_undropped(position):
    torch.manual_seed(0)
    module = MultiHeadAttention(16, 4, dropout=0.5, **position).train()
    query = torch.randn(2, 6, 16)
    mask = causal_mask(6, 6)
    out, weights, kept, expected = dropped_weights(module, query, mask)
    eval_out, eval_weights = module.eval()(query, mask=mask)
    assert not torch.allclose(out, eval_out)  # training output changed by dropout
    torch.testing.assert_close(out, expected)  # ... by dropping these weights
    torch.testing.assert_close(weights, eval_weights)  # returned: before dropout
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    # kept weights are rescaled by 1 / (1 - p); dropped ones are 0
    scaled = (kept != 0) & (weights != 0)
    torch.testing.assert_close(kept[scaled], 2 * weights[scaled])
    assert (kept[~scaled] == 0).all()
    assert (kept.sum(-1) - 1).abs().max() > 0.1  # rows no longer sum to 1


def test_dropout_rows_sum_to_one_in_expectation():
    torch.manual_seed(0)
    module = MultiHeadAttention(8, 2, dropout=0.25).train()
    weights = torch.softmax(torch.randn(2000, 2, 5, 7), dim=-1)
    row_sums = module.weight_dropout(weights).sum(-1)
    assert abs(row_sums.mean().item() - 1) < 0.01


def test_dropout_in_eval_mode_or_zero_is_exactly_the_plain_forward():
    torch.manual_seed(0)
    plain = MultiHeadAttention(16, 4)
    dropped = MultiHeadAttention(16, 4, dropout=0.3)
    dropped.load_state_dict(plain.state_dict())
    query, key = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    for module in [dropped.eval(), MultiHeadAttention(16, 4, dropout=0.0).train()]:
        module.load_state_dict(plain.state_dict())
        state = torch.get_rng_state()
        out, weights = module(query, key)
        assert torch.equal(torch.get_rng_state(), state)  # no random number drawn
        expected, expected_weights = plain(query, key)
        assert torch.equal(out, expected) and torch.equal(weights, expected_weights)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.1", True])
def test_dropout_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\), got"):
        MultiHeadAttention(16, 4, dropout=p)
