"""Mutation tests of the chapter 7 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbook.attention import scaled_dot_product_attention
from attnbook.checks.ch07 import (
    check_batched_heads,
    check_head_outputs,
    check_rank_prediction,
    check_rank_prediction_recorded,
    check_to_torch,
    check_torch_parameter_count,
)
from attnbook.checks.core import CheckFailed
from attnbook.multihead import MultiHeadAttention, copy_to_torch, split_heads, to_torch

# --- 7.3 what each head adds ----------------------------------------------------------------


def head_outputs_loop(mha, query, key, value, mask=None):
    """Correct: the notebook's solution, one head at a time, with the columns of out_proj."""
    d, terms = mha.head_dim, []
    for h in range(mha.n_heads):
        rows = slice(h * d, (h + 1) * d)
        q = F.linear(query, mha.q_proj.weight[rows], mha.q_proj.bias[rows])
        k = F.linear(key, mha.k_proj.weight[rows], mha.k_proj.bias[rows])
        v = F.linear(value, mha.v_proj.weight[rows], mha.v_proj.bias[rows])
        out, _ = scaled_dot_product_attention(q, k, v, mask)
        terms.append(out @ mha.out_proj.weight[:, rows].T)
    return torch.stack(terms)


def head_outputs_zero_padded(mha, query, key, value, mask=None):
    """Correct, written differently: all heads at once, then each head's output alone in a
    zero-padded concatenation, through out_proj without its bias."""
    h, d = mha.n_heads, mha.head_dim
    q, k, v = (split_heads(p(x), h) for p, x in
               ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))
    out, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, Lq, d)
    terms = []
    for i in range(h):
        alone = torch.zeros(*out.shape[:1], out.shape[2], h * d)
        alone[..., i * d:(i + 1) * d] = out[:, i]
        terms.append(F.linear(alone, mha.out_proj.weight))
    return torch.stack(terms)


def head_outputs_by_silencing_copies(mha, query, key, value, mask=None):
    """Correct, written differently: run a copy of the module with every other head's
    columns of out_proj zeroed, and its bias too."""
    terms = []
    for h in range(mha.n_heads):
        silenced = copy.deepcopy(mha)
        keep = torch.zeros(mha.d_model)
        keep[h * mha.head_dim:(h + 1) * mha.head_dim] = 1
        silenced.out_proj.weight.mul_(keep)
        silenced.out_proj.bias.zero_()
        terms.append(silenced(query, key, value, mask)[0])
    return torch.stack(terms)


@pytest.mark.parametrize("student", [head_outputs_loop, head_outputs_zero_padded,
                                     head_outputs_by_silencing_copies])
def test_7_3_passes_correct_answers_written_differently(student, capsys):
    check_head_outputs(student)
    assert "✅ Exercise 7.3 (head_outputs): every head's term correct in 6 cases" in (
        capsys.readouterr().out)


def head_outputs_rows(mha, query, key, value, mask=None):
    """Wrong: rows h*d to (h+1)*d of out_proj.weight, (d, D), instead of its columns."""
    d, terms = mha.head_dim, []
    for h in range(mha.n_heads):
        rows = slice(h * d, (h + 1) * d)
        q = F.linear(query, mha.q_proj.weight[rows], mha.q_proj.bias[rows])
        k = F.linear(key, mha.k_proj.weight[rows], mha.k_proj.bias[rows])
        v = F.linear(value, mha.v_proj.weight[rows], mha.v_proj.bias[rows])
        terms.append(scaled_dot_product_attention(q, k, v, mask)[0] @ mha.out_proj.weight[rows])
    return torch.stack(terms)


def head_outputs_whole_width_scale(mha, query, key, value, mask=None):
    """Wrong: each head's scores scaled by 1/sqrt(D) instead of 1/sqrt(d)."""
    h, d = mha.n_heads, mha.head_dim
    q, k, v = (split_heads(p(x), h) for p, x in
               ((mha.q_proj, query), (mha.k_proj, key), (mha.v_proj, value)))
    out, _ = scaled_dot_product_attention(q, k, v, mask, scale=1 / math.sqrt(mha.d_model))
    return torch.einsum("bhqd,ehd->hbqe", out, mha.out_proj.weight.view(-1, h, d))


def head_outputs_one_head_holds_all(mha, query, key, value, mask=None):
    """Wrong: the whole output (less its bias) put in head 0, zeros for the others."""
    total = mha(query, key, value, mask)[0] - mha.out_proj.bias
    return torch.stack([total] + [torch.zeros_like(total)] * (mha.n_heads - 1))


FIRST_CASE = r"with 3 heads of width 3, query \(2, 2, 9\), key and value \(2, 5, 9\) and no mask: "


@pytest.mark.parametrize("student, verdict", [
    # the output bias in every head's term
    (lambda mha, *args: head_outputs_loop(mha, *args) + mha.out_proj.bias,
     FIRST_CASE + r"108 of 108 values are wrong.*; every term includes mha.out_proj.bias"),
    # the output bias shared among the heads: the sum is right, the terms are not
    (lambda mha, *args: head_outputs_loop(mha, *args) + mha.out_proj.bias / mha.n_heads,
     FIRST_CASE + r".*values are wrong.*; your terms add up to the module's output with its bias"),
    (head_outputs_one_head_holds_all,
     FIRST_CASE + r".*values are wrong.*; your terms add up to the module's output, but not head"),
    (head_outputs_rows, FIRST_CASE + r"108 of 108 values are wrong; the first is at index "
                                     r"\(0, 0, 0, 0\): expected -0.138069, got [-\d.]+$"),
    (head_outputs_whole_width_scale, FIRST_CASE + r"\d+ of 108 values are wrong"),
    # heads stacked after the batch
    (lambda *args: head_outputs_loop(*args).transpose(0, 1),
     FIRST_CASE + r"wrong shape: expected \(3, 2, 2, 9\), got \(2, 3, 2, 9\)"),
    # the mask ignored
    (lambda mha, query, key, value, mask=None: head_outputs_loop(mha, query, key, value),
     r"and a mask of shape \(\d, \d\): .*values are wrong"),
])
def test_7_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_head_outputs(student)


def test_7_3_rejects_changing_the_weights_in_place():
    def silences_in_place(mha, query, key, value, mask=None):
        result = head_outputs_loop(mha, query, key, value, mask)
        mha.out_proj.bias.zero_()
        return result

    with pytest.raises(CheckFailed, match=r"changed `mha.out_proj.bias` in place"):
        check_head_outputs(silences_in_place)


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


@pytest.mark.parametrize("student", [
    lambda mha, q, k, v: mha(q, k, v)[0],
    lambda mha, q, k, v: copy.deepcopy(mha)(q, k, v)[0],
    lambda mha, q, k, v: mha.forward(q, k, v)[0],
    lambda mha, q, k, v: MultiHeadAttention.forward(mha, q, k, v)[0],  # got past the old ban
])
def test_7_2_rejects_running_the_module(student):
    with pytest.raises(CheckFailed, match=r"^Exercise 7.2 \(batched_heads\): your function calls the "
                                          r"module itself \(mha\(...\) or its forward\), which the "
                                          r"exercise asks you not to use; fix the function as given: "
                                          r"all heads at once .*without a loop over the heads$"):
        check_batched_heads(student)
    module = MultiHeadAttention(4, 2)  # the module runs again afterwards
    assert module(torch.randn(1, 3, 4))[0].shape == (1, 3, 4)


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


# --- Third review: the package's converters refused ------------------------------------------


def test_7_4_refuses_the_package_converters():
    import attnbook.multihead as multihead

    for student, label in [
        (to_torch, "attnbook.multihead.to_torch"),
        (lambda mha: multihead.to_torch(mha), "attnbook.multihead.to_torch"),
        (lambda mha: copy_to_torch(mha, nn.MultiheadAttention(mha.d_model, mha.n_heads,
                                                              batch_first=True)), "copy_to_torch"),
    ]:
        with pytest.raises(CheckFailed, match=rf"^Exercise 7.4 \(to_torch\): your function calls "
                                              rf"{label}, which the exercise asks you not to use"):
            check_to_torch(student)
    module = MultiHeadAttention(4, 2)  # the converters work again afterwards
    assert to_torch(module).batch_first
