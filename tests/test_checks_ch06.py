"""Mutation tests of the chapter 6 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.checks.ch06 import check_alibi_bias, check_alibi_slopes, check_rope, check_sinusoidal_table
from attnbook.checks.core import CheckFailed
from attnbook.positional import alibi_slopes

# --- 6.1 sinusoidal table ------------------------------------------------------------------


def table_float32_exp_log(n_positions, d_model):
    """Correct, written differently: frequencies as exp(-log(10000) 2i/D), all in float32."""
    positions = torch.arange(n_positions, dtype=torch.float32)[:, None]
    speeds = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model))
    angles = positions * speeds
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleaved


def table_halves(n_positions, d_model):
    """Wrong: sines in the first half of the width, cosines in the second (not interleaved)."""
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]
    speeds = 10_000 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([torch.sin(positions * speeds), torch.cos(positions * speeds)], dim=1).float()


def table_exponent_i_over_d(n_positions, d_model):
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]
    speeds = 10_000 ** (-torch.arange(d_model // 2, dtype=torch.float64) / d_model)  # i/D, not 2i/D
    return torch.stack([torch.sin(positions * speeds), torch.cos(positions * speeds)], -1).flatten(1).float()


def test_6_1_passes_a_correct_answer_written_differently(capsys):
    check_sinusoidal_table(table_float32_exp_log)
    assert "✅ Exercise 6.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (table_halves, "values are wrong"),
    (table_exponent_i_over_d, "values are wrong"),
    (lambda n, d: table_float32_exp_log(n, d).double(), "wrong dtype: expected torch.float32"),
    (lambda n, d: table_float32_exp_log(n, d).flip(-1), "values are wrong"),  # cos before sin
])
def test_6_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_sinusoidal_table(student)


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


# --- 6.3 ALiBi slopes ----------------------------------------------------------------------


def slopes_as_list(n_heads):
    """Correct, written differently: a list, the every-other slopes of 2P as 2^(-4 (2j + 1) / P)."""
    p = 1 << (n_heads.bit_length() - 1)
    return [2 ** (-8 * (h + 1) / p) for h in range(p)] + [2 ** (-4 * (2 * j + 1) / p)
                                                          for j in range(n_heads - p)]


def slopes_first_of_2p(n_heads):
    """Wrong: the first H - P slopes of 2P, not every other one."""
    p = 2 ** math.floor(math.log2(n_heads))
    extra = [2 ** (-8 * (h + 1) / (2 * p)) for h in range(n_heads - p)]
    return [2 ** (-8 * (h + 1) / p) for h in range(p)] + extra


def slopes_next_power_truncated(n_heads):
    """Wrong: the slopes of the next power of two, cut to H."""
    p = 2 ** math.ceil(math.log2(n_heads))
    return [2 ** (-8 * (h + 1) / p) for h in range(n_heads)]


def slopes_from_zero(n_heads):
    """Wrong by one: 2^(-8h/H), starting at a slope of 1."""
    return [2 ** (-8 * h / n_heads) for h in range(n_heads)]


@pytest.mark.parametrize("student", [slopes_as_list, lambda n: torch.tensor(slopes_as_list(n))])
def test_6_3_passes_correct_answers_written_differently(student, capsys):
    check_alibi_slopes(student)
    assert "✅ Exercise 6.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (slopes_first_of_2p, r"inputs \(6\).*values are wrong"),
    (slopes_next_power_truncated, r"inputs \(3\).*values are wrong"),
    (slopes_from_zero, r"inputs \(1\).*values are wrong"),
    (lambda n: torch.tensor(slopes_as_list(n))[None], r"wrong shape: expected \(1,\), got \(1, 1\)"),
    (lambda n: {h: s for h, s in enumerate(slopes_as_list(n))}, "expected a tensor .* got a dict"),
])
def test_6_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_alibi_slopes(student)


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


def alibi_reversed_heads(n_heads, n_queries, n_keys):
    return alibi_loop(n_heads, n_queries, n_keys).flip(0)


def test_6_4_passes_a_correct_answer_written_differently(capsys):
    check_alibi_bias(alibi_loop)
    assert "✅ Exercise 6.4" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (alibi_queries_first, "values are wrong"),
    (alibi_signed, "values are wrong"),
    (alibi_reversed_heads, "values are wrong"),
    (lambda h, q, k: alibi_loop(h, q, k).double(), "wrong dtype: expected torch.float32"),
    (lambda h, q, k: alibi_loop(h, q, k)[0], "wrong shape"),  # one head only
])
def test_6_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_alibi_bias(student)


# --- Second review: answers the first version of these tests did not try -------------------


def table_python_loop(n_positions, d_model):
    """Correct, written differently: math.sin and math.cos entry by entry."""
    def entry(p, c):
        angle = p / 10_000 ** (2 * (c // 2) / d_model)
        return math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return torch.tensor([[entry(p, c) for c in range(d_model)] for p in range(n_positions)],
                        dtype=torch.float32)


def test_6_1_second_review(capsys):
    check_sinusoidal_table(table_python_loop)
    assert "✅ Exercise 6.1" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"values are wrong; the first is at index \(0, 0\)"):
        check_sinusoidal_table(lambda n, d: table_python_loop(n + 1, d)[1:])  # positions from 1
    with pytest.raises(CheckFailed, match=r"wrong shape: expected \(\d+, \d+\), got \(\d+, 16\)"):
        check_sinusoidal_table(lambda n, d: table_python_loop(n, 16))  # the width of the notebook


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


def slopes_paper_code(n_heads):
    """Correct, written differently: the ALiBi paper's own recursion."""
    def power_of_two(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start**i for i in range(n)]
    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    p = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(p) + slopes_paper_code(2 * p)[0::2][:n_heads - p]


def slopes_odd_of_2p(n_heads):
    """Wrong: the slopes of 2P at the odd indices 1, 3, 5, ... instead of 0, 2, 4, ..."""
    p = 2 ** math.floor(math.log2(n_heads))
    extra = [2 ** (-8 * (h + 1) / (2 * p)) for h in range(1, 2 * p, 2)][:n_heads - p]
    return [2 ** (-8 * (h + 1) / p) for h in range(p)] + extra


def test_6_3_second_review(capsys):
    check_alibi_slopes(slopes_paper_code)
    check_alibi_slopes(lambda n: torch.tensor(slopes_paper_code(n), dtype=torch.float32))
    assert capsys.readouterr().out.count("✅") == 2
    with pytest.raises(CheckFailed, match=r"inputs \(3\).*values are wrong"):
        check_alibi_slopes(slopes_odd_of_2p)
    # a list that is not a flat list of numbers: a verdict about the answer, not a crash in the check
    with pytest.raises(CheckFailed, match=r"on inputs \(1\), your function returned a list that is not "
                                          r"a flat list of numbers \(expected sequence"):
        check_alibi_slopes(lambda n: [[1.0], [2.0, 3.0]])
    with pytest.raises(CheckFailed, match="not a flat list of numbers"):
        check_alibi_slopes(lambda n: ["0.5"] * n)


def test_6_4_second_review(capsys):
    check_alibi_bias(lambda h, q, k: alibi_loop(h, k, k)[:, k - q:])  # all positions, the last rows
    assert "✅ Exercise 6.4" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="values are wrong"):  # the first rows
        check_alibi_bias(lambda h, q, k: alibi_loop(h, k, k)[:, :q])
    with pytest.raises(CheckFailed, match="values are wrong"):  # -inf on the future keys
        check_alibi_bias(lambda h, q, k: alibi_loop(h, q, k).masked_fill(
            torch.arange(k)[None] > (torch.arange(q) + k - q)[:, None], float("-inf")))
