"""Mutation tests of the chapter 8 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import pytest
import torch

from attnbook.attention import causal_mask, padding_mask
from attnbook.checks.ch08 import (
    check_block_parameters,
    check_decoder_self_mask,
    check_norm_experiment,
    check_peak_prediction,
    check_residual,
)
from attnbook.checks.core import CheckFailed
from attnbook.transformer import Residual

# --- 8.1 block parameters ------------------------------------------------------------------


def attention(d):
    return 4 * d * d + 4 * d


def ff(d, f):
    return 2 * d * f + d + f


def test_8_1_passes_right_formulas(capsys):
    check_block_parameters(lambda d, f: attention(d) + ff(d, f) + 4 * d,
                           lambda d, f: 2 * attention(d) + ff(d, f) + 6 * d)
    assert "✅ Exercise 8.1" in capsys.readouterr().out


def test_8_1_passes_a_factored_formula(capsys):
    check_block_parameters(lambda d, f: 4 * d * d + 2 * d * f + 9 * d + f,
                           lambda d, f: 8 * d * d + 2 * d * f + 15 * d + f)
    assert "✅ Exercise 8.1" in capsys.readouterr().out


@pytest.mark.parametrize("encoder, decoder, verdict", [
    # forgets the LayerNorms' scale and shift
    (lambda d, f: attention(d) + ff(d, f), lambda d, f: 2 * attention(d) + ff(d, f),
     r"encoder_block_parameters\(8, 16\) gives .* \(32 fewer\)"),
    # forgets the biases everywhere
    (lambda d, f: 4 * d * d + 2 * d * f + 4 * d, lambda d, f: 0,
     r"encoder_block_parameters\(8, 16\) gives"),
    # right encoder, decoder with one LayerNorm too few
    (lambda d, f: attention(d) + ff(d, f) + 4 * d,
     lambda d, f: 2 * attention(d) + ff(d, f) + 4 * d, r"decoder_block_parameters.*fewer"),
    # a float
    (lambda d, f: float(attention(d) + ff(d, f) + 4 * d), lambda d, f: 0, "whole number"),
])
def test_8_1_rejects_wrong_formulas(encoder, decoder, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_block_parameters(encoder, decoder)


# --- 8.2 warm-up peak ----------------------------------------------------------------------

PEAK = 512 ** -0.5 * 4000 ** -0.5


def test_8_2_passes_right_prediction_and_measurement(capsys):
    check_peak_prediction(4000, 7e-4, 4000, PEAK)
    assert "✅ Exercise 8.2" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    ((4000, 4000 ** -0.5, 4000, PEAK), r"predicted rate .* times the true peak"),  # no D^-1/2
    ((4001, PEAK, 4000, PEAK), r"predicted step 4001 is off by \+1"),
    ((4000, PEAK, 3999, PEAK), r"measured step 3999 is off by -1"),  # steps counted from 0
    ((..., PEAK, 4000, PEAK), "replace the ..."),
])
def test_8_2_rejects_wrong_answers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_peak_prediction(*args)


# --- 8.3 decoder self-mask -----------------------------------------------------------------


def mask_with_tril(lengths, length):
    seen = torch.tril(torch.ones(length, length, dtype=torch.bool))
    real = torch.arange(length)[None, :] < lengths[:, None]
    return (seen & real[:, None, :]).unsqueeze(1)


def test_8_3_passes_a_mask_written_differently(capsys):
    check_decoder_self_mask(mask_with_tril)
    assert "✅ Exercise 8.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # the leak: the causal mask transposed, each query sees the future
    (lambda n, t: causal_mask(t).T[None, None] & padding_mask(n, t)[:, None, None, :],
     "one sequence of 4 without padding: .*values are wrong|wrong"),
    # cannot see itself
    (lambda n, t: (causal_mask(t) & ~torch.eye(t, dtype=torch.bool))[None, None]
     & padding_mask(n, t)[:, None, None, :], "one position, one sequence"),
    # masks padded queries instead of padded keys
    (lambda n, t: causal_mask(t)[None, None] & padding_mask(n, t)[:, None, :, None],
     "three sequences of lengths 5, 2, 3"),
    # an additive float mask
    (lambda n, t: torch.zeros(len(n), 1, t, t), "boolean mask"),
])
def test_8_3_rejects_wrong_masks(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_decoder_self_mask(student)


# --- 8.4 residual --------------------------------------------------------------------------


def residual_with_module(x, sublayer, norm, kind):
    if kind not in ("post", "pre"):
        raise ValueError(f"kind must be 'post' or 'pre', got {kind!r}")
    wrapper = Residual(x.shape[-1], norm=kind)
    wrapper.norm = norm
    return wrapper(x, sublayer)[0]


def test_8_4_passes_the_package_module(capsys):
    check_residual(residual_with_module)
    assert "✅ Exercise 8.4" in capsys.readouterr().out


def pre_norm_everywhere(x, sublayer, norm, kind):
    if kind == "post":
        return norm(x + sublayer(x))
    if kind == "pre":
        return norm(x + sublayer(norm(x)))  # normalizes the stream too
    raise ValueError(kind)


def swapped(x, sublayer, norm, kind):
    if kind == "pre":
        return norm(x + sublayer(x))
    if kind == "post":
        return x + sublayer(norm(x))
    raise ValueError(kind)


def no_error(x, sublayer, norm, kind):
    return norm(x + sublayer(x)) if kind == "post" else x + sublayer(norm(x))


@pytest.mark.parametrize("student, verdict", [
    (pre_norm_everywhere, "kind='pre'"),
    (swapped, "kind='post'"),
    (no_error, "should raise ValueError"),
])
def test_8_4_rejects_wrong_residuals(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_residual(student)


# --- 8.5 post-norm against pre-norm --------------------------------------------------------


def test_8_5_passes_a_clear_gap(capsys):
    check_norm_experiment("pre", 0.01, {"post": [1.2, 1.4], "pre": [0.8, 0.85]})
    assert "✅ Exercise 8.5" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    (("pre", 1e-4, {"post": [2.0, 2.1], "pre": [1.95, 2.0]}), "not 0.1 apart"),
    (("post", 0.01, {"post": [1.2, 1.4], "pre": [0.8, 0.85]}), "you predicted 'post'"),
    (("pre", 0.01, {"post": [1.2], "pre": [0.8]}), "at least two seeds"),
    (("pre", 5, {"post": [1.2, 1.4], "pre": [0.8, 0.85]}), r"in \(0, 1\)"),
])
def test_8_5_rejects_wrong_answers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_norm_experiment(*args)
