"""Mutation tests of the chapter 8 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbook.attention import causal_mask, padding_mask
from attnbook.checks import ch08
from attnbook.checks.ch08 import (
    check_block_parameters,
    check_decoder_self_mask,
    check_norm_experiment,
    check_norm_prediction_recorded,
    check_residual,
    check_schedule_prediction,
    check_schedule_recorded,
    norm_curve,
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


# --- 8.2 reading the schedule ---------------------------------------------------------------

FRACTION = 1 / 4000


def test_8_2_records_any_prediction_of_the_right_types(capsys):
    check_schedule_recorded(0.5, 8000)  # wrong, but a prediction
    assert "✅ Exercise 8.2 (prediction): recorded" in capsys.readouterr().out
    for args, verdict in [((..., 8000), "replace the ..."), ((0.5, 8000.0), "whole number"),
                          (("1/4000", 8000), "must be a number")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_schedule_recorded(*args)


def test_8_2_passes_right_prediction_and_measurement(capsys):
    check_schedule_prediction(1 / 4000, 16_000, 0.00025000000000000006, 16_000)
    assert "✅ Exercise 8.2" in capsys.readouterr().out


def test_8_2_passes_numpy_numbers_and_0d_tensors(capsys):
    check_schedule_prediction(np.float64(FRACTION), np.int64(16_000),  # 0-d tensors, as
                              torch.tensor(FRACTION, dtype=torch.float64),  # argmax gives
                              torch.tensor(16_000))
    assert "✅ Exercise 8.2" in capsys.readouterr().out


@pytest.mark.parametrize("args, verdict", [
    # the peak's own step: rate(1) / rate(4000) taken as 1 / sqrt(4000)
    ((4000 ** -0.5, 16_000, FRACTION, 16_000), r"predicted fraction .* times the true one"),
    # half of the peak taken on the way down as twice the warm-up
    ((FRACTION, 8_000, FRACTION, 16_000), r"predicted half-peak step 8000 is off by -8000"),
    # the half on the way up (step 2,000)
    ((FRACTION, 16_000, FRACTION, 2_000), r"measured half-peak step 2000 is off by -14000"),
    # strictly below half: one step late
    ((FRACTION, 16_000, FRACTION, 16_001), r"off by \+1 \(at that step the rate is exactly"),
    # steps counted from 0: rate(0) does not exist, fraction of step 2
    ((FRACTION, 16_000, 2 * FRACTION, 16_000), r"measured fraction .* 2 times"),
    # 1/4001: neighbouring steps are told apart
    ((1 / 4001, 16_000, FRACTION, 16_000), r"predicted fraction"),
    ((..., 16_000, FRACTION, 16_000), "replace the ..."),
    ((FRACTION, 16_000.0, FRACTION, 16_000), "step must be a whole number"),
    ((FRACTION, 16_000, FRACTION, torch.tensor(16_000.0)), "step must be a whole number"),
])
def test_8_2_rejects_wrong_answers(args, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_schedule_prediction(*args)


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
    # ignores `length`: pads only to the longest sequence
    (lambda n, t: mask_with_tril(n, int(n.max())), "lengths 2 and 3 padded to 6: wrong shape"),
    # the causal mask alone (no key padding): wrong only for padded queries
    (lambda n, t: causal_mask(t)[None, None].expand(len(n), 1, t, t),
     "three sequences of lengths 5, 2, 3"),
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
    raise ValueError(f"kind must be 'post' or 'pre', not {kind!r}")


def swapped(x, sublayer, norm, kind):
    if kind == "pre":
        return norm(x + sublayer(x))
    if kind == "post":
        return x + sublayer(norm(x))
    raise ValueError(f"kind must be 'post' or 'pre', not {kind!r}")


def no_error(x, sublayer, norm, kind):
    return norm(x + sublayer(x)) if kind == "post" else x + sublayer(norm(x))


def vague_error(x, sublayer, norm, kind):
    if kind not in ("post", "pre"):
        raise ValueError("bad")
    return no_error(x, sublayer, norm, kind)


def assertion_error(x, sublayer, norm, kind):
    assert kind in ("post", "pre"), "kind must be 'post' or 'pre'"
    return no_error(x, sublayer, norm, kind)


@pytest.mark.parametrize("student, verdict", [
    (pre_norm_everywhere, "kind='pre'"),
    (swapped, "kind='post'"),
    (no_error, "should raise ValueError"),
    (vague_error, r"ValueError\('bad'\); its message should name the two allowed values"),
    (assertion_error, "should raise ValueError, got AssertionError"),
])
def test_8_4_rejects_wrong_residuals(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_residual(student)


# --- 8.5 does warm-up close the gap? ------------------------------------------------------

# what norm_run(norm, 0.01, seed, warmup=50) gives, made up for the tests (no training)
RUNS = {"post": {0: 0.945, 1: 0.968, 2: 0.795, 3: 0.70},
        "pre": {0: 0.717, 1: 0.685, 2: 0.695, 3: 0.745}}


@pytest.fixture
def fake_runs(monkeypatch):
    calls = []

    def fake(norm, rate, seed, warmup=0, steps=100):
        calls.append((norm, rate, seed, warmup, steps))
        if (rate, warmup, steps) != (0.01, 50, 100):
            return 5.0
        return RUNS[norm][seed]
    monkeypatch.setattr(ch08, "norm_run", fake)
    return calls


def runs(seeds):
    return {norm: {s: RUNS[norm][s] for s in seeds} for norm in ("post", "pre")}


def test_8_5_records_a_prediction(capsys):
    check_norm_prediction_recorded(False)
    assert "✅ Exercise 8.5 (prediction): recorded" in capsys.readouterr().out
    for prediction, verdict in [(..., "replace the ..."), ("pre", "True or False"),
                                (1, "True or False")]:
        with pytest.raises(CheckFailed, match=verdict):
            check_norm_prediction_recorded(prediction)


def test_8_5_passes_true_runs_and_the_right_prediction(fake_runs, capsys):
    check_norm_experiment(True, runs((0, 1, 2)))
    assert "✅ Exercise 8.5" in capsys.readouterr().out
    assert {seed for _, _, seed, _, _ in fake_runs} == {0, 1, 2}  # every run re-checked


def test_8_5_passes_tensors_a_broken_ordering_and_four_seeds(fake_runs, capsys):
    losses = runs((0, 1, 2, 3))  # seed 3's post-norm run ends below a pre-norm run
    losses["pre"] = {s: torch.tensor(v) for s, v in losses["pre"].items()}
    check_norm_experiment(False, losses)
    assert "✅ Exercise 8.5" in capsys.readouterr().out


@pytest.mark.parametrize("prediction, losses, verdict", [
    (True, {"post": {0: 2.0, 1: 2.0, 2: 2.0}, "pre": {0: 1.0, 1: 1.0, 2: 1.0}},
     r"post-norm loss for seed 0 is 2, but norm_run\('post', 0.01, 0, warmup=50\) gives 0.945"),
    # the chapter's constant rate instead of the warm-up
    (True, {"post": {0: 5.0, 1: 5.0, 2: 5.0}, "pre": {0: 5.0, 1: 5.0, 2: 5.0}},
     "use the rate 0.01 and 50 warm-up steps"),
    # a NaN where the run did not diverge
    (True, {"post": RUNS["post"], "pre": {0: 0.717, 1: float("nan"), 2: 0.695, 3: 0.745}},
     "pre-norm loss for seed 1 is inf"),
    (False, runs((0, 1, 2)), r"you predicted the ordering breaks; .*\(by 0.078 at least\)"),
    (True, runs((0, 1, 2, 3)), r"you predicted the ordering holds; .* 0.045 above"),
    (True, {"post": [0.945, 0.968, 0.795], "pre": [0.717, 0.685, 0.695]},
     r"final_losses\['post'\] must be a dict \{seed: final loss\}"),
    (True, {"post": {0: [3.0, 0.945]}, "pre": {0: [3.0, 0.717]}}, "at least three"),
    (True, {"post": {s: [3.0, RUNS["post"][s]] for s in range(3)},
            "pre": {s: [3.0, RUNS["pre"][s]] for s in range(3)}}, "must be one number"),
    (True, {"post": {0: 0.945, 1: 0.968}, "pre": {0: 0.717, 1: 0.685}}, "at least three"),
    (True, {"post": {0: 0.945, 1: 0.968, 2: 0.795}, "pre": {0: 0.717, 1: 0.685, 3: 0.745}},
     "the same seeds for both"),
    (True, runs((0, 1, 2)) | {"rate": 0.01}, "keys 'post' and 'pre' and nothing else"),
    ("pre", runs((0, 1, 2)), "True or False"),
    (..., runs((0, 1, 2)), "replace the ..."),
])
def test_8_5_rejects_wrong_answers(fake_runs, prediction, losses, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_norm_experiment(prediction, losses)


def test_8_5_diverged_post_norm_still_counts_as_worse(monkeypatch, capsys):
    table = {"post": {0: float("nan"), 1: float("inf"), 2: 3.0}, "pre": {0: 1.0, 1: 1.1, 2: 1.2}}
    monkeypatch.setattr(ch08, "norm_run", lambda norm, rate, seed, warmup=0: table[norm][seed])
    check_norm_experiment(True, table)
    assert "✅ Exercise 8.5" in capsys.readouterr().out
    table["pre"][2] = float("nan")  # a diverged pre-norm run: the ordering breaks
    with pytest.raises(CheckFailed, match="you predicted the ordering holds"):
        check_norm_experiment(True, table)


def test_norm_curve_is_cached_and_checks_its_arguments():
    first = norm_curve("pre", 0.01, 0, warmup=5, steps=20)
    assert len(first) == 20 and norm_curve("pre", 0.01, 0, warmup=5, steps=20) == first
    with pytest.raises(ValueError, match="norm"):
        norm_curve("sandwich", 0.01, 0)
    with pytest.raises(ValueError, match="warmup"):
        norm_curve("post", 0.01, 0, warmup=-1)
