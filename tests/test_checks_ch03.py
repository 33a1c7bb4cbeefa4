"""A mutation test of chapter 3's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch

from attnbook.attention import gaussian_window, local_window, masked_softmax
from attnbook.checks import CheckFailed
from attnbook.checks.ch03 import (
    check_concat_score,
    check_cost_per_step,
    check_dot_score,
    check_general_score,
    check_local_p_weights,
)


def fails(check, student, match):
    with pytest.raises(CheckFailed, match=match) as failure:
        check(student)
    assert "\n" not in str(failure.value), "a verdict is one line"
    return str(failure.value)


# Exercise 3.1: dot_score


@pytest.mark.parametrize("student", [
    lambda query, keys: torch.einsum("bd,bsd->bs", query, keys),
    lambda query, keys: torch.bmm(keys, query[:, :, None])[:, :, 0],
    lambda query, keys: torch.linalg.vecdot(keys, query[:, None, :]),
])
def test_3_1_accepts_right_answers_written_differently(student, capsys):
    check_dot_score(student)
    assert "✅ Exercise 3.1" in capsys.readouterr().out


def dot_unsqueezes_in_place(query, keys):
    return (keys * query.unsqueeze_(1)).sum(dim=-1)


@pytest.mark.parametrize("student, match", [
    (lambda query, keys: keys @ query.T, r"on test 1 of 6.*wrong shape: expected \(1, 1\), got \(1, 1, 1\)"),
    (lambda query, keys: torch.bmm(keys, query[:, :, None]).squeeze(),
     r"on test 1 of 6.*wrong shape: expected \(1, 1\), got \(\)"),
    (lambda query, keys: (keys * query[:, None]).sum(-1) / math.sqrt(query.shape[1]),
     r"on test 2 of 6.*values are wrong"),
    (lambda query, keys: (keys * query).sum(-1), r"on test 3 of 6, with inputs \(shape \(3, 2\), "
                                                 r"shape \(3, 3, 2\)\): \d+ of 9 values are wrong"),
    (dot_unsqueezes_in_place, r"changed its `query` in place"),
])
def test_3_1_names_what_is_wrong(student, match):
    fails(check_dot_score, student, match)


# Exercise 3.2: general_score


@pytest.mark.parametrize("student", [
    lambda query, keys, W: ((query @ W)[:, None, :] * keys).sum(-1),  # (q^T W) k
    lambda query, keys, W: torch.einsum("bq,qk,bsk->bs", query, W, keys),
])
def test_3_2_accepts_right_answers_written_differently(student, capsys):
    check_general_score(student)
    assert "✅ Exercise 3.2" in capsys.readouterr().out


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
def test_3_2_names_what_is_wrong(student, match):
    fails(check_general_score, student, match)


def test_3_2_w_transposed_with_equal_sizes_gives_wrong_values():
    def transposed_when_square(query, keys, W):
        if W.shape[0] != W.shape[1]:
            return ((keys @ W.T) * query[:, None]).sum(-1)
        return ((keys @ W) * query[:, None]).sum(-1)

    fails(check_general_score, transposed_when_square, r"on test 2 of 5.*values are wrong")


# Exercise 3.3: concat_score


def concat_split_weights(query, keys, W, b, v):
    Dq = query.shape[1]
    hidden = torch.tanh((query @ W[:, :Dq].T + b)[:, None, :] + keys @ W[:, Dq:].T)
    return hidden @ v


def concat_einsum(query, keys, W, b, v):
    pairs = torch.cat([query[:, None, :].repeat(1, keys.shape[1], 1), keys], dim=-1)
    return torch.einsum("bsa,a->bs", torch.tanh(torch.einsum("bsd,ad->bsa", pairs, W) + b), v)


@pytest.mark.parametrize("student", [concat_split_weights, concat_einsum])
def test_3_3_accepts_right_answers_written_differently(student, capsys):
    check_concat_score(student)
    assert "✅ Exercise 3.3" in capsys.readouterr().out


def concat(query, keys, W, b, v, order="qk", bias="inside"):
    copies = query[:, None, :].expand(-1, keys.shape[1], -1)
    pairs = torch.cat([copies, keys] if order == "qk" else [keys, copies], dim=-1)
    if bias == "inside":
        return torch.tanh(pairs @ W.T + b) @ v
    if bias == "outside":
        return (torch.tanh(pairs @ W.T) + b) @ v
    return torch.tanh(pairs @ W.T) @ v


def concat_unsqueezes_in_place(query, keys, W, b, v):
    pairs = torch.cat([query.unsqueeze_(1).expand(-1, keys.shape[1], -1), keys], dim=-1)
    return torch.tanh(pairs @ W.T + b) @ v


@pytest.mark.parametrize("student, match", [
    (lambda *args: concat(*args, order="kq"), r"on test 1 of 5.*values are wrong"),
    (lambda *args: concat(*args, bias="none"), r"on test 1 of 5.*values are wrong"),
    (lambda *args: concat(*args, bias="outside"), r"on test 1 of 5.*values are wrong"),
    (lambda *args: (torch.tanh(torch.cat([args[0][:, None].expand(-1, args[1].shape[1], -1), args[1]],
                                         -1) @ args[2].T + args[3]) @ args[4][:, None]).squeeze(),
     r"on test 1 of 5.*wrong shape: expected \(1, 1\), got \(\)"),
    (concat_unsqueezes_in_place, r"changed its `query` in place"),
])
def test_3_3_names_what_is_wrong(student, match):
    fails(check_concat_score, student, match)


# Exercise 3.4: local_p_weights


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
def test_3_4_accepts_right_answers_written_differently(student, capsys):
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
    (lambda *a: local(*a, sigma=lambda D: D), r"past both ends \(D = 3, S = 5\): \d+ of 15 values"),
    (lambda *a: local(*a, centre_of_bump=torch.round), r"past both ends.*values are wrong"),
    (lambda *a: local(*a, use_mask=False), r"values are wrong"),
    (lambda *a: local(*a, inside=lambda distance, D: distance < D), r"past both ends.*values are wrong"),
    (lambda s, c, m, D: local(s, c, m, 2), r"past both ends \(D = 3, S = 5\).*values are wrong"),
    (lambda *a: local(*a, softmax=naive_softmax),
     r"a row whose window holds only padding \(D = 1\): the result contains NaN"),
    (lambda *a: local(*a, renormalise=True), r"values are wrong"),
    (local_rounds_centers_in_place, r"changed its `centers` in place"),
    (lambda *a: local(*a, sigma=lambda D: D // 2), r"past both ends.*values are wrong"),
    (local_window_around_unrounded_centre, r"D = 1 in a long input: \d+ of 48 values are wrong"),
    (lambda s, c, m, D: local(s, c, m, D).double(), r"past both ends.*wrong dtype: expected "
                                                    r"torch.float32, got torch.float64"),
    (lambda *a: local(*a, centre_of_bump=lambda c: torch.tensor(c.tolist())),
     r"past both ends.*the gradient with respect to argument 2 is wrong"),
])
def test_3_4_names_what_is_wrong(student, match):
    fails(check_local_p_weights, student, match)


# Exercise 3.5: the cost of a step


@pytest.mark.parametrize("precomputed, from_scratch", [
    (80 * 128, 80 * 128 * (128 + 1)),
    (np.int64(80) * 128, 80 * 128 * 128 + 80 * 128),
])
def test_3_5_accepts_right_answers_written_differently(precomputed, from_scratch, capsys):
    check_cost_per_step(precomputed, from_scratch)
    assert capsys.readouterr().out.count("✅ Exercise 3.5") == 2


@pytest.mark.parametrize("precomputed, from_scratch, match", [
    (80 * 128, 80 * 128 * 128, r"from scratch\): 1310720 is not right\. W k costs d \* d"),
    (80 * 128, 128 * 128 + 80 * 128, r"from scratch\): 26624 is not right"),  # q^T W first
    (80 * 128 * 128, 80 * 128 * 128 + 80 * 128, r"precomputed\): 1310720 is not right"),
    (80 * 128 / 1, 80 * 128 * 129, r"precomputed\): the answer must be a whole number \(an int\), "
                                   r"got a float \(10240.0\)"),
    (torch.tensor(80) * 128, 80 * 128 * 129, r"whole number.*got a tensor of shape \(\)"),
    (..., ..., r"replace the \.\.\. with your answer"),
])
def test_3_5_names_what_is_wrong(precomputed, from_scratch, match):
    with pytest.raises(CheckFailed, match=match):
        check_cost_per_step(precomputed, from_scratch)
