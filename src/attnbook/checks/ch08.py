"""Checks for the exercises of chapter 8, "The Transformer"."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from attnbook.attention import causal_mask, padding_mask
from attnbook.checks.core import CheckFailed, call_student, compare_cases
from attnbook.transformer import DecoderBlock, EncoderBlock, n_parameters

BLOCK_SIZES = [(8, 16, 2), (16, 64, 4), (64, 128, 4), (12, 12, 3), (32, 96, 1)]


def check_block_parameters(encoder_fn, decoder_fn) -> None:
    """Exercise 8.1: the parameters of EncoderBlock and DecoderBlock as formulas in
    d_model and d_ff, exact (whole numbers), for five sizes (d_ff > d_model, = d_model)."""
    name = "Exercise 8.1 (block parameters)"
    for fn, block, label in ((encoder_fn, EncoderBlock, "encoder"),
                             (decoder_fn, DecoderBlock, "decoder")):
        for d_model, d_ff, n_heads in BLOCK_SIZES:
            case = f"{label}_block_parameters({d_model}, {d_ff})"
            got = call_student(fn, (d_model, d_ff), name, case=case)
            if isinstance(got, bool) or not isinstance(got, numbers.Integral):
                raise CheckFailed(f"{name}: {case} returned {got!r}; return a whole number (int)")
            expected = n_parameters(block(d_model, n_heads, d_ff))
            if got != expected:
                how = "more" if got > expected else "fewer"
                raise CheckFailed(f"{name}: {case} gives {got:,}, but the block has "
                                  f"{expected:,} parameters ({abs(got - expected):,} {how})")
    print(f"✅ {name}: right for both blocks at {len(BLOCK_SIZES)} sizes.")


PAPER_D_MODEL, PAPER_WARMUP = 512, 4000


def check_peak_prediction(predicted_step, predicted_rate, measured_step, measured_rate) -> None:
    """Exercise 8.2: the step and value of the largest rate of the paper's schedule
    (d_model = 512, 4,000 warm-up steps). The prediction is right within 1% of the rate
    and exactly at the step; the measurement is checked the same way."""
    name = "Exercise 8.2 (warm-up peak)"
    true_step = PAPER_WARMUP
    true_rate = PAPER_D_MODEL ** -0.5 * PAPER_WARMUP ** -0.5
    for label, step, rate in (("prediction", predicted_step, predicted_rate),
                              ("measurement", measured_step, measured_rate)):
        if step is ... or rate is ...:
            raise CheckFailed(f"{name}: replace the ... in your {label} with numbers")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise CheckFailed(f"{name}: the {label}'s step must be a whole number, got {step!r}")
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise CheckFailed(f"{name}: the {label}'s rate must be a number, got {rate!r}")
    problems = []
    for label, step, rate in (("predicted", predicted_step, predicted_rate),
                              ("measured", measured_step, measured_rate)):
        if step != true_step:
            problems.append(f"the {label} step {step} is off by {step - true_step:+d}")
        if not math.isclose(rate, true_rate, rel_tol=0.01):
            problems.append(f"the {label} rate {rate:.3g} is {rate / true_rate:.3g} times "
                            "the true peak")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems))
    print(f"✅ {name}: prediction and measurement both right (step {true_step}, "
          f"rate {true_rate:.3g}).")


def reference_decoder_self_mask(tgt_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, T, T): query i sees key j when j <= i and key j is real."""
    causal = causal_mask(length, device=tgt_lengths.device)           # (T, T)
    real = padding_mask(tgt_lengths, length)                          # (B, T)
    return causal[None, None] & real[:, None, None, :]                # (B, 1, T, T)


def check_decoder_self_mask(student_fn) -> None:
    """Exercise 8.3: the decoder's self-attention mask, boolean (B, 1, T, T), exact.

    A length of 1, full and partly padded rows, a batch of one and of three.
    """
    name = "Exercise 8.3 (decoder self-mask)"
    cases = [
        ("one position, one sequence", (torch.tensor([1]), 1)),
        ("one sequence of 4 without padding", (torch.tensor([4]), 4)),
        ("three sequences of lengths 5, 2, 3 padded to 5", (torch.tensor([5, 2, 3]), 5)),
        ("two sequences of lengths 1 and 6 padded to 6", (torch.tensor([1, 6]), 6)),
    ]

    def boolean(lengths, length):
        result = student_fn(lengths, length)
        if torch.is_tensor(result) and result.dtype != torch.bool:
            raise CheckFailed(f"{name}: return a boolean mask (True = may attend), got dtype "
                              f"{result.dtype}")
        return result

    compare_cases(boolean, reference_decoder_self_mask, cases, name=name,
                  arg_names=("tgt_lengths", "length"))


def reference_residual(x, sublayer, norm, kind):
    if kind == "post":
        return norm(x + sublayer(x))
    return x + sublayer(norm(x))


def _residual_case(kind: str, shape: tuple[int, ...], seed: int):
    generator = torch.Generator().manual_seed(seed)
    width = shape[-1]
    x = 2 + 3 * torch.randn(*shape, generator=generator)
    norm = nn.LayerNorm(width)
    sublayer = nn.Linear(width, width)
    with torch.no_grad():  # a norm whose scale and shift matter
        norm.weight.copy_(1 + torch.rand(width, generator=generator))
        norm.bias.copy_(torch.randn(width, generator=generator))
        sublayer.weight.copy_(torch.randn(width, width, generator=generator) / width ** 0.5)
        sublayer.bias.copy_(torch.randn(width, generator=generator))
    return (f"kind={kind!r} with x of shape {shape}", (x, sublayer, norm, kind))


def check_residual(student_fn) -> None:
    """Exercise 8.4: post- and pre-norm residual connections, within 1e-5 + 1e-4 * |expected|.

    Both kinds, 2-D and 3-D inputs, a LayerNorm with a scale and a shift that are not
    1 and 0, and a sublayer with a bias; an unknown kind must raise ValueError.
    """
    name = "Exercise 8.4 (residual)"
    cases = [_residual_case(kind, shape, seed) for seed, (kind, shape) in enumerate(
        [("post", (3, 8)), ("pre", (3, 8)), ("post", (2, 5, 6)), ("pre", (2, 5, 6)),
         ("pre", (1, 1, 4))])]

    def run(x, sublayer, norm, kind):
        with torch.no_grad():
            return student_fn(x, sublayer, norm, kind)

    def reference(x, sublayer, norm, kind):
        with torch.no_grad():
            return reference_residual(x, sublayer, norm, kind)

    x, sublayer, norm, _ = cases[0][1]
    try:
        student_fn(x, sublayer, norm, "sandwich")
    except NotImplementedError:
        call_student(student_fn, (x, sublayer, norm, "post"), name)  # the stub's verdict
    except ValueError:
        pass
    except Exception as error:
        raise CheckFailed(f"{name}: kind='sandwich' should raise ValueError, got "
                          f"{type(error).__name__}") from None
    else:
        raise CheckFailed(f"{name}: kind='sandwich' should raise ValueError naming the kinds, "
                          "but your function returned")
    compare_cases(run, reference, cases, name=name, arg_names=("x", "sublayer", "norm", "kind"))


def check_norm_experiment(prediction, rate, final_losses) -> None:
    """Exercise 8.5: a learning rate at which pre-norm's final loss is lower than
    post-norm's by at least 0.1 in every run, and a prediction of which ends lower.

    `final_losses` is {"post": [...], "pre": [...]}, one number per seed (2 or more).
    """
    name = "Exercise 8.5 (post-norm against pre-norm)"
    if prediction is ... or rate is ...:
        raise CheckFailed(f"{name}: replace the ... with your prediction and your rate")
    if prediction not in ("post", "pre"):
        raise CheckFailed(f"{name}: the prediction must be 'post' or 'pre', got {prediction!r}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate < 1:
        raise CheckFailed(f"{name}: the rate must be a number in (0, 1), got {rate!r}")
    if not isinstance(final_losses, dict) or set(final_losses) != {"post", "pre"}:
        raise CheckFailed(f"{name}: final_losses must be a dict with keys 'post' and 'pre'")
    post, pre = final_losses["post"], final_losses["pre"]
    if len(post) < 2 or len(post) != len(pre):
        raise CheckFailed(f"{name}: run at least two seeds, the same for both "
                          f"(got {len(post)} and {len(pre)})")
    gap = min(post) - max(pre)
    if gap < 0.1:
        raise CheckFailed(f"{name}: at rate {rate:g} the worst pre-norm run ends at "
                          f"{max(pre):.3f} and the best post-norm run at {min(post):.3f}: "
                          "not 0.1 apart, so no claim holds yet (try a larger rate)")
    if prediction != "pre":
        raise CheckFailed(f"{name}: the experiment is right, but you predicted {prediction!r} "
                          "would end lower; it is 'pre' (measured gap "
                          f"{gap:.2f}). Fix the prediction, and see why in the chapter")
    print(f"✅ {name}: at rate {rate:g} pre-norm ends at least {gap:.2f} below post-norm.")


__all__ = ["check_block_parameters", "check_peak_prediction", "check_decoder_self_mask",
           "check_residual", "check_norm_experiment", "reference_decoder_self_mask",
           "reference_residual"]
