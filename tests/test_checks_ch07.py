"""Mutation tests of the chapter 7 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbook.attention import scaled_dot_product_attention
from attnbook.checks.ch07 import (
    check_batched_heads,
    check_heads_loop,
    check_rank_prediction,
    check_rank_prediction_recorded,
    check_to_torch,
    check_torch_parameter_count,
)
from attnbook.checks.core import CheckFailed

# --- 7.3 one head at a time ----------------------------------------------------------------


def heads_loop_reference_style(mha, query, key, value, mask=None):
    d = mha.head_dim
    outputs = []
    for h in range(mha.n_heads):
        rows = slice(h * d, (h + 1) * d)
        q = F.linear(query, mha.q_proj.weight[rows], mha.q_proj.bias[rows])
        k = F.linear(key, mha.k_proj.weight[rows], mha.k_proj.bias[rows])
        v = F.linear(value, mha.v_proj.weight[rows], mha.v_proj.bias[rows])
        outputs.append(scaled_dot_product_attention(q, k, v, mask)[0])
    return mha.out_proj(torch.cat(outputs, dim=-1))


def heads_loop_project_then_slice(mha, query, key, value, mask=None):
    """Correct, written differently: project once, slice the columns, sum the output per head."""
    q_all, k_all, v_all = mha.q_proj(query), mha.k_proj(key), mha.v_proj(value)
    d, out = mha.head_dim, mha.out_proj.bias.clone()
    for h in range(mha.n_heads):
        cols = slice(h * d, (h + 1) * d)
        head, _ = scaled_dot_product_attention(q_all[..., cols], k_all[..., cols], v_all[..., cols], mask)
        out = out + head @ mha.out_proj.weight[:, cols].T
    return out


def heads_loop_ignores_mask(mha, query, key, value, mask=None):
    return heads_loop_reference_style(mha, query, key, value, None)


def heads_loop_self_attention(mha, query, key, value, mask=None):
    return heads_loop_reference_style(mha, query, query, query, mask)


def heads_loop_one_head(mha, query, key, value, mask=None):
    """Wrong: the whole width as one head (scaled by 1/sqrt(D), not 1/sqrt(d))."""
    q, k, v = mha.q_proj(query), mha.k_proj(key), mha.v_proj(value)
    return mha.out_proj(scaled_dot_product_attention(q, k, v, mask)[0])


def heads_loop_scales_weights_in_place(mha, query, key, value, mask=None):
    mha.q_proj.weight.mul_(1.0)
    mha.q_proj.bias.add_(0.5)
    return heads_loop_reference_style(mha, query, key, value, mask)


def heads_loop_nan_rows(mha, query, key, value, mask=None):
    """Wrong: torch.softmax on a query that sees no key gives NaN."""
    d = mha.head_dim
    outputs = []
    for h in range(mha.n_heads):
        rows = slice(h * d, (h + 1) * d)
        q = F.linear(query, mha.q_proj.weight[rows], mha.q_proj.bias[rows])
        k = F.linear(key, mha.k_proj.weight[rows], mha.k_proj.bias[rows])
        v = F.linear(value, mha.v_proj.weight[rows], mha.v_proj.bias[rows])
        scores = (q @ k.transpose(-2, -1)) / d**0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        outputs.append(torch.softmax(scores, dim=-1) @ v)
    return mha.out_proj(torch.cat(outputs, dim=-1))


@pytest.mark.parametrize("student", [heads_loop_reference_style, heads_loop_project_then_slice])
def test_7_3_passes_correct_answers_written_differently(student, capsys):
    check_heads_loop(student)
    assert "✅ Exercise 7.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (heads_loop_ignores_mask, "values are wrong"),
    (heads_loop_self_attention, "wrong shape|values are wrong|raised"),
    (heads_loop_one_head, "values are wrong"),
    (heads_loop_scales_weights_in_place, r"changed `mha.q_proj.bias` in place"),
    (heads_loop_nan_rows, "NaN"),
])
def test_7_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_heads_loop(student)


# --- 7.4 into PyTorch's module -------------------------------------------------------------


def to_torch_state_dict(mha):
    """Correct, written differently: through load_state_dict."""
    theirs = nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True)
    projections = [mha.q_proj, mha.k_proj, mha.v_proj]
    theirs.load_state_dict({
        "in_proj_weight": torch.cat([p.weight for p in projections]),
        "in_proj_bias": torch.cat([p.bias for p in projections]),
        "out_proj.weight": mha.out_proj.weight,
        "out_proj.bias": mha.out_proj.bias,
    })
    return theirs


def to_torch_without_biases(mha):
    theirs = to_torch_state_dict(mha)
    with torch.no_grad():
        theirs.in_proj_bias.zero_()
    return theirs


def to_torch_order_kqv(mha):
    theirs = to_torch_state_dict(mha)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mha.k_proj.weight, mha.q_proj.weight, mha.v_proj.weight]))
    return theirs


def to_torch_moves_weights(mha):
    """Wrong: hands over the module's own parameters and zeroes an output bias it 'does not need'."""
    theirs = to_torch_state_dict(mha)
    with torch.no_grad():
        mha.out_proj.bias.zero_()
        theirs.out_proj.bias.zero_()
    return theirs


def test_7_4_passes_a_correct_answer_written_differently(capsys):
    check_to_torch(to_torch_state_dict)
    assert "✅ Exercise 7.4" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (to_torch_without_biases, "values are wrong"),
    (to_torch_order_kqv, "values are wrong"),
    (lambda mha: nn.MultiheadAttention(mha.d_model, mha.n_heads), "batch_first=True"),
    (lambda mha: mha, "expected an nn.MultiheadAttention, got a MultiHeadAttention"),
    (to_torch_moves_weights, r"changed `mha.out_proj.bias` in place"),
])
def test_7_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_to_torch(student)


# --- Second review: answers the first version of these tests did not try -------------------


def heads_loop_runs_the_module(mha, query, key, value, mask=None):
    return mha(query, key, value, mask)[0]


def heads_loop_runs_a_copy(mha, query, key, value, mask=None):
    import copy

    return copy.deepcopy(mha)(query, key, value, mask)[0]


def heads_loop_columns(mha, query, key, value, mask=None):
    """Wrong: columns of the weights (query @ W[:, rows]) instead of rows (F.linear)."""
    d, outputs = mha.head_dim, []
    for h in range(mha.n_heads):
        c = slice(h * d, (h + 1) * d)
        q = query @ mha.q_proj.weight[:, c] + mha.q_proj.bias[c]
        k = key @ mha.k_proj.weight[:, c] + mha.k_proj.bias[c]
        v = value @ mha.v_proj.weight[:, c] + mha.v_proj.bias[c]
        outputs.append(scaled_dot_product_attention(q, k, v, mask)[0])
    return mha.out_proj(torch.cat(outputs, dim=-1))


def heads_loop_additive_mask(mha, query, key, value, mask=None):
    """Correct, written differently: the boolean mask turned into an additive one."""
    if mask is not None:
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return heads_loop_reference_style(mha, query, key, value, mask)


def test_7_3_second_review(capsys):
    check_heads_loop(heads_loop_additive_mask)
    assert "✅ Exercise 7.3" in capsys.readouterr().out
    for student in (heads_loop_runs_the_module, heads_loop_runs_a_copy):
        with pytest.raises(CheckFailed, match=r"runs the module itself \(mha\(...\)\)"):
            check_heads_loop(student)
    with pytest.raises(CheckFailed, match="values are wrong"):
        check_heads_loop(heads_loop_columns)
    with pytest.raises(CheckFailed, match="values are wrong"):  # forgets the output bias
        check_heads_loop(lambda mha, *args: heads_loop_reference_style(mha, *args) - mha.out_proj.bias)


def test_7_4_second_review(capsys):
    def parameters_assigned(mha):
        theirs = nn.MultiheadAttention(mha.d_model, mha.n_heads, batch_first=True)
        projections = [mha.q_proj, mha.k_proj, mha.v_proj]
        theirs.in_proj_weight = nn.Parameter(torch.cat([p.weight for p in projections]).detach())
        theirs.in_proj_bias = nn.Parameter(torch.cat([p.bias for p in projections]).detach())
        theirs.out_proj.weight, theirs.out_proj.bias = mha.out_proj.weight, mha.out_proj.bias
        return theirs

    check_to_torch(parameters_assigned)
    assert "✅ Exercise 7.4" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="has dropout=0.1; ours has none"):
        check_to_torch(lambda mha: parameters_assigned(mha).__class__(
            mha.d_model, mha.n_heads, dropout=0.1, batch_first=True))
    # the module raises when called: the verdict names the module, not a line inside PyTorch
    with pytest.raises(CheckFailed, match=r"the nn.MultiheadAttention you returned raised RuntimeError when "
                                          r"called on float32 query, key and value of shapes"):
        check_to_torch(lambda mha: to_torch_state_dict(mha).double())
    with pytest.raises(CheckFailed, match="values are wrong"):  # W^T copied
        check_to_torch(lambda mha: (lambda t: (t.in_proj_weight.data.copy_(torch.cat(
            [p.weight.T for p in (mha.q_proj, mha.k_proj, mha.v_proj)])), t)[1])(to_torch_state_dict(mha)))


# --- 7.1 the rank of one head ----------------------------------------------------------------

RANKS = {1: 16, 2: 8, 4: 4, 8: 2, 16: 1}


def test_7_1_records_a_dict_of_whole_numbers(capsys):
    check_rank_prediction_recorded({h: 16 for h in RANKS})  # wrong, but a prediction
    assert "✅ Exercise 7.1 (prediction): recorded ranks" in capsys.readouterr().out
    for prediction, verdict in [(..., "replace the ..."), ({1: 16, 2: 8}, "must be a dict"),
                                ({**RANKS, 4: 4.0}, r"`predicted_ranks`\[4\] must be a whole")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_rank_prediction_recorded(prediction)


def test_7_1_passes_matrix_rank_tensors_and_numpy(capsys):
    measured = {h: torch.linalg.matrix_rank(torch.eye(r, dtype=torch.float64))
                for h, r in RANKS.items()}  # 0-d int64 tensors, as matrix_rank gives
    check_rank_prediction({h: np.int64(r) for h, r in RANKS.items()}, measured)
    assert "✅ Exercise 7.1" in capsys.readouterr().out


@pytest.mark.parametrize("predicted, measured, verdict", [
    # heads do not change a head's rank: "the scores are 32 x 32"
    ({h: 32 for h in RANKS}, RANKS, r"the predicted rank for 1 head is 32, off by \+16; "
                                    r"the predicted rank for 2 heads is 32, off by \+24"),
    # the rank of the whole layer (all heads together), not of one head
    ({h: 16 for h in RANKS}, RANKS, r"^[^;]*the predicted rank for 2 heads is 16, off by \+8"),
    # measured in float32 on softmaxed weights: full rank
    (RANKS, {h: 32 for h in RANKS}, r"the measured rank for 1 head is 32, off by \+16"),
])
def test_7_1_rejects_wrong_ranks(predicted, measured, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_rank_prediction(predicted, measured)


# --- 7.2 heads that mix their positions ------------------------------------------------------


def batched_as_given(mha, query, key, value, fix_split=False, fix_scale=False):
    batch, n_queries, width = query.shape
    n_heads, head_dim = mha.n_heads, mha.head_dim

    def split(x):
        if fix_split:
            return x.view(batch, x.shape[1], n_heads, head_dim).transpose(1, 2)
        return x.view(batch, n_heads, -1, head_dim)

    q, k, v = split(mha.q_proj(query)), split(mha.k_proj(key)), split(mha.v_proj(value))
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim if fix_scale else width)
    weights = torch.softmax(scores, dim=-1)
    return mha.out_proj((weights @ v).transpose(1, 2).reshape(batch, n_queries, width))


def batched_with_package(mha, query, key, value):
    """Correct, written differently: unflatten, movedim and the package's attention."""
    def split(x):
        return x.unflatten(-1, (mha.n_heads, mha.head_dim)).movedim(-2, 1)

    out, _ = scaled_dot_product_attention(split(mha.q_proj(query)), split(mha.k_proj(key)),
                                          split(mha.v_proj(value)))
    return mha.out_proj(out.movedim(1, -2).flatten(-2))


def batched_with_einsum(mha, query, key, value):
    """Correct, written differently: einsum over named heads."""
    h, d = mha.n_heads, mha.head_dim
    q = mha.q_proj(query).unflatten(-1, (h, d))
    k = mha.k_proj(key).unflatten(-1, (h, d))
    v = mha.v_proj(value).unflatten(-1, (h, d))
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d), dim=-1)
    return mha.out_proj(torch.einsum("bhqk,bkhd->bqhd", weights, v).flatten(-2))


@pytest.mark.parametrize("student", [
    batched_with_package, batched_with_einsum,
    lambda *args: batched_as_given(*args, fix_split=True, fix_scale=True)])
def test_7_2_passes_correct_answers_written_differently(student, capsys):
    check_batched_heads(student)
    assert "✅ Exercise 7.2" in capsys.readouterr().out


@pytest.mark.parametrize("fixes, verdict", [
    ({}, "values are wrong"),  # as given
    ({"fix_scale": True}, "values are wrong"),  # the split left wrong
    ({"fix_split": True}, "values are wrong"),  # the scale left wrong
])
def test_7_2_rejects_each_bug_left_in(fixes, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_batched_heads(lambda *args: batched_as_given(*args, **fixes))


def test_7_2_rejects_running_the_module():
    with pytest.raises(CheckFailed, match=r"runs the module itself"):
        check_batched_heads(lambda mha, q, k, v: mha(q, k, v)[0])


# --- 7.5 PyTorch's parameter count ---------------------------------------------------------


@pytest.mark.parametrize("student", [
    lambda e, h, k, v: 2 * e * e + e * (k + v) + 4 * e,
    lambda e, h, k, v: e * (2 * e + k + v + 4),
    lambda e, h, k, v: np.int64(e * (2 * e + k + v + 4)),
])
def test_7_5_passes_formulas_written_differently(student, capsys):
    check_torch_parameter_count(student)
    assert "✅ Exercise 7.5" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # kdim and vdim ignored: the count for kdim = vdim = embed_dim
    (lambda e, h, k, v: 4 * e * e + 4 * e,
     r"torch_parameter_count\(8, 2, 4, 6\) gives 288, but the module has 240 parameters "
     r"\(48 more\)"),
    # no biases
    (lambda e, h, k, v: 2 * e * e + e * (k + v),
     r"torch_parameter_count\(8, 2, 8, 8\) gives 256, but the module has 288 .*32 fewer"),
    # the projections write kdim and vdim numbers instead of embed_dim
    (lambda e, h, k, v: 2 * e * e + k * k + v * v + 2 * e + k + v,
     r"torch_parameter_count\(8, 2, 4, 6\)"),
    # per head
    (lambda e, h, k, v: h * (2 * e * e + e * (k + v) + 4 * e),
     r"torch_parameter_count\(8, 2, 8, 8\) gives 576"),
    (lambda e, h, k, v: float(e * (2 * e + k + v + 4)), "return a whole number"),
])
def test_7_5_rejects_wrong_formulas(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_torch_parameter_count(student)
