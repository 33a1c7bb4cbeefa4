"""Mutation tests of the chapter 6 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbook.checks.ch06 import (
    check_alibi_bias,
    check_reach_prediction,
    check_reach_prediction_recorded,
    check_rope,
    check_rope_base_experiment,
    check_rope_score,
)
from attnbook.checks.core import CheckFailed
from attnbook.positional import alibi_slopes, apply_rope

# --- 6.2 RoPE ------------------------------------------------------------------------------


def rope_complex(x, positions):
    """Correct, written differently: pairs as complex numbers, multiplied by e^{i m theta}."""
    d = x.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64),
                           positions.double()[:, None] * theta)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


def rope_halves(x, positions):
    """Wrong for this exercise: pairs dimension i with i + d/2 (GPT-NeoX style)."""
    d = x.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.double()[:, None] * theta
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def rope_in_place(x, positions):
    rotated = rope_complex(x, positions)
    x.copy_(rotated)
    return x


def rope_3d_only(x, positions):
    batch, length, d = x.shape  # fails on 2-D and 4-D x
    return rope_complex(x, positions)


def rope_ignores_positions(x, positions):
    return rope_complex(x, torch.arange(x.shape[-2]))


@pytest.mark.parametrize("student", [rope_complex])
def test_6_2_passes_a_correct_answer_written_differently(student, capsys):
    check_rope(student)
    assert "✅ Exercise 6.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (rope_halves, "values are wrong"),
    (lambda x, positions: rope_complex(x, -positions), "values are wrong"),  # turns the wrong way
    (rope_ignores_positions, "values are wrong"),
    (rope_in_place, "changed its `x` in place"),
    (rope_3d_only, r"your function raised ValueError: .*\(line \d+: 'batch, length, d = x.shape"),
    (lambda x, positions: rope_complex(x, positions).float(), "wrong dtype: expected torch.float64"),
])
def test_6_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_rope(student)


# --- 6.4 ALiBi bias ------------------------------------------------------------------------


def alibi_loop(n_heads, n_queries, n_keys):
    slopes = alibi_slopes(n_heads)
    bias = torch.empty(n_heads, n_queries, n_keys)
    for h in range(n_heads):
        for r in range(n_queries):
            for j in range(n_keys):
                bias[h, r, j] = -slopes[h] * abs(r + n_keys - n_queries - j)
    return bias


def alibi_queries_first(n_heads, n_queries, n_keys):
    """Wrong: queries at positions 0..Lq-1, as if there were no cache."""
    distance = (torch.arange(n_queries)[:, None] - torch.arange(n_keys)[None, :]).abs()
    return (-alibi_slopes(n_heads)[:, None, None] * distance).float()


def alibi_signed(n_heads, n_queries, n_keys):
    """Wrong: i - j without the absolute value."""
    distance = (torch.arange(n_queries)[:, None] + n_keys - n_queries - torch.arange(n_keys)[None, :])
    return (-alibi_slopes(n_heads)[:, None, None] * distance).float()


def alibi_off_by_one(n_heads, n_queries, n_keys):
    """Wrong: a fix of the bug as given that places the queries one position too early."""
    query_positions = torch.arange(n_queries) + (n_keys - n_queries - 1)
    distance = (query_positions[:, None] - torch.arange(n_keys)[None, :]).abs()
    return (-alibi_slopes(n_heads)[:, None, None] * distance).float()


def alibi_reversed_heads(n_heads, n_queries, n_keys):
    return alibi_loop(n_heads, n_queries, n_keys).flip(0)


def test_6_4_passes_a_correct_answer_written_differently(capsys):
    check_alibi_bias(alibi_loop)
    assert "✅ Exercise 6.4" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (alibi_queries_first, "values are wrong"),  # the bug as given
    (alibi_off_by_one, r"with inputs \(6, 8, 11\): 528 of 528 values are wrong"),
    (alibi_signed, "values are wrong"),
    (alibi_reversed_heads, "values are wrong"),
    (lambda h, q, k: alibi_loop(h, q, k).double(), "wrong dtype: expected torch.float32"),
    (lambda h, q, k: alibi_loop(h, q, k)[0], "wrong shape"),  # one head only
])
def test_6_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_alibi_bias(student)


# --- Second review: answers the first version of these tests did not try -------------------


def rope_rotate_every_two(x, positions):
    """Correct, written differently: x * cos + rotate_every_two(x) * sin, angles interleaved."""
    d = x.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = (positions.double()[:, None] * theta).repeat_interleave(2, dim=-1)
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


def rope_repeat_not_interleave(x, positions):
    """Wrong: adjacent pairs, but the angles repeated as [theta, theta] (the half-split layout)."""
    d = x.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = (positions.double()[:, None] * theta).repeat(1, 2)
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


def rope_updates_even_first(x, positions):
    """Wrong: writes the new even dimensions, then computes the odd ones from them."""
    d = x.shape[-1]
    angles = positions.double()[:, None] * 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    out = x.clone()
    out[..., 0::2] = out[..., 0::2] * cos - out[..., 1::2] * sin
    out[..., 1::2] = out[..., 0::2] * sin + out[..., 1::2] * cos
    return out


def rope_pairs_by_3d_slicing(x, positions):
    """Wrong beyond 3-D: x[:, :, 0::2] slices the length of a 4-D x, not its width."""
    d = x.shape[-1]
    angles = positions.double()[:, None] * 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[:, :, 0::2], x[:, :, 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def test_6_2_second_review(capsys):
    check_rope(rope_rotate_every_two)
    assert "✅ Exercise 6.2" in capsys.readouterr().out
    for student in (rope_repeat_not_interleave, rope_updates_even_first):
        with pytest.raises(CheckFailed, match="values are wrong"):
            check_rope(student)
    with pytest.raises(CheckFailed, match=r"raised RuntimeError.*\(line \d+: 'return torch.stack"):
        check_rope(rope_pairs_by_3d_slicing)


def test_6_4_second_review(capsys):
    check_alibi_bias(lambda h, q, k: alibi_loop(h, k, k)[:, k - q:])  # all positions, the last rows
    assert "✅ Exercise 6.4" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="values are wrong"):  # the first rows
        check_alibi_bias(lambda h, q, k: alibi_loop(h, k, k)[:, :q])
    with pytest.raises(CheckFailed, match="values are wrong"):  # -inf on the future keys
        check_alibi_bias(lambda h, q, k: alibi_loop(h, q, k).masked_fill(
            torch.arange(k)[None] > (torch.arange(q) + k - q)[:, None], float("-inf")))


# --- 6.1 how far ALiBi looks -----------------------------------------------------------------


def test_6_1_records_whole_numbers(capsys):
    check_reach_prediction_recorded(8, 256)  # wrong, but a prediction
    assert "✅ Exercise 6.1 (prediction): recorded distances 8 and 256" in capsys.readouterr().out
    for args, verdict in [((..., 256), "replace the ..."), ((36.8, 256), "whole number")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_reach_prediction_recorded(*args)


def test_6_1_passes_right_numbers_as_numpy_and_tensors(capsys):
    check_reach_prediction(np.int64(37), 1179, 37, torch.tensor(1179))
    assert "✅ Exercise 6.1" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    # 1 / slope: where the bias reaches -1, not where the weight falls below 1%
    ((8, 256, 37, 1179), r"predicted distance for head 2 is 8, off by -29; the predicted "
                         r"distance for head 7 is 256, off by -923"),
    # log10(100) / slope: the wrong logarithm
    ((16, 512, 37, 1179), r"predicted distance for head 2 is 16, off by -21"),
    # heads counted from 1: slopes 2^-2 and 2^-7 measured
    ((37, 1179, 19, 590), r"measured distance for head 2 is 19, off by -18; the measured "
                          r"distance for head 7 is 590, off by -589"),
    # the last distance still above 1%, one too few
    ((36, 1178, 37, 1179), r"off by -1; the predicted distance for head 7 is 1178, off by -1"),
])
def test_6_1_rejects_wrong_numbers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_reach_prediction(*args)


# --- 6.3 RoPE's score from the offset alone --------------------------------------------------


def score_complex(q, k, offset):
    """Correct, written differently: pairs as complex numbers; Re(q conj(k) e^{i offset theta})."""
    d = q.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    qc = torch.complex(q[0::2], q[1::2])
    kc = torch.complex(k[0::2], k[1::2])
    return (qc * kc.conj() * torch.polar(torch.ones_like(theta), offset * theta)).real.sum()


def score_by_rotating_k_back(q, k, offset):
    """Correct, written differently: rotate k's pairs by -offset (by hand) and take the plain
    dot product."""
    d = q.shape[-1]
    angle = -offset * 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    k_even, k_odd = k[0::2], k[1::2]
    rotated = torch.stack([k_even * angle.cos() - k_odd * angle.sin(),
                           k_even * angle.sin() + k_odd * angle.cos()], dim=-1).flatten()
    return float(q @ rotated)


def score_float32_angles(q, k, offset):
    """Correct, with the angles in float32 (torch.arange(0, d, 2) / d is float32): off by a
    few parts in a million, which the old tolerance of 1e-6 * |expected| refused."""
    d = q.shape[-1]
    angle = offset * 10_000 ** (-torch.arange(0, d, 2) / d)
    aligned = q[0::2] * k[0::2] + q[1::2] * k[1::2]
    crossed = q[1::2] * k[0::2] - q[0::2] * k[1::2]
    return (aligned * torch.cos(angle) - crossed * torch.sin(angle)).sum()


def score_sign_flipped(q, k, offset):
    """Wrong: the offset taken as n - m."""
    return score_complex(q, k, -offset)


def score_theta_per_index(q, k, offset):
    """Wrong: theta_i = 10000^(-i/d) instead of 10000^(-2i/d)."""
    d = q.shape[-1]
    theta = 10_000 ** (-torch.arange(d // 2, dtype=torch.float64) / d)
    qc, kc = torch.complex(q[0::2], q[1::2]), torch.complex(k[0::2], k[1::2])
    return (qc * kc.conj() * torch.polar(torch.ones_like(theta), offset * theta)).real.sum()


def score_without_cross_term(q, k, offset):
    """Wrong: only the cos part, as if each pair's dot product were scaled by cos."""
    d = q.shape[-1]
    theta = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    aligned = q[0::2] * k[0::2] + q[1::2] * k[1::2]
    return (aligned * torch.cos(offset * theta)).sum()


@pytest.mark.parametrize("student", [score_complex, score_by_rotating_k_back,
                                     score_float32_angles])
def test_6_3_passes_correct_answers_written_differently(student, capsys):
    check_rope_score(student)
    assert "✅ Exercise 6.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (score_sign_flipped, r"with d = 2 and offset m - n = 3: expected"),
    (score_theta_per_index, r"with d = 4 and offset m - n = 0|with d = 8 and offset m - n = 1:"),
    (score_without_cross_term, r"with d = 2 and offset m - n = 3: expected"),
    (lambda q, k, offset: score_complex(q, k, offset)[None], "return one number"),
])
def test_6_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_rope_score(student)


def test_6_3_names_an_argument_changed_in_place():
    with pytest.raises(CheckFailed, match="changed its `k` in place"):
        check_rope_score(lambda q, k, offset: score_complex(q, k.mul_(2) / 2, offset))


# --- 6.5 RoPE's base -------------------------------------------------------------------------

RIGHT = {100: 5, 10_000: 28, 1_000_000: 122}


def test_6_5_passes_right_measurements_as_numpy_and_tensors(capsys):
    check_rope_base_experiment({100: np.int64(5), 10_000: torch.tensor(28), 1_000_000: 122},
                               True)
    assert "✅ Exercise 6.5" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    # the last offset still above half, not the first below
    (({100: 4, 10_000: 27, 1_000_000: 121}, True), r"half_distance\[100\] is 4, off by -1;"),
    # right numbers, wrong conclusion
    ((RIGHT, False), r"your measurements are right, but your conclusion \(False\)"),
    # q = k = ones(32): another width
    (({100: 4, 10_000: 16, 1_000_000: 52}, True),
     r"half_distance\[100\] is 4, off by -1; half_distance\[10000\] is 16, off by -12"),
    (({100: 5, 10_000: 28}, True), "must be a dict with the keys"),
    ((RIGHT, "yes"), "must be True or False"),
    ((..., True), "replace the ..."),
])
def test_6_5_rejects_wrong_answers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_rope_base_experiment(*args)


# --- Third review: the package's answer refused; bools from NumPy and PyTorch accepted --------


def test_6_2_refuses_apply_rope_under_any_name():
    import attnbook.positional as positional

    for student in (apply_rope, lambda x, positions: positional.apply_rope(x, positions),
                    lambda x, positions: apply_rope(x, positions, 10_000.0)):
        with pytest.raises(CheckFailed, match="^Exercise 6.2 \\(rope\\): your function calls "
                                              "apply_rope, which the exercise asks you not to use"):
            check_rope(student)
    x = torch.randn(3, 4)
    assert torch.equal(apply_rope(x, torch.zeros(3, dtype=torch.long)), x)  # restored, defaults too


def test_6_3_refuses_apply_rope():
    with pytest.raises(CheckFailed, match="rope_score\\): your function calls apply_rope, .*work on "
                                          "the pairs of q and k directly"):
        check_rope_score(lambda q, k, offset: apply_rope(q[None], torch.tensor([offset]))[0] @ k)


def test_6_3_shows_enough_digits_to_see_the_difference():
    with pytest.raises(CheckFailed, match=r"with d = 2 and offset m - n = 3: expected -?\d\.\d{6,}, "
                                          r"got -?\d\.\d{6,} \(off by [+-][\d.e-]+\)"):
        check_rope_score(lambda q, k, offset: score_complex(q, k, offset) * (1 + 3e-4))


def test_6_4_refuses_alibi_bias():
    from attnbook.positional import alibi_bias

    with pytest.raises(CheckFailed, match="alibi\\): your function calls alibi_bias, which the "
                                          "exercise asks you not to use; fix the function as given"):
        check_alibi_bias(lambda h, q, k: alibi_bias(h, q, k))


@pytest.mark.parametrize("conclusion", [np.True_, torch.tensor(True), np.bool_(True)])
def test_6_5_accepts_numpy_and_tensor_bools(conclusion, capsys):
    check_rope_base_experiment(RIGHT, conclusion)
    assert "✅ Exercise 6.5" in capsys.readouterr().out


@pytest.mark.parametrize("conclusion, verdict", [
    (np.False_, r"your measurements are right, but your conclusion \(False\)"),
    (torch.tensor([True]), "must be True or False"),  # not a 0-d tensor
    (torch.tensor(1), "must be True or False"),  # an integer, not a bool
])
def test_6_5_rejects_wrong_conclusions_of_other_types(conclusion, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_rope_base_experiment(RIGHT, conclusion)
