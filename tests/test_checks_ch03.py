"""A mutation test of chapter 3's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch

from attnbook.attention import gaussian_window, local_attention_weights, local_window, masked_softmax
from attnbook.checks import CheckFailed
from attnbook.checks.ch03 import (
    check_general_costs,
    check_general_score,
    check_local_p_mass,
    check_local_p_mass_recorded,
    check_local_p_weights,
    check_local_window,
    local_p_mass,
)


def fails(check, student, match):
    with pytest.raises(CheckFailed, match=match) as failure:
        check(student)
    assert "\n" not in str(failure.value), "a verdict is one line"
    return str(failure.value)


# Exercise 3.1: general_score


@pytest.mark.parametrize("student", [
    lambda query, keys, W: ((query @ W)[:, None, :] * keys).sum(-1),  # (q^T W) k
    lambda query, keys, W: torch.einsum("bq,qk,bsk->bs", query, W, keys),
])
def test_3_1_accepts_right_answers_written_differently(student, capsys):
    check_general_score(student)
    assert "✅ Exercise 3.1" in capsys.readouterr().out


def general_transposes_in_place(query, keys, W):
    return ((keys @ W.t_()) * query[:, None]).sum(-1)


@pytest.mark.parametrize("student, match", [
    (lambda query, keys, W: ((keys @ W) * query[:, None]).sum(-1),
     r"on inputs \(shape \(1, 2\), shape \(1, 1, 3\), shape \(2, 3\)\), your function raised "
     r"RuntimeError.*'\(lambda query, keys, W: \(\(keys @ W\)"),
    (lambda query, keys, W: ((query @ W.T)[:, None] * keys).sum(-1), r"raised RuntimeError"),
    (lambda query, keys, W: (keys @ W.T @ query[:, :, None]).squeeze(),
     r"on test 1 of 5.*wrong shape: expected \(1, 1\), got \(\)"),
    (general_transposes_in_place, r"changed its `W` in place"),
])
def test_3_1_names_what_is_wrong(student, match):
    fails(check_general_score, student, match)


def test_3_1_w_transposed_with_equal_sizes_gives_wrong_values():
    def transposed_when_square(query, keys, W):
        if W.shape[0] != W.shape[1]:
            return ((keys @ W.T) * query[:, None]).sum(-1)
        return ((keys @ W) * query[:, None]).sum(-1)

    fails(check_general_score, transposed_when_square, r"on test 2 of 5.*values are wrong")


# Exercise 3.3: local_p_weights


def local_with_helpers(scores, centers, mask, half_width):
    S = scores.shape[1]
    weights = masked_softmax(scores, local_window(centers, S, half_width) & mask)
    return weights * gaussian_window(centers, S, half_width / 2)


def local_loop(scores, centers, mask, half_width):
    rows = []
    for row, p, real in zip(scores, centers, mask):
        centre = math.floor(p.detach().item() + 0.5)  # halves up; no centre is a half-integer
        allowed = torch.tensor([abs(s - centre) <= half_width for s in range(len(row))]) & real
        exp = torch.where(allowed, torch.exp(row - row[allowed].max() if allowed.any() else row), 0)
        weights = exp / exp.sum() if allowed.any() else exp
        s = torch.arange(len(row), dtype=row.dtype)
        rows.append(weights * torch.exp(-(s - p) ** 2 / (2 * (half_width / 2) ** 2)))
    return torch.stack(rows)


def local_fills_minus_1e9(scores, centers, mask, half_width):
    """torch.softmax with -1e9 outside the window, then zero there: an empty row's uniform
    weights become zeros, and masked_fill passes no gradient to the filled places."""
    positions = torch.arange(scores.shape[1])[None, :]
    allowed = ((positions - centers.round()[:, None]).abs() <= half_width) & mask
    weights = torch.softmax(scores.masked_fill(~allowed, -1e9), dim=-1) * allowed
    return weights * torch.exp(-((positions - centers[:, None]) ** 2) / (2 * (half_width / 2) ** 2))


@pytest.mark.parametrize("student", [local_with_helpers, local_loop, local_fills_minus_1e9])
def test_3_3_accepts_right_answers_written_differently(student, capsys):
    check_local_p_weights(student)
    assert "gradients with respect to the scores and the centres are right too" in capsys.readouterr().out


def local(scores, centers, mask, half_width, sigma=None, centre_of_bump=None, use_mask=True,
          inside=lambda distance, D: distance <= D, softmax=masked_softmax, renormalise=False):
    positions = torch.arange(scores.shape[1])[None, :]
    window = inside((positions - centers.round()[:, None]).abs(), half_width)
    weights = softmax(scores, window & mask if use_mask else window)
    sigma = half_width / 2 if sigma is None else sigma(half_width)
    p = centers if centre_of_bump is None else centre_of_bump(centers)
    weights = weights * torch.exp(-((positions - p[:, None]) ** 2) / (2 * sigma**2))
    return weights / weights.sum(-1, keepdim=True) if renormalise else weights


def naive_softmax(scores, allowed):
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def local_window_around_unrounded_centre(scores, centers, mask, half_width):
    """|s - p| <= D with the unrounded p: one position fewer in most windows."""
    positions = torch.arange(scores.shape[1])[None, :]
    allowed = ((positions - centers[:, None]).abs() <= half_width) & mask
    weights = masked_softmax(scores, allowed)
    return weights * torch.exp(-((positions - centers[:, None]) ** 2) / (2 * (half_width / 2) ** 2))


def local_rounds_centers_in_place(scores, centers, mask, half_width):
    window = (torch.arange(scores.shape[1])[None, :] - centers.round_()[:, None]).abs() <= half_width
    return local(scores, centers, mask, half_width) * window


@pytest.mark.parametrize("student, match", [
    (lambda *a: local(*a, sigma=lambda D: D), r"past both ends \(w = 3, S = 5\): \d+ of 15 values"),
    (lambda *a: local(*a, centre_of_bump=torch.round), r"past both ends.*values are wrong"),
    (lambda *a: local(*a, use_mask=False), r"values are wrong"),
    (lambda *a: local(*a, inside=lambda distance, D: distance < D), r"past both ends.*values are wrong"),
    (lambda s, c, m, D: local(s, c, m, 2), r"past both ends \(w = 3, S = 5\).*values are wrong"),
    (lambda *a: local(*a, softmax=naive_softmax),
     r"a row whose window holds only padding \(w = 1\): the result contains NaN"),
    (lambda *a: local(*a, renormalise=True), r"values are wrong"),
    (local_rounds_centers_in_place, r"changed its `centers` in place"),
    (lambda *a: local(*a, sigma=lambda D: D // 2), r"past both ends.*values are wrong"),
    (local_window_around_unrounded_centre, r"w = 1 in a long input: \d+ of 48 values are wrong"),
    (lambda s, c, m, D: local(s, c, m, D).double(), r"with scores of dtype torch.float32, your "
                                                    r"weights have dtype torch.float64; "
                                                    r"return the scores' dtype"),
    (lambda *a: local(*a, centre_of_bump=lambda c: torch.tensor(c.tolist())),
     r"past both ends.*the gradient with respect to `centers` is wrong"),
    (lambda s, c, m, D: local(s.detach(), c, m, D),
     r"past both ends.*the gradient with respect to `scores` is wrong"),
])
def test_3_3_names_what_is_wrong(student, match):
    fails(check_local_p_weights, student, match)


# Exercise 3.2: the general score's two orders


def keys_first(S, T, d_q, d_k):
    return S * d_q * d_k + T * S * d_q


def query_first(S, T, d_q, d_k):
    return T * (d_q * d_k + S * d_k)


def test_3_2_accepts_right_answers_written_differently(capsys):
    check_general_costs(lambda S, T, d_q, d_k: S * d_q * (d_k + T),
                        lambda S, T, d_q, d_k: int(np.int64(T) * d_k * (d_q + S)))
    assert "✅ Exercise 3.2" in capsys.readouterr().out


@pytest.mark.parametrize("keys, query, match", [
    # keys first, but W k recomputed at every step (the chapter's "from scratch")
    (lambda S, T, d_q, d_k: T * (S * d_q * d_k + S * d_q), query_first,
     r"cost_keys_first\(S=80, T=30, d_q=128, d_k=128\) gives 39,628,800, but that order "
     r"costs 1,617,920 multiply-adds \(38,010,880 more\)"),
    # query first without the T: q^T W counted once for the whole output
    (keys_first, lambda S, T, d_q, d_k: d_q * d_k + T * S * d_k,
     r"cost_query_first\(S=80, T=30, d_q=128, d_k=128\) gives .* fewer"),
    # d_q and d_k swapped in the dot products of the keys-first order
    (lambda S, T, d_q, d_k: S * d_q * d_k + T * S * d_k, query_first,
     r"cost_keys_first\(S=80, T=30, d_q=128, d_k=256\)"),
    # per step, not per output
    (lambda S, T, d_q, d_k: S * d_q * d_k + S * d_q, query_first,
     r"cost_keys_first\(S=80, T=30"),
    # a float
    (lambda S, T, d_q, d_k: float(keys_first(S, T, d_q, d_k)), query_first,
     r"returned 1617920.0; return a whole number"),
])
def test_3_2_names_what_is_wrong(keys, query, match):
    with pytest.raises(CheckFailed, match=match):
        check_general_costs(keys, query)


# Exercise 3.4: local_window (debug)


def window_as_given(centers, length, half_width):  # the exercise's buggy function
    positions = torch.arange(length)
    start = centers.long() - half_width
    end = start + 2 * half_width
    return (positions[None, :] >= start[:, None]) & (positions[None, :] <= end[:, None])


@pytest.mark.parametrize("student", [
    local_window,
    lambda c, n, w: (torch.arange(n)[None] - torch.floor(c + 0.5)[:, None]).abs() <= w,
    lambda c, n, w: torch.stack([torch.tensor([abs(s - round(p)) <= w for s in range(n)])
                                 for p in c.tolist()]),
])
def test_3_4_accepts_right_answers_written_differently(student, capsys):
    check_local_window(student)
    assert "✅ Exercise 3.4" in capsys.readouterr().out


def window_rounds_in_place(centers, length, half_width):
    centers.round_()
    return (torch.arange(length)[None] - centers[:, None]).abs() <= half_width


@pytest.mark.parametrize("student, match", [
    (window_as_given, r"centres with fractions above and below one half .*5 of 48 values are "
                      r"wrong; the first is at index \(0, 1\): expected False, got True"),
    # the off-by-one: < instead of <=, a window of 2w - 1 positions
    (lambda c, n, w: (torch.arange(n)[None] - c.round()[:, None]).abs() < w,
     r"centres with fractions above and below one half .*values are wrong"),
    # around the unrounded centre
    (lambda c, n, w: (torch.arange(n)[None] - c[:, None]).abs() <= w,
     r"centres with fractions above and below one half .*values are wrong"),
    # ceil instead of round: right for 3.7, wrong for 3.2
    (lambda c, n, w: (torch.arange(n)[None] - c.ceil()[:, None]).abs() <= w,
     r"values are wrong"),
    # a float mask
    (lambda c, n, w: ((torch.arange(n)[None] - c.round()[:, None]).abs() <= w).float(),
     r"return a boolean mask"),
    (window_rounds_in_place, r"changed its `centers` in place"),
])
def test_3_4_names_what_is_wrong(student, match):
    fails(check_local_window, student, match)


# Exercise 3.5: how much weight local-p keeps


def measure_mass():
    scores, mask = torch.zeros(1, 60), torch.ones(1, 60, dtype=torch.bool)
    return {w: local_attention_weights(scores, torch.tensor([30.0]), mask, w, gaussian=True).sum()
            for w in (2, 16)}


def test_3_5_passes_an_estimate_and_a_measurement_as_tensors(capsys):
    integral = 0.5 * math.sqrt(math.pi / 2) * math.erf(math.sqrt(2))  # w -> infinity
    estimate = {2: (1 + 2 * math.exp(-0.5) + 2 * math.exp(-2)) / 5, 16: integral}
    check_local_p_mass_recorded(estimate)
    check_local_p_mass(estimate, measure_mass())  # 0-d tensors
    out = capsys.readouterr().out
    assert "✅ Exercise 3.5 (prediction)" in out and "✅ Exercise 3.5 (how much" in out


@pytest.mark.parametrize("predicted, measured, match", [
    # "a softmax sums to one": the Gaussian forgotten
    ({2: 1.0, 16: 1.0}, None, r"the predicted sum for w = 2 is 1, off by \+0.503; "
                              r"the predicted sum for w = 16 is 1, off by \+0.416"),
    # sigma = w instead of w / 2
    ({w: sum(math.exp(-k * k / (2 * w * w)) for k in range(-w, w + 1)) / (2 * w + 1)
      for w in (2, 16)}, None, r"the predicted sum for w = 2 is 0.7956, off by \+0.299"),
    # measured without the Gaussian
    ({2: 0.5, 16: 0.59}, {w: 1.0 for w in (2, 16)}, r"the measured sum for w = 2 is 1"),
    # measured at w = 8 for both
    ({2: 0.5, 16: 0.59}, {w: local_p_mass(8) for w in (2, 16)},
     r"the measured sum for w = 2 is 0.5\d*, off by \+0.0"),
])
def test_3_5_names_what_is_off(predicted, measured, match):
    with pytest.raises(CheckFailed, match=match):
        check_local_p_mass(predicted, measured if measured is not None else measure_mass())


@pytest.mark.parametrize("predicted, match", [
    (..., r"replace the \.\.\. in your prediction"),
    ({2: 0.5}, r"must be a dict with the keys \[2, 16\]"),
    ({2: 0.5, 16: "0.6"}, r"prediction\[16\] must be a number"),
])
def test_3_5_a_prediction_must_be_written_down_in_form(predicted, match):
    with pytest.raises(CheckFailed, match=match):
        check_local_p_mass_recorded(predicted)


def test_3_3_accepts_weights_computed_in_float64_and_cast_back(capsys):
    check_local_p_weights(lambda s, c, m, w: local(s.double(), c.double(), m, w).float())
    assert "✅ Exercise 3.3" in capsys.readouterr().out
