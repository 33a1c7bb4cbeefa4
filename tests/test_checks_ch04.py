"""Mutation tests of the chapter 4 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import attnbook.attention as attention_module
from attnbook.attention import padding_mask, scaled_dot_product_attention
from attnbook.checks.ch04 import (
    check_mask_prediction,
    check_mask_prediction_recorded,
    check_masked_attention,
    check_padded_attention,
    check_softmax_with_temperature,
    check_temperature_for,
    without_calls,
)
from attnbook.checks.core import CheckFailed

# --- 4.1 the temperature for a given confidence ---------------------------------------------


def temperature_by_odds(delta, p, n):
    """Correct, written differently: the top key's odds against each other key."""
    return delta / (math.log(p / (1 - p)) + math.log(n - 1))


def temperature_as_tensor(delta, p, n):
    """Correct, as a 0-d tensor."""
    return torch.tensor(delta) / torch.log(torch.tensor(p * (n - 1) / (1 - p)))


@pytest.mark.parametrize("student", [temperature_by_odds, temperature_as_tensor])
def test_4_1_passes_correct_answers_written_differently(student, capsys):
    check_temperature_for(student)
    assert "✅ Exercise 4.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # the two-key formula: forgets that the n - 1 others share 1 - p
    # (right for two keys; at p = 0.5 of five keys it divides by log 1 = 0)
    (lambda d, p, n: d / math.log(p / (1 - p)),
     r"temperature_for\(3, 0.5, 5\), your function raised ZeroDivisionError"),
    (lambda d, p, n: d / math.log(p / (1 - p)) if p != 0.5 else 1.0,
     r"temperature_for\(3, 0.5, 5\) gives 1, but the answer is 2.16404"),
    # the temperature multiplies the scores instead of dividing them
    (lambda d, p, n: math.log(p * (n - 1) / (1 - p)) / d,
     r"temperature_for\(1, 0.75, 2\) gives 1.09861, .* top key gets weight"),
    # log base 10
    (lambda d, p, n: d / math.log10(p * (n - 1) / (1 - p)), "top key gets weight"),
    # n keys all counted as rivals
    (lambda d, p, n: d / math.log(p * n / (1 - p)), r"temperature_for\(1, 0.75, 2\)"),
    (lambda d, p, n: [d], "return one number"),
])
def test_4_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_temperature_for(student)


# --- 4.2 how much may the queries see? ------------------------------------------------------


def test_4_2_records_any_whole_numbers(capsys):
    check_mask_prediction_recorded(40, 3)  # wrong, but a prediction
    assert "✅ Exercise 4.2 (prediction): recorded" in capsys.readouterr().out
    for args, verdict in [((..., 3), "replace the ..."), ((40.0, 3), "whole number"),
                          ((40, "3"), "whole number")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_mask_prediction_recorded(*args)


def test_4_2_passes_right_numbers_as_tensors_and_numpy(capsys):
    check_mask_prediction(29, 7, torch.tensor(29), np.int64(7))
    assert "✅ Exercise 4.2" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    # the padded queries counted as seeing nothing (a mask on queries too)
    ((19, 3, 29, 7), r"predicted number of allowed pairs is 19, off by -10; the predicted "
                     r"number of rows that see one key is 3, off by -4"),
    # the causal mask alone: 3 x 15
    ((45, 3, 29, 7), r"predicted number of allowed pairs is 45, off by \+16"),
    # measured on the padding mask alone, without the causal one
    ((29, 7, 40, 5), r"measured number of allowed pairs is 40, off by \+11; the measured "
                     r"number of rows that see one key is 5, off by -2"),
    ((29, 7, torch.tensor(29.0), 7), "whole number"),
])
def test_4_2_rejects_wrong_numbers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_mask_prediction(*args)


# --- 4.3 weights that do not add up --------------------------------------------------------


def padded_as_given(q, k, v, lengths):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    weights = weights * padding_mask(lengths, k.shape[-2])[:, None, :]
    return weights @ v, weights


def padded_renormalized(q, k, v, lengths):
    """Correct, written differently: mask after the softmax, then renormalize."""
    _, weights = padded_as_given(q, k, v, lengths)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v, weights


def padded_with_package(q, k, v, lengths):
    """Correct, written differently: a (B, 1, 1, Lk)-free boolean mask of shape (B, Lq, Lk)."""
    real = torch.arange(k.shape[-2])[None, None, :] < lengths[:, None, None]
    return scaled_dot_product_attention(q, k, v, real.expand(-1, q.shape[-2], -1))


def padded_mask_on_queries(q, k, v, lengths):
    real = padding_mask(lengths, q.shape[-2])[:, :, None]  # hides padded queries instead
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~real, -1e9), dim=-1)
    return weights @ v, weights


def padded_inverted(q, k, v, lengths):
    real = padding_mask(lengths, k.shape[-2])[:, None, :]
    return scaled_dot_product_attention(q, k, v, ~real)  # attends to the padding only


def padded_unscaled(q, k, v, lengths):
    real = padding_mask(lengths, k.shape[-2])[:, None, :]
    return scaled_dot_product_attention(q, k, v, real, scale=1.0)


@pytest.mark.parametrize("student", [padded_renormalized, padded_with_package])
def test_4_3_passes_correct_answers_written_differently(student, capsys):
    check_padded_attention(student)
    assert "✅ Exercise 4.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # the bug as given: caught on the first padded batch, not on the one without padding
    (padded_as_given, r"lengths \[6, 2, 4\]: the output \(item 0\): .*values are wrong"),
    (padded_mask_on_queries, r"lengths \[4, 4\], your function raised ValueError: lengths"),
    (padded_inverted, r"lengths \[4, 4\]: .*values are wrong"),
    (padded_unscaled, r"lengths \[4, 4\]: the output \(item 0\)"),
    (lambda q, k, v, lengths: padded_with_package(q, k, v, lengths)[0], "return \\(output, weights\\)"),
])
def test_4_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_padded_attention(student)


# --- 4.4 masked attention ------------------------------------------------------------------


def own_attention(q, k, v, mask, scale=None):
    """Correct: the notebook's solution with an optional scale, on which the wrong answers
    below are built (the check refuses the package's scaled_dot_product_attention)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max)
    total = exp.sum(dim=-1, keepdim=True)
    weights = exp / torch.where(total > 0, total, torch.ones_like(total))
    return weights @ v, weights


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
    return own_attention(q, k, v, mask, scale=1.0)


def attention_inverts_mask_in_place(q, k, v, mask):
    if mask.dtype == torch.bool:
        mask = mask.logical_not_().logical_not_()  # back as it was... but see below
        mask[..., -1] = True  # lets every query see its last key, in the caller's mask
    return own_attention(q, k, v, mask)


def attention_wrong_axis(q, k, v, mask):
    scores = scores_of(q, k, mask)
    live = torch.isfinite(scores).any(-2, keepdim=True)
    weights = torch.softmax(torch.where(live, scores, torch.zeros_like(scores)), dim=-2) * live
    return weights @ v, weights


def attention_detached(q, k, v, mask):
    output, weights = own_attention(q.detach(), k.detach(), v.detach(), mask)
    return output, weights


@pytest.mark.parametrize("student", [own_attention, attention_safe_softmax])
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


def attention_2d_mask_expanded_over_batch(q, k, v, mask):
    """Wrong on 4-D inputs: expands an (Lq, Lk) mask to (B, Lq, Lk), as for 3-D inputs."""
    if mask.dim() == 2 and q.dim() >= 3:
        mask = mask.expand(q.shape[0], -1, -1)
    return own_attention(q, k, v, mask)


def attention_2d_mask_as_batch_rows(q, k, v, mask):
    """Wrong on 4-D inputs: reads a 2-D mask as (B, Lk) padding and broadcasts it that way."""
    if q.dim() == 4 and mask.dim() == 2:
        mask = mask[:, None, None, :]
    return own_attention(q, k, v, mask)


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
    return own_attention(q, k, v, mask, scale=1 / math.sqrt(v.shape[-1]))


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
     r"inputs \(shape \(\d, \d, \d, \d\), .*shape \(\d, \d\)\), your function raised RuntimeError"),
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


# --- Third review: the package's own answer, and softmaxes the ban did not see --------------


@pytest.mark.parametrize("student, verdict", [
    (scaled_dot_product_attention, "calls scaled_dot_product_attention, which the exercise"),
    (lambda q, k, v, mask: attention_module.scaled_dot_product_attention(q, k, v, mask),
     "calls scaled_dot_product_attention"),
    (lambda q, k, v, mask: (lambda w: (w @ v, w))(attention_module.masked_softmax(
        scores_of(q, k, mask) if mask.dtype != torch.bool else
        q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask if mask.dtype == torch.bool
        else None)), "calls masked_softmax, which the exercise asks you not to use; write"),
])
def test_4_4_refuses_the_package_answer(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_masked_attention(student)
    # the package's functions work again afterwards
    q = torch.randn(2, 3, dtype=torch.float64)
    assert torch.allclose(scaled_dot_product_attention(q, q, q)[0],
                          own_attention(q, q, q, torch.ones(2, 2, dtype=torch.bool))[0])


@pytest.mark.parametrize("student, verdict", [
    (lambda logits, t: torch._softmax(logits / t, -1, False), "calls torch._softmax"),
    (lambda logits, t: torch._log_softmax(logits / t, -1, False).exp(), "calls torch._log_softmax"),
    (lambda logits, t: attention_module.masked_softmax(logits / t),
     "calls masked_softmax, which the exercise asks you not to use; subtract"),
])
def test_4_5_refuses_private_and_package_softmaxes(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_softmax_with_temperature(student)
    assert torch._softmax(torch.zeros(2), 0, False).tolist() == [0.5, 0.5]
    assert attention_module.masked_softmax(torch.zeros(2)).tolist() == [0.5, 0.5]


def test_without_calls_restores_the_functions_after_a_crash_and_keeps_defaults():
    def crashes(x):
        raise ValueError("boom")

    wrapped = without_calls(crashes, "Test", [(attention_module.masked_softmax, "masked_softmax")],
                            "advice")
    with pytest.raises(ValueError, match="boom"):
        wrapped(1)
    # the default mask=None still applies once the code is restored
    assert attention_module.masked_softmax(torch.zeros(3)).tolist() == pytest.approx([1 / 3] * 3)
    refused = without_calls(lambda: attention_module.masked_softmax(torch.zeros(3)), "Test",
                            [(attention_module.masked_softmax, "masked_softmax")], "do it yourself")
    with pytest.raises(CheckFailed, match="^Test: your function calls masked_softmax, which the "
                                          "exercise asks you not to use; do it yourself$"):
        refused()
