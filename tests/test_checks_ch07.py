"""Mutation tests of the chapter 7 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnbook.attention import scaled_dot_product_attention
from attnbook.checks.ch07 import (
    check_heads_loop,
    check_merge_heads,
    check_parameter_count,
    check_split_heads,
    check_to_torch,
)
from attnbook.checks.core import CheckFailed

# --- 7.1 split heads -----------------------------------------------------------------------


def split_with_chunks(x, n_heads):
    """Correct, written differently: chunk the width and stack the heads."""
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


def split_with_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).permute(0, 2, 1, 3)


@pytest.mark.parametrize("student", [split_with_chunks, split_with_unflatten])
def test_7_1_passes_correct_answers_written_differently(student, capsys):
    check_split_heads(student)
    assert "✅ Exercise 7.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # reinterprets the memory instead of moving the heads: right only if L or H is 1
    (lambda x, n_heads: x.reshape(x.shape[0], n_heads, x.shape[1], -1), "values are wrong"),
    # heads as the interleaved columns h, h + H, h + 2H, ...
    (lambda x, n_heads: x.unflatten(-1, (-1, n_heads)).permute(0, 3, 1, 2), "values are wrong"),
    (lambda x, n_heads: x.view(x.shape[0], x.shape[1], n_heads, -1),
     "wrong shape|values are wrong"),  # no transpose
    (lambda x, n_heads: split_with_chunks(x, n_heads).squeeze(), "wrong shape"),  # drops sizes of 1
])
def test_7_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_split_heads(student)


# --- 7.2 merge heads -----------------------------------------------------------------------


def merge_with_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


@pytest.mark.parametrize("student", [merge_with_cat, lambda x: x.permute(0, 2, 1, 3).flatten(2)])
def test_7_2_passes_correct_answers_written_differently(student, capsys):
    check_merge_heads(student)
    assert "✅ Exercise 7.2" in capsys.readouterr().out


def merge_in_place(x):
    out = merge_with_cat(x)
    x.zero_()  # "free" the heads
    return out


@pytest.mark.parametrize("student, verdict", [
    (lambda x: x.reshape(x.shape[0], x.shape[2], -1), "values are wrong"),  # no transpose
    (lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1),
     r"your function raised RuntimeError: view size is not compatible"),
    (lambda x: torch.cat(x.unbind(dim=1), dim=1), "wrong shape"),  # heads along the length
    (merge_in_place, "changed its `x` in place"),
])
def test_7_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_merge_heads(student)


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


# --- 7.5 parameter count -------------------------------------------------------------------


def test_7_5_accepts_the_count_written_differently(capsys):
    for answer in (4 * (64 * 64 + 64), 4 * 64 * 65, 16_640):
        check_parameter_count(answer)
    assert capsys.readouterr().out.count("✅") == 3


@pytest.mark.parametrize("answer, verdict", [
    (4 * 64 * 64, "is not right"),  # no biases
    (3 * (64 * 64 + 64), "is not right"),  # forgets the output projection
    (4 * (64 * 64 + 64) * 8, "is not right"),  # per head
    (torch.tensor(16_640), "must be a whole number"),
    (16_640.0, "must be a whole number"),
])
def test_7_5_rejects_wrong_answers(answer, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_parameter_count(answer)


# --- Second review: answers the first version of these tests did not try -------------------


def test_7_1_second_review(capsys):
    check_split_heads(lambda x, n_heads: torch.stack(x.split(x.shape[-1] // n_heads, dim=-1), dim=1))
    assert "✅ Exercise 7.1" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="wrong shape"):  # chunks of width n_heads, not n_heads chunks
        check_split_heads(lambda x, n_heads: torch.stack(x.split(n_heads, dim=-1), dim=1))
    with pytest.raises(CheckFailed, match="changed its `x` in place"):
        check_split_heads(lambda x, n_heads: split_with_chunks(x.mul_(2.0), n_heads))


def test_7_2_second_review(capsys):
    check_merge_heads(lambda x: x.transpose(1, 2).contiguous().view(x.shape[0], x.shape[2], -1))
    assert "✅ Exercise 7.2" in capsys.readouterr().out
    # squeeze() drops a batch and a length of 1: the old check never had both at once
    with pytest.raises(CheckFailed,
                       match=r"inputs \(shape \(1, \d, 1, \d\)\): wrong shape: expected \(1, 1, \d+\)"):
        check_merge_heads(lambda x: merge_with_cat(x).squeeze())
    with pytest.raises(CheckFailed, match="values are wrong"):  # head-major inside each column block
        check_merge_heads(lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1))


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


@pytest.mark.parametrize("answer, verdict", [
    (4 * (64 * 64 + 64) // 8, "is not right"),  # one head's share
    ("16640", "must be a whole number .* got a str"),
])
def test_7_5_second_review(answer, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_parameter_count(answer)
