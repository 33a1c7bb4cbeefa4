"""Mutation tests of the chapter 5 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnbook.attention import causal_mask, padding_mask, scaled_dot_product_attention
from attnbook.checks.ch05 import (
    check_band_path_length,
    check_causal_self_attention,
    check_cross_attention,
    check_window_prediction,
    check_window_prediction_recorded,
)
from attnbook.checks.core import CheckFailed


def attend(q, k, v, mask=None):
    """Attention written out with einsum, as a student might."""
    scores = torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bqk,bkv->bqv", weights, v), weights


# --- 5.1 cross-attention over a padded memory ----------------------------------------------


def real_keys(memory, memory_lengths):
    """(B, 1, Lk): True at the real positions of each memory."""
    return (torch.arange(memory.shape[1])[None, :] < memory_lengths[:, None])[:, None, :]


def cross_with_chapter_function(x, memory, memory_lengths, w_q, w_k, w_v):
    """Correct: the chapter's projections and the package's attention with a (B, 1, Lk) mask."""
    return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v,
                                        real_keys(memory, memory_lengths))


def cross_sliced_per_sequence(x, memory, memory_lengths, w_q, w_k, w_v):
    """Correct, written differently: each sequence attends to its real memory only, and
    the weights are padded with zeros afterwards."""
    outputs, weights = [], torch.zeros(x.shape[0], x.shape[1], memory.shape[1], dtype=x.dtype)
    for b, length in enumerate(memory_lengths.tolist()):
        out, w = attend(x[b:b + 1] @ w_q, memory[b:b + 1, :length] @ w_k,
                        memory[b:b + 1, :length] @ w_v)
        outputs.append(out)
        weights[b, :, :length] = w[0]
    return torch.cat(outputs), weights


def cross_additive_mask(x, memory, memory_lengths, w_q, w_k, w_v):
    """Correct, written differently: an additive -inf mask from padding_mask."""
    bias = torch.zeros(memory.shape[:2], dtype=x.dtype).masked_fill(
        ~padding_mask(memory_lengths, memory.shape[1]), float("-inf"))
    return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v, bias[:, None, :])


@pytest.mark.parametrize("student", [cross_with_chapter_function, cross_sliced_per_sequence,
                                     cross_additive_mask])
def test_5_1_passes_correct_answers_written_differently(student, capsys):
    check_cross_attention(student)
    assert "✅ Exercise 5.1 (cross_attention): outputs and weights correct in all 13" in (
        capsys.readouterr().out)


def cross_after_softmax(x, memory, memory_lengths, w_q, w_k, w_v):
    """Wrong: the padding zeroed after the softmax, as in exercise 4.3's bug."""
    _, weights = attend(x @ w_q, memory @ w_k, memory @ w_v)
    weights = weights * real_keys(memory, memory_lengths)
    return weights @ (memory @ w_v), weights


WITH_3_4_6 = (r"with x \(3, 4, 2\), memory \(3, 6, 2\), memory_lengths \[6, 2, 4\] and widths "
              r"D = 2, d = 6, dv = 5: the output \(item 0\): 40 of 60 values are wrong")


@pytest.mark.parametrize("student, verdict", [
    # the padding ignored: the chapter's cross-attention as printed
    (lambda x, memory, lengths, w_q, w_k, w_v: attend(x @ w_q, memory @ w_k, memory @ w_v),
     WITH_3_4_6),
    (cross_after_softmax, WITH_3_4_6),
    # one position too many: <= instead of <
    (lambda x, memory, lengths, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, memory @ w_k, memory @ w_v,
        (torch.arange(memory.shape[1])[None] <= lengths[:, None])[:, None]), WITH_3_4_6),
    # the (B, Lk) mask not unsqueezed: it cannot broadcast against (B, Lq, Lk) ...
    (lambda x, memory, lengths, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, memory @ w_k, memory @ w_v, padding_mask(lengths, memory.shape[1])),
     r"with x \(2, 3, 6\), memory \(2, 4, 6\), memory_lengths \[4, 4\] .*your function raised "
     r"ValueError: mask of shape \(2, 4\) does not broadcast"),
    # the mask on the queries instead of the keys
    (lambda x, memory, lengths, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, memory @ w_k, memory @ w_v, padding_mask(lengths, x.shape[1])[:, :, None]),
     r"your function raised ValueError: lengths of shape \(2,\) must lie in \[0, max_len=3\]"),
    # keys from x: self-attention, not cross-attention
    (lambda x, memory, lengths, w_q, w_k, w_v: cross_with_chapter_function(
        x, x, lengths, w_q, w_k, w_v), r"raised|wrong shape|values are wrong"),
    (lambda *args: cross_with_chapter_function(*args)[0], "return \\(output, weights\\), got one tensor"),
])
def test_5_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_cross_attention(student)


def test_5_1_rejects_the_mask_unsqueezed_on_the_wrong_side_when_it_fits_by_chance():
    """A (B, Lk) mask used as (1, B, Lk): broadcasts whenever Lq == B, and is wrong there."""
    def mask_over_queries(x, memory, lengths, w_q, w_k, w_v):
        mask = padding_mask(lengths, memory.shape[1])
        if x.shape[1] != x.shape[0]:
            mask = mask[:, None, :]
        return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v, mask)

    with pytest.raises(CheckFailed, match=r"with x \(3, 3, \d\), memory \(3, 5, \d\), "
                                          r"memory_lengths \[5, 1, 2\].*values are wrong"):
        check_cross_attention(mask_over_queries)


def test_5_1_names_the_memory_changed_in_place():
    with pytest.raises(CheckFailed, match="changed its `memory` in place"):
        check_cross_attention(lambda x, memory, lengths, w_q, w_k, w_v: cross_with_chapter_function(
            x, memory.mul_(1.0).add_(0.0).masked_fill_(~real_keys(memory, lengths)[:, 0, :, None], 0),
            lengths, w_q, w_k, w_v))


# --- 5.2 causal self-attention -------------------------------------------------------------


def causal_loop(x, w_q, w_k, w_v):
    """Correct, written differently: one query at a time, over the keys up to it."""
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    length = x.shape[1]
    outputs, weights = [], torch.zeros(x.shape[0], length, length, dtype=x.dtype)
    for i in range(length):
        out_i, w_i = scaled_dot_product_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1])
        outputs.append(out_i)
        weights[:, i:i + 1, :i + 1] = w_i
    return torch.cat(outputs, dim=1), weights


@pytest.mark.parametrize("student", [
    causal_loop,
    lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v,
                                    torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()),
])
def test_5_2_passes_correct_answers_written_differently(student, capsys):
    check_causal_self_attention(student)
    assert "✅ Exercise 5.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v), "values are wrong"),  # no mask
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[1]).T),
     "values are wrong|NaN"),  # j >= i
    (lambda x, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[1]).tril(-1)), "values are wrong"),  # j < i
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[0])),
     "values are wrong|raised RuntimeError"),  # the batch size taken for the length
])
def test_5_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_causal_self_attention(student)


# --- 5.2 the bugs as given, one at a time -------------------------------------------------


def causal_as_given(x, w_q, w_k, w_v, fix_mask=False, fix_scale=False):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    width = q.shape[-1] if fix_scale else x.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(width)
    mask = causal_mask(x.shape[-2])
    scores = scores.masked_fill(~mask if fix_mask else mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@pytest.mark.parametrize("fixes, verdict", [
    ({}, "the result contains NaN"),  # as given
    ({"fix_scale": True}, "the result contains NaN"),  # only the scale fixed
    ({"fix_mask": True}, r"the output \(item 0\): \d+ of \d+ values are wrong"),  # only the mask
])
def test_5_2_rejects_each_bug_left_in(fixes, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_causal_self_attention(lambda *args: causal_as_given(*args, **fixes))


def test_5_2_passes_both_bugs_fixed(capsys):
    check_causal_self_attention(lambda *args: causal_as_given(*args, fix_mask=True,
                                                              fix_scale=True))
    assert "✅ Exercise 5.2" in capsys.readouterr().out


# --- 5.3 a sliding window's reach ----------------------------------------------------------


def test_5_3_records_whole_numbers(capsys):
    check_window_prediction_recorded(16, 4)  # wrong, but a prediction
    assert "✅ Exercise 5.3 (prediction): recorded 16 and 4 layers" in capsys.readouterr().out
    for args, verdict in [((..., 4), "replace the ..."), ((16.0, 4), "whole number"),
                          ((16, None), "whole number")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_window_prediction_recorded(*args)


def test_5_3_passes_right_numbers_as_numpy_and_tensors(capsys):
    check_window_prediction(17, np.int64(5), torch.tensor(17), 5)
    assert "✅ Exercise 5.3" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    # 256 / W: forgets that the window includes the query itself
    ((16, 4, 17, 5), r"predicted path length for W = 16 is 16, off by -1; the predicted "
                     r"path length for W = 64 is 4, off by -1"),
    # 255 // 15, rounded down
    ((17, 4, 17, 5), r"^Exercise 5.3 \(a sliding window's reach\): the predicted path length "
                     r"for W = 64 is 4, off by -1$"),
    # measured with `offset <= width`: a window of W + 1 keys
    ((17, 5, 16, 4), r"measured path length for W = 16 is 16, off by -1; the measured path "
                     r"length for W = 64 is 4, off by -1"),
    ((17, 5, 17.0, 5), "whole number"),
])
def test_5_3_rejects_wrong_numbers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_window_prediction(*args)


# --- 5.4 the path length of any band -------------------------------------------------------


def band_by_loop(n, back, ahead):
    """Correct, written differently: integer arithmetic, no math.ceil."""
    span = n - 1
    return max(-(-span // back) if back else 0, -(-span // ahead) if ahead else 0)


def band_by_simulation(n, back, ahead):
    """Correct, written differently: the interval each position has heard from."""
    low, high, layers = list(range(n)), list(range(n)), 0
    while True:
        new_low = [max(0, min(low[max(0, i - back):i + ahead + 1])) for i in range(n)]
        new_high = [min(n - 1, max(high[max(0, i - back):i + ahead + 1])) for i in range(n)]
        if new_low == low and new_high == high:
            return layers
        low, high, layers = new_low, new_high, layers + 1


@pytest.mark.parametrize("student", [band_by_loop, band_by_simulation])
def test_5_4_passes_correct_answers_written_differently(student, capsys):
    check_band_path_length(student)
    assert "✅ Exercise 5.4" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # n / back instead of (n - 1) / back
    (lambda n, b, a: max(math.ceil(n / b) if b else 0, math.ceil(n / a) if a else 0),
     r"band_path_length\(1, 2, 3\) gives 1, but the band needs 0 layers \(\+1\)"),
    # rounded down
    (lambda n, b, a: max((n - 1) // b if b else 0, (n - 1) // a if a else 0),
     r"band_path_length\(12, 3, 3\) gives 3, but the band needs 4 layers \(-1\)"),
    # only the backward connections count
    (lambda n, b, a: math.ceil((n - 1) / b) if b else 0,
     r"band_path_length\(10, 0, 3\) gives 0, but the band needs 3 layers"),
    # the faster direction instead of the slower
    (lambda n, b, a: min(x for x in (math.ceil((n - 1) / b) if b else 99,
                                     math.ceil((n - 1) / a) if a else 99)) % 99,
     r"band_path_length\(13, 4, 2\) gives 3, but the band needs 6 layers"),
    # a float
    (lambda n, b, a: float(band_by_loop(n, b, a)), "return a whole number"),
    # divides by zero when a direction has no connections
    (lambda n, b, a: max(math.ceil((n - 1) / b), math.ceil((n - 1) / a)),
     r"band_path_length\(1, 0, 0\), your function raised ZeroDivisionError"),
])
def test_5_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_band_path_length(student)


# --- Second review: answers the first version of these tests did not try -------------------


def causal_renormalised(x, w_q, w_k, w_v):
    """Correct, written differently: softmax over all keys, zero the future, renormalise."""
    scores = (x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])
    weights = torch.softmax(scores, dim=-1) * causal_mask(x.shape[1])
    weights = weights / weights.sum(-1, keepdim=True)
    return weights @ (x @ w_v), weights


def causal_not_renormalised(x, w_q, w_k, w_v):
    scores = (x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])
    weights = torch.softmax(scores, dim=-1) * causal_mask(x.shape[1])
    return weights @ (x @ w_v), weights


def causal_tril_of_scores(x, w_q, w_k, w_v):
    """Wrong: tril() puts a score of 0, not -inf, on the future keys."""
    scores = ((x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])).tril()
    weights = torch.softmax(scores, dim=-1)
    return weights @ (x @ w_v), weights


def test_5_2_second_review(capsys):
    check_causal_self_attention(causal_renormalised)
    assert "✅ Exercise 5.2" in capsys.readouterr().out
    for student in (causal_not_renormalised, causal_tril_of_scores):
        with pytest.raises(CheckFailed, match=r"the output \(item 0\): \d+ of \d+ values are wrong"):
            check_causal_self_attention(student)
