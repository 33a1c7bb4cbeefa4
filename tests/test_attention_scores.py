"""Tests of the score functions of Part I (Bahdanau, Luong) in attnbook.attention."""

import math

import pytest
import torch

from attnbook.attention import (
    AdditiveScore,
    ConcatScore,
    DotScore,
    GeneralScore,
    gaussian_window,
    local_attention_weights,
    local_window,
    masked_softmax,
)


def set_weights(linear: torch.nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def all_scores(query_dim=6, key_dim=6, attn_dim=5):
    return [AdditiveScore(query_dim, key_dim, attn_dim), DotScore(query_dim, key_dim),
            GeneralScore(query_dim, key_dim), ConcatScore(query_dim, key_dim, attn_dim)]


# --- the scores against values computed by hand ---------------------------------------


def test_additive_score_by_hand():
    score = AdditiveScore(query_dim=1, key_dim=1, attn_dim=2)
    set_weights(score.W_q, [[2.0], [0.0]])
    set_weights(score.W_k, [[1.0], [1.0]], bias=[0.0, 0.5])
    set_weights(score.v, [[3.0, -1.0]])
    query = torch.tensor([[0.5]])            # W_q q = (1, 0)
    keys = torch.tensor([[[1.0], [-1.0]]])   # W_k k + b = (1, 1.5) and (-1, -0.5)
    expected = [3 * math.tanh(2.0) - math.tanh(1.5), 3 * math.tanh(0.0) - math.tanh(-0.5)]
    assert torch.allclose(score(query, keys), torch.tensor([expected]))


def test_dot_score_by_hand():
    query = torch.tensor([[1.0, 2.0]])
    keys = torch.tensor([[[3.0, 4.0], [0.0, -1.0], [0.5, 0.5]]])
    assert torch.equal(DotScore(2, 2)(query, keys), torch.tensor([[11.0, -2.0, 1.5]]))


def test_general_score_is_the_bilinear_form_by_hand():
    score = GeneralScore(query_dim=2, key_dim=3)
    W = [[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]  # (Dq, Dk)
    set_weights(score.W, W)
    query = torch.tensor([[1.0, -1.0]])
    keys = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]])
    # q^T W k: W k = (3, 3) and (2, 0); q . W k = 0 and 2
    assert torch.allclose(score(query, keys), torch.tensor([[0.0, 2.0]]))


def test_general_score_with_identity_is_the_dot_score():
    score = GeneralScore(4, 4)
    set_weights(score.W, torch.eye(4).tolist())
    query, keys = torch.randn(3, 4), torch.randn(3, 7, 4)
    assert torch.allclose(score(query, keys), DotScore(4, 4)(query, keys), atol=1e-6)


def test_concat_score_by_hand():
    score = ConcatScore(query_dim=1, key_dim=1, attn_dim=1)
    set_weights(score.W, [[1.0, 2.0]], bias=[-1.0])
    set_weights(score.v, [[2.0]])
    query, keys = torch.tensor([[1.0]]), torch.tensor([[[0.0], [1.0]]])
    expected = [2 * math.tanh(1 + 0 - 1), 2 * math.tanh(1 + 2 - 1)]
    assert torch.allclose(score(query, keys), torch.tensor([expected]))


def test_concat_score_equals_additive_score_with_split_weights():
    torch.manual_seed(0)
    concat, additive = ConcatScore(3, 5, 4), AdditiveScore(3, 5, 4)
    with torch.no_grad():
        additive.W_q.weight.copy_(concat.W.weight[:, :3])
        additive.W_k.weight.copy_(concat.W.weight[:, 3:])
        additive.W_k.bias.copy_(concat.W.bias)
        additive.v.weight.copy_(concat.v.weight)
    query, keys = torch.randn(2, 3), torch.randn(2, 6, 5)
    assert torch.allclose(concat(query, keys), additive(query, keys), atol=1e-6)


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
def test_prepared_keys_give_the_same_scores(score):
    query, keys = torch.randn(3, 6), torch.randn(3, 8, 6)
    prepared = score.prepare_keys(keys)
    assert torch.allclose(score(query, keys, prepared=prepared), score(query, keys))


# --- masks and padding ---------------------------------------------------------------


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
def test_masked_keys_score_minus_infinity_and_get_no_weight(score):
    query, keys = torch.randn(2, 6), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    scores = score(query, keys, mask)
    assert torch.isneginf(scores[0, 3:]).all() and torch.isfinite(scores[0, :3]).all()
    weights = masked_softmax(scores)
    assert torch.equal(weights[0, 3:], torch.zeros(2))
    assert torch.allclose(weights.sum(-1), torch.ones(2))


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
def test_padding_never_changes_the_real_scores(score):
    query, keys = torch.randn(2, 6), torch.randn(2, 5, 6)
    padded = torch.cat([keys, torch.randn(2, 3, 6)], dim=1)  # three padded keys of any value
    mask = torch.tensor([[True] * 5 + [False] * 3] * 2)
    short = masked_softmax(score(query, keys))
    long = masked_softmax(score(query, padded, mask))
    assert torch.allclose(long[:, :5], short, atol=1e-6)
    assert torch.equal(long[:, 5:], torch.zeros(2, 3))


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
def test_a_fully_masked_row_gives_zeros_and_no_nan_gradient(score):
    query = torch.randn(2, 6, requires_grad=True)
    keys = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    weights = masked_softmax(score(query, keys, mask))
    assert torch.equal(weights[1], torch.zeros(4))
    context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
    (context.sum() + weights.pow(2).sum()).backward()
    grads = [query.grad, keys.grad] + [p.grad for p in score.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(query.grad[1], torch.zeros(6))


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
def test_gradients_reach_every_parameter(score):
    query, keys = torch.randn(3, 6, requires_grad=True), torch.randn(3, 5, 6, requires_grad=True)
    weights = masked_softmax(score(query, keys))
    (weights * torch.randn(3, 5)).sum().backward()
    inputs = [("query", query), ("keys", keys)]
    for name, parameter in inputs + list(score.named_parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("query_shape, keys_shape", [
    ((2, 7), (2, 5, 6)),   # wrong query size
    ((2, 6), (2, 5, 4)),   # wrong key size
    ((3, 6), (2, 5, 6)),   # batch sizes differ
    ((2, 1, 6), (2, 5, 6)),  # query with a length dimension
    ((2, 6), (5, 6)),      # keys without a batch dimension
])
def test_queries_and_keys_that_do_not_fit_are_rejected_naming_both_shapes(score, query_shape, keys_shape):
    with pytest.raises(ValueError) as error:
        score(torch.randn(query_shape), torch.randn(keys_shape))
    assert str(query_shape) in str(error.value) and str(keys_shape) in str(error.value)


@pytest.mark.parametrize("score", all_scores(), ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("mask_shape", [(2, 6), (3, 5), (2, 5, 1), (5, 2)])
def test_masks_that_do_not_broadcast_are_rejected_naming_both_shapes(score, mask_shape):
    query, keys = torch.randn(2, 6), torch.randn(2, 5, 6)
    with pytest.raises(ValueError) as error:
        score(query, keys, torch.ones(mask_shape, dtype=torch.bool))
    assert str(mask_shape) in str(error.value) and "(2, 5)" in str(error.value)


def test_a_mask_that_broadcasts_is_accepted():
    query, keys = torch.randn(2, 6), torch.randn(2, 5, 6)
    scores = DotScore(6, 6)(query, keys, torch.tensor([True, True, True, True, False]))
    assert torch.isneginf(scores[:, 4]).all()


def test_a_float_mask_is_rejected():
    with pytest.raises(ValueError, match="boolean"):
        DotScore(6, 6)(torch.randn(2, 6), torch.randn(2, 5, 6), torch.ones(2, 5))


def test_the_dot_score_needs_matching_sizes():
    with pytest.raises(ValueError, match="128 and 256"):
        DotScore(128, 256)


# --- local attention -----------------------------------------------------------------


def test_local_window_by_hand():
    window = local_window(torch.tensor([0.0, 2.4, 3.6]), length=6, half_width=1)
    assert window.tolist() == [
        [True, True, False, False, False, False],
        [False, True, True, True, False, False],
        [False, False, False, True, True, True],
    ]


def test_gaussian_window_by_hand():
    bump = gaussian_window(torch.tensor([1.0]), length=3, sigma=2.0)
    expected = [math.exp(-1 / 8), 1.0, math.exp(-1 / 8)]
    assert torch.allclose(bump, torch.tensor([expected]))


def test_local_attention_weights_stay_in_the_window_and_are_never_nan():
    scores = torch.randn(3, 10, requires_grad=True)
    centers = torch.tensor([2.0, 7.2, 30.0], requires_grad=True)  # the last one is off the input
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 8:] = False
    weights = local_attention_weights(scores, centers, mask, half_width=2, gaussian=True)
    assert torch.equal(weights[0, 5:], torch.zeros(5))
    assert torch.equal(weights[1, :5], torch.zeros(5)) and torch.equal(weights[1, 8:], torch.zeros(2))
    assert torch.equal(weights[2], torch.zeros(10))
    weights.sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(centers.grad).all()
    assert centers.grad[1] != 0  # local-p learns where to look through the Gaussian


def test_local_m_weights_sum_to_one_in_the_window():
    scores, mask = torch.randn(2, 9), torch.ones(2, 9, dtype=torch.bool)
    weights = local_attention_weights(scores, torch.tensor([4.0, 0.0]), mask, 2, gaussian=False)
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    expected = masked_softmax(scores[0, 2:7])
    assert torch.allclose(weights[0, 2:7], expected)
