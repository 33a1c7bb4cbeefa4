"""Mutation tests of the chapter 4 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention import scaled_dot_product_attention
from attnbook.checks.ch04 import (
    check_causal_mask,
    check_masked_attention,
    check_nadaraya_watson,
    check_padding_mask,
    check_softmax_with_temperature,
)
from attnbook.checks.core import CheckFailed

# --- 4.1 kernel regression ------------------------------------------------------------------


def nw_explicit_kernel(x_query, x_train, y_train, bandwidth):
    kernel = torch.exp(-((x_query[:, None] - x_train[None, :]) ** 2) / (2 * bandwidth**2))
    return (kernel * y_train).sum(-1) / kernel.sum(-1)


def nw_loop(x_query, x_train, y_train, bandwidth):
    out = []
    for x in x_query.tolist():
        weights = torch.softmax(-((x - x_train) ** 2) / (2 * bandwidth**2), dim=0)
        out.append((weights * y_train).sum())
    return torch.stack(out)


def nw_ignores_bandwidth(x_query, x_train, y_train, bandwidth):
    return nw_explicit_kernel(x_query, x_train, y_train, 1.0)


def nw_softmax_over_queries(x_query, x_train, y_train, bandwidth):
    scores = -((x_query[:, None] - x_train[None, :]) ** 2) / (2 * bandwidth**2)
    return torch.softmax(scores, dim=0) @ y_train


def nw_float32(x_query, x_train, y_train, bandwidth):
    return nw_explicit_kernel(x_query.float(), x_train.float(), y_train.float(), bandwidth)


def nw_in_place(x_query, x_train, y_train, bandwidth):
    x_query -= 0  # harmless so far...
    y_train -= y_train.mean()  # ...but this centres the caller's targets
    return nw_explicit_kernel(x_query, x_train, y_train, bandwidth) + y_train.mean()


@pytest.mark.parametrize("student", [nw_explicit_kernel, nw_loop])
def test_4_1_passes_correct_answers_written_differently(student, capsys):
    check_nadaraya_watson(student)
    assert "✅ Exercise 4.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (nw_ignores_bandwidth, "values are wrong"),
    (nw_softmax_over_queries, "values are wrong"),
    (nw_float32, "wrong dtype: expected torch.float64, got torch.float32"),
    (nw_in_place, "changed its `y_train` in place"),
])
def test_4_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_nadaraya_watson(student)


# --- 4.2 padding mask ----------------------------------------------------------------------


def padding_mask_loop(lengths, max_len):
    rows = [[position < length for position in range(max_len)] for length in lengths.tolist()]
    return torch.tensor(rows, dtype=torch.bool).reshape(len(lengths), max_len)


@pytest.mark.parametrize("student", [
    padding_mask_loop,
    lambda lengths, max_len: torch.arange(max_len).expand(len(lengths), -1) < lengths.unsqueeze(1),
])
def test_4_2_passes_correct_answers_written_differently(student, capsys):
    check_padding_mask(student)
    assert "✅ Exercise 4.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # ignores max_len: only right when the longest sequence fills it (the old check's blind spot)
    (lambda lengths, max_len: torch.arange(int(lengths.max()))[None] < lengths[:, None],
     r"inputs \(shape \(\d,\), \d\): wrong shape"),
    (lambda lengths, max_len: torch.arange(max_len)[None] <= lengths[:, None], "values are wrong"),
    (lambda lengths, max_len: (torch.arange(max_len)[None] < lengths[:, None]).long(),
     "must have dtype torch.bool, got torch.int64"),
    (lambda lengths, max_len: torch.arange(max_len)[None] < lengths, r"your function raised|wrong shape"),
])
def test_4_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_padding_mask(student)


# --- 4.3 causal mask -----------------------------------------------------------------------


@pytest.mark.parametrize("student", [
    lambda n: torch.ones(n, n, dtype=torch.bool).tril(),
    lambda n: ~torch.ones(n, n, dtype=torch.bool).triu(1),
])
def test_4_3_passes_correct_answers_written_differently(student, capsys):
    check_causal_mask(student)
    assert "✅ Exercise 4.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(), "values are wrong"),  # j >= i
    (lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1), "test 1 of 5.*values are wrong"),  # j < i
    (lambda n: torch.ones(n, n).tril(), "must have dtype torch.bool, got torch.float32"),
])
def test_4_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_causal_mask(student)


# --- 4.4 masked attention ------------------------------------------------------------------


def scores_of(q, k, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


def attention_nan_to_num(q, k, v, mask):
    """The old reference solution: NaN-free values, NaN gradients under an additive mask."""
    weights = torch.nan_to_num(torch.softmax(scores_of(q, k, mask), dim=-1), nan=0.0)
    return weights @ v, weights


def attention_boolean_only(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ v, weights


def attention_3d_only(q, k, v, mask):
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    return attention_safe_softmax(q, k, v, mask, scores)


def attention_safe_softmax(q, k, v, mask, scores=None):
    """Correct and written differently: zero the dead rows before softmax, then mask them."""
    if scores is None:
        scores = torch.einsum("...qd,...kd->...qk", q, k) / q.shape[-1] ** 0.5
    allowed = mask if mask.dtype == torch.bool else torch.isfinite(mask)
    allowed = allowed.expand(scores.shape)
    if mask.dtype != torch.bool:
        scores = scores + torch.where(allowed, mask, torch.zeros_like(mask))
    live = allowed.any(dim=-1, keepdim=True)
    scores = torch.where(allowed, scores, torch.full_like(scores, -1e300))
    scores = torch.where(live, scores, torch.zeros_like(scores))
    weights = torch.softmax(scores, dim=-1) * live
    return torch.einsum("...qk,...kd->...qd", weights, v), weights


def attention_mask_inverted(q, k, v, mask):
    if mask.dtype == torch.bool:
        return attention_safe_softmax(q, k, v, ~mask)
    return attention_safe_softmax(q, k, v, mask)


def attention_no_scale(q, k, v, mask):
    return scaled_dot_product_attention(q, k, v, mask, scale=1.0)


def attention_inverts_mask_in_place(q, k, v, mask):
    if mask.dtype == torch.bool:
        mask = mask.logical_not_().logical_not_()  # back as it was... but see below
        mask[..., -1] = True  # lets every query see its last key, in the caller's mask
    return scaled_dot_product_attention(q, k, v, mask)


def attention_wrong_axis(q, k, v, mask):
    scores = scores_of(q, k, mask)
    live = torch.isfinite(scores).any(-2, keepdim=True)
    weights = torch.softmax(torch.where(live, scores, torch.zeros_like(scores)), dim=-2) * live
    return weights @ v, weights


def attention_detached(q, k, v, mask):
    output, weights = scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), mask)
    return output, weights


@pytest.mark.parametrize("student", [scaled_dot_product_attention, attention_safe_softmax])
def test_4_4_passes_correct_answers_written_differently(student, capsys):
    check_masked_attention(student)
    assert "✅ Exercise 4.4 (masked_attention): values and gradients correct" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (attention_nan_to_num, "additive mask .* the values are right but the gradient with respect to "
                           "`q` contains NaN"),
    (attention_boolean_only, r"your function raised TypeError: ~ .*\(line \d+: 'scores = "),
    (attention_3d_only, "your function raised RuntimeError"),
    (attention_mask_inverted, "values are wrong"),
    (attention_no_scale, "values are wrong"),
    (attention_inverts_mask_in_place, "changed its `mask` in place"),
    (attention_wrong_axis, "values are wrong"),
    (attention_detached, "does not depend on the inputs through autograd"),
])
def test_4_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_masked_attention(student)


def test_4_4_solution_in_the_notebook_form_is_nan_free_in_values_and_gradients():
    """The reference solution's pattern (exp of scores minus a safe maximum, divide by a safe sum)."""
    def solution(q, k, v, mask):
        scores = scores_of(q, k, mask)
        row_max = scores.amax(dim=-1, keepdim=True).detach()
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        exp = torch.exp(scores - row_max)
        total = exp.sum(dim=-1, keepdim=True)
        weights = exp / torch.where(total > 0, total, torch.ones_like(total))
        return weights @ v, weights

    check_masked_attention(solution)


# --- 4.5 softmax with temperature -----------------------------------------------------------


def softmax_logsumexp(logits, temperature):
    scaled = logits / temperature
    return torch.exp(scaled - torch.logsumexp(scaled, dim=-1, keepdim=True))


def softmax_max_first(logits, temperature):
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # subtract before dividing
    exp = torch.exp(shifted / temperature)
    return exp / exp.sum(-1, keepdim=True)


@pytest.mark.parametrize("student", [softmax_logsumexp, softmax_max_first])
def test_4_5_passes_correct_answers_written_differently(student, capsys):
    check_softmax_with_temperature(student)
    assert "✅ Exercise 4.5" in capsys.readouterr().out


def softmax_global_max(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.max())  # one maximum for the whole tensor: rows underflow
    return exp / exp.sum(-1, keepdim=True)


def softmax_dim_1(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.amax(dim=1, keepdim=True))
    return exp / exp.sum(dim=1, keepdim=True)


def softmax_in_place(logits, temperature):
    logits /= temperature
    return softmax_logsumexp(logits, 1.0)


@pytest.mark.parametrize("student, verdict", [
    (lambda logits, t: softmax_logsumexp(logits, 1.0), "values are wrong"),  # ignores temperature
    (lambda logits, t: softmax_logsumexp(logits * t, 1.0), "values are wrong"),
    (lambda logits, t: torch.exp(logits / t) / torch.exp(logits / t).sum(-1, keepdim=True), "NaN"),
    (softmax_global_max, "NaN"),
    (softmax_dim_1, r"shape \(\d, \d, \d\), [\d.]+\).*values are wrong"),  # 2-D only
    (softmax_in_place, "changed its `logits` in place"),
])
def test_4_5_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_softmax_with_temperature(student)



# --- Second review: answers the first version of these tests did not try -------------------


def nw_train_by_query(x_query, x_train, y_train, bandwidth):
    """Correct, written differently: scores laid out (N, Q), softmax over the training points."""
    scores = -((x_train[:, None] - x_query[None, :]) ** 2) / (2 * bandwidth**2)
    return y_train @ torch.softmax(scores, dim=0)


def nw_squeezed(x_query, x_train, y_train, bandwidth):
    """Wrong for a single query: (Q, 1).squeeze() is 0-d when Q = 1."""
    weights = torch.softmax(-((x_query[:, None] - x_train) ** 2) / (2 * bandwidth**2), dim=-1)
    return (weights @ y_train[:, None]).squeeze()


def test_4_1_second_review(capsys):
    check_nadaraya_watson(nw_train_by_query)
    assert "✅ Exercise 4.1" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"inputs \(shape \(1,\),.*wrong shape: expected \(1,\), got \(\)"):
        check_nadaraya_watson(nw_squeezed)
    with pytest.raises(CheckFailed, match="values are wrong"):  # h, not h^2
        check_nadaraya_watson(lambda xq, xt, yt, h: nw_explicit_kernel(xq, xt, yt, math.sqrt(h)))


def attention_2d_mask_expanded_over_batch(q, k, v, mask):
    """Wrong on 4-D inputs: expands an (Lq, Lk) mask to (B, Lq, Lk), as for 3-D inputs."""
    if mask.dim() == 2 and q.dim() >= 3:
        mask = mask.expand(q.shape[0], -1, -1)
    return scaled_dot_product_attention(q, k, v, mask)


def attention_2d_mask_as_batch_rows(q, k, v, mask):
    """Wrong on 4-D inputs: reads a 2-D mask as (B, Lk) padding and broadcasts it that way."""
    if q.dim() == 4 and mask.dim() == 2:
        mask = mask[:, None, None, :]
    return scaled_dot_product_attention(q, k, v, mask)


def attention_logsumexp(q, k, v, mask):
    """Wrong: exp(s - logsumexp(s)) with the dead rows' -inf replaced; NaN gradients remain."""
    scores = scores_of(q, k, mask)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    weights = torch.exp(scores - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
    return weights @ v, weights


def attention_in_place_exp(q, k, v, mask):
    """Wrong: exp_() and div_() overwrite what autograd needs for the backward pass."""
    scores = scores_of(q, k, mask)
    row_max = scores.amax(dim=-1, keepdim=True)
    exp = (scores - torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))).exp_()
    total = exp.sum(dim=-1, keepdim=True)
    weights = exp.div_(torch.where(total > 0, total, torch.ones_like(total)))
    return weights @ v, weights


def attention_scale_by_value_width(q, k, v, mask):
    return scaled_dot_product_attention(q, k, v, mask, scale=1 / math.sqrt(v.shape[-1]))


def attention_huge_negative_then_zero(q, k, v, mask):
    """Correct, written differently: -1e9 for forbidden keys, then multiply by the allowed set."""
    allowed = mask if mask.dtype == torch.bool else torch.isfinite(mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask.dtype != torch.bool:
        scores = scores + torch.where(allowed, mask, torch.zeros_like(mask))
    weights = torch.softmax(scores.masked_fill(~allowed, -1e9), dim=-1) * allowed
    return weights @ v, weights


def attention_row_loop(q, k, v, mask):
    """Correct, written differently: one row at a time, zeros for a row that sees nothing."""
    scores = scores_of(q, k, mask)
    rows = [torch.zeros_like(r) if torch.isinf(r).all() else torch.softmax(r, dim=0)
            for r in scores.reshape(-1, scores.shape[-1])]
    weights = torch.stack(rows).reshape(scores.shape)
    return weights @ v, weights


@pytest.mark.parametrize("student", [attention_huge_negative_then_zero, attention_row_loop])
def test_4_4_second_review_passes(student, capsys):
    check_masked_attention(student)
    assert "✅ Exercise 4.4" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # an (Lq, Lk) mask on 4-D inputs: not in the old check's cases, so both got through
    (attention_2d_mask_expanded_over_batch,
     r"inputs \(shape \(\d, \d, \d, \d\), .*shape \(\d, \d\)\), your function raised ValueError"),
    (attention_2d_mask_as_batch_rows, r"shape \(\d, \d\)\): the output \(item 0\): .*values are wrong"),
    (attention_logsumexp, "additive mask .* gradient with respect to `q` contains NaN"),
    (attention_in_place_exp, "the backward pass through your function raised RuntimeError: one of the "
                             "variables needed for gradient computation has been modified"),
    (attention_scale_by_value_width, "values are wrong"),
])
def test_4_4_second_review_rejects(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_masked_attention(student)


def softmax_shift_by_mean(logits, temperature):
    """Wrong: shifting by the mean cancels a row's offset but not a spread of thousands."""
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled.mean(dim=-1, keepdim=True))
    return exp / exp.sum(-1, keepdim=True)


def softmax_shift_by_first(logits, temperature):
    scaled = logits / temperature
    exp = torch.exp(scaled - scaled[..., :1])
    return exp / exp.sum(-1, keepdim=True)


def softmax_clamped_exponent(logits, temperature):
    """Correct, written differently: exponents clamped at -700 (exp would underflow there anyway)."""
    scaled = logits / temperature
    exp = torch.exp((scaled - scaled.amax(dim=-1, keepdim=True)).clamp_min(-700))
    return exp / exp.sum(-1, keepdim=True)


def test_4_5_second_review_passes(capsys):
    check_softmax_with_temperature(softmax_clamped_exponent)
    assert "✅ Exercise 4.5" in capsys.readouterr().out
    assert torch.softmax(torch.zeros(2), 0).tolist() == [0.5, 0.5]  # PyTorch's softmax is back


@pytest.mark.parametrize("student, verdict", [
    # both passed the old check, whose rows had a huge offset but a small spread
    (softmax_shift_by_mean, r"shape \(\d, \d\), [\d.]+\): the result contains NaN"),
    (softmax_shift_by_first, "the result contains NaN"),
    # the exercise says not to call PyTorch's softmax; the old check could not see it
    (lambda logits, t: torch.softmax(logits / t, dim=-1), "calls torch.softmax, which the exercise"),
    (lambda logits, t: torch.nn.functional.softmax(logits / t, dim=-1), "calls F.softmax"),
    (lambda logits, t: (logits / t).softmax(-1), "calls Tensor.softmax"),
    (lambda logits, t: torch.log_softmax(logits / t, -1).exp(), "calls torch.log_softmax"),
])
def test_4_5_second_review_rejects(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_softmax_with_temperature(student)
    assert torch.softmax(torch.zeros(2), 0).tolist() == [0.5, 0.5]
    assert torch.Tensor.softmax is torch._C.TensorBase.softmax
