"""Checks for the exercises of chapter 8, "The Transformer"."""

from __future__ import annotations

import functools
import math
import numbers
import random

import torch
from torch import nn

from attnbook.attention import causal_mask, padding_mask
from attnbook.checks.core import CheckFailed, _describe, as_number, call_student, compare_cases
from attnbook.data import date_vocabs, make_batch, make_date_task
from attnbook.seeds import seeded
from attnbook.train import sequence_loss, set_seed
from attnbook.transformer import DecoderBlock, EncoderBlock, Transformer, n_parameters

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


def check_schedule_recorded(predicted_fraction, predicted_half_step) -> None:
    """Exercise 8.2, first step: both predictions are written down (a number and a whole
    number). Says nothing about whether they are right: that comes after the measurement."""
    name = "Exercise 8.2 (prediction)"
    if predicted_fraction is ... or predicted_half_step is ...:
        raise CheckFailed(f"{name}: replace the ... with your predictions")
    fraction = as_number(predicted_fraction, whole=False)
    step = as_number(predicted_half_step, whole=True)
    if fraction is None:
        raise CheckFailed(f"{name}: the fraction must be a number, got {predicted_fraction!r}")
    if step is None:
        raise CheckFailed(f"{name}: the step must be a whole number, got "
                          f"{predicted_half_step!r}")
    print(f"✅ {name}: recorded a fraction of {fraction:.4g} at step 1 and half the peak "
          f"at step {step:,}. Now measure.")


def check_schedule_prediction(predicted_fraction, predicted_half_step, measured_fraction,
                              measured_half_step) -> None:
    """Exercise 8.2: in the paper's schedule (d_model = 512, 4,000 warm-up steps), the rate
    at step 1 as a fraction of the peak (right within a relative 1e-6: 1/4,000, not
    1/3,999 or 1/4,001), and the first step after the peak at which the rate is at most
    half the peak (exactly 16,000). Predictions and measurements are checked alike;
    NumPy numbers and 0-d tensors count as numbers."""
    name = "Exercise 8.2 (reading the schedule)"
    true_fraction = 1 / PAPER_WARMUP  # (1 * w^-1.5) / w^-0.5
    true_half_step = 4 * PAPER_WARMUP  # s^-0.5 = w^-0.5 / 2
    answers = {}
    for label, fraction, step in (("prediction", predicted_fraction, predicted_half_step),
                                  ("measurement", measured_fraction, measured_half_step)):
        if fraction is ... or step is ...:
            raise CheckFailed(f"{name}: replace the ... in your {label} with numbers")
        as_fraction, as_step = as_number(fraction, whole=False), as_number(step, whole=True)
        if as_fraction is None:
            raise CheckFailed(f"{name}: the {label}'s fraction must be a number, got "
                              f"{fraction!r}")
        if as_step is None:
            raise CheckFailed(f"{name}: the {label}'s step must be a whole number, got "
                              f"{step!r}")
        answers[label] = (as_fraction, as_step)
    problems = []
    for label, (fraction, step) in answers.items():
        adjective = "predicted" if label == "prediction" else "measured"
        if not math.isclose(fraction, true_fraction, rel_tol=1e-6):
            problems.append(f"the {adjective} fraction at step 1 is {fraction:.6g}, "
                            f"{fraction / true_fraction:.4g} times the true one")
        if step != true_half_step:
            hint = (" (at that step the rate is exactly half: compare with <=)"
                    if step == true_half_step + 1 else "")
            problems.append(f"the {adjective} half-peak step {step} is off by "
                            f"{step - true_half_step:+d}{hint}")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems))
    print(f"✅ {name}: prediction and measurement both right (step 1 is 1/{PAPER_WARMUP:,} "
          f"of the peak; half the peak again at step {true_half_step:,}).")


def reference_decoder_self_mask(tgt_lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, T, T): query i sees key j when j <= i and key j is real."""
    causal = causal_mask(length, device=tgt_lengths.device)           # (T, T)
    real = padding_mask(tgt_lengths, length)                          # (B, T)
    return causal[None, None] & real[:, None, None, :]                # (B, 1, T, T)


def check_decoder_self_mask(student_fn) -> None:
    """Exercise 8.3: the decoder's self-attention mask, boolean (B, 1, T, T), exact.

    A length of 1, full and partly padded rows, a batch of one and of three, and a
    batch padded beyond its longest sequence (so `length` matters on its own).
    """
    name = "Exercise 8.3 (decoder self-mask)"
    cases = [
        ("one position, one sequence", (torch.tensor([1]), 1)),
        ("one sequence of 4 without padding", (torch.tensor([4]), 4)),
        ("three sequences of lengths 5, 2, 3 padded to 5", (torch.tensor([5, 2, 3]), 5)),
        ("two sequences of lengths 1 and 6 padded to 6", (torch.tensor([1, 6]), 6)),
        ("two sequences of lengths 2 and 3 padded to 6", (torch.tensor([2, 3]), 6)),
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
    1 and 0, and a sublayer with a bias; an unknown kind must raise a ValueError whose
    message names 'post' and 'pre'.
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
    except ValueError as error:
        message = str(error)
        if "post" not in message or "pre" not in message:
            raise CheckFailed(f"{name}: kind='sandwich' raised ValueError({message!r}); its "
                              "message should name the two allowed values, 'post' and "
                              "'pre'") from None
    except Exception as error:
        raise CheckFailed(f"{name}: kind='sandwich' should raise ValueError, got "
                          f"{type(error).__name__}") from None
    else:
        raise CheckFailed(f"{name}: kind='sandwich' should raise ValueError naming the kinds, "
                          "but your function returned")
    compare_cases(run, reference, cases, name=name, arg_names=("x", "sublayer", "norm", "kind"))


NORM_RUN_CONFIG = dict(d_model=32, n_heads=4, d_ff=64, n_layers=6, dropout=0.0)
NORM_RUN_RATE, NORM_RUN_WARMUP = 1e-2, 50


@functools.lru_cache(maxsize=1)
def _norm_run_examples():
    return make_date_task(n_train=4_000, n_valid=1, n_test=1, max_dates=1, seed=1).train


def _length_grouped(examples, batch_size: int, seed: int, pool: int = 20):
    """The chapter's batches: shuffled, sorted by input length within pools of `pool`
    batches, cut into batches, and the batches shuffled."""
    src_vocab, tgt_vocab = date_vocabs()
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    groups = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool],
                       key=lambda i: len(examples[i].source))
        groups += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(groups)
    for group in groups:
        yield make_batch([examples[i] for i in group], src_vocab, tgt_vocab)


@functools.lru_cache(maxsize=64)
def _norm_curve(norm: str, rate: float, seed: int, shifted_seed: int, warmup: int, steps: int):
    src_vocab, tgt_vocab = date_vocabs()
    set_seed(seed)  # shifted_seed (the same seed shifted) only keys the cache
    model = Transformer(len(src_vocab), len(tgt_vocab), norm=norm, **NORM_RUN_CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=rate, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    losses = []
    for batch in _length_grouped(_norm_run_examples(), 32, shifted_seed):
        for group in optimizer.param_groups:  # linear warm-up, then constant
            group["lr"] = rate * min(1.0, (len(losses) + 1) / warmup) if warmup else rate
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = sequence_loss(logits, batch.tgt_out, tgt_vocab.pad_id)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if len(losses) == steps:
            break
    return tuple(losses)


def norm_curve(norm: str, rate: float, seed: int, warmup: int = 0,
               steps: int = 100) -> list[float]:
    """The training losses of the chapter's post- against pre-norm experiment: six
    encoder and six decoder blocks (D = 32, 4 heads, D_ff = 64, no dropout) on 4,000
    one-date inputs, batches of 32 grouped by length, Adam (beta_2 = 0.98, eps = 1e-9),
    gradients clipped to norm 1, `steps` steps. The rate rises linearly over the first
    `warmup` steps to `rate` (at once when `warmup` is 0) and stays there. `seed` is
    shifted by ATTNBOOK_SEED like `set_seed`'s. Runs are cached: the same arguments
    give the same numbers without training again."""
    if norm not in ("post", "pre"):
        raise ValueError(f"norm must be 'post' or 'pre', got {norm!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not rate > 0:
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a whole number >= 0, got {warmup!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 20 <= steps <= 125:
        raise ValueError(f"steps must be a whole number in [20, 125], got {steps!r}")
    return list(_norm_curve(norm, float(rate), seed, seeded(seed), warmup, steps))


def norm_run(norm: str, rate: float, seed: int, warmup: int = 0, steps: int = 100) -> float:
    """The final loss of `norm_curve(norm, rate, seed, warmup, steps)`: the mean of its
    last 20 steps."""
    return sum(norm_curve(norm, rate, seed, warmup, steps)[-20:]) / 20


def _loss(value, name: str, norm: str, seed) -> float:
    """One final loss as a float; a diverged run (NaN or inf) counts as +inf."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckFailed(f"{name}: final_losses[{norm!r}][{seed!r}] must be one number (the "
                          f"mean loss of the last 20 steps), got {_short(value)}")
    value = float(value)
    return value if math.isfinite(value) else math.inf


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_norm_prediction_recorded(prediction) -> None:
    """Exercise 8.5, first step: a prediction, True or False, is written down. Says
    nothing about whether it is right: that comes after the runs."""
    name = "Exercise 8.5 (prediction)"
    if prediction is ...:
        raise CheckFailed(f"{name}: replace the ... with True or False")
    if not isinstance(prediction, bool):
        raise CheckFailed(f"{name}: the prediction must be True or False, got "
                          f"{_short(prediction)}")
    said = "still holds" if prediction else "breaks"
    print(f"✅ {name}: recorded: with warm-up the ordering {said}. Now run the experiment.")


def check_norm_experiment(prediction, final_losses) -> None:
    """Exercise 8.5: does the chapter's ordering (every pre-norm run ends below every
    post-norm run) survive a warm-up of NORM_RUN_WARMUP steps at rate NORM_RUN_RATE?

    `final_losses` is {"post": {seed: loss}, "pre": {seed: loss}}, the same three or
    more seeds for both. Every number is compared with `norm_run(norm, 0.01, seed,
    warmup=50)` (cached, so runs the student made are not trained again), within a
    relative 1e-3; NaN or inf counts as a diverged run (+inf). `prediction` (True:
    the ordering holds in every run) is then compared with what those runs show.
    """
    name = "Exercise 8.5 (does warm-up close the gap?)"
    if prediction is ... or final_losses is ...:
        raise CheckFailed(f"{name}: replace the ... with your prediction and your runs")
    if not isinstance(prediction, bool):
        raise CheckFailed(f"{name}: the prediction must be True or False, got "
                          f"{_short(prediction)}")
    if not isinstance(final_losses, dict) or set(final_losses) != {"post", "pre"}:
        raise CheckFailed(f"{name}: final_losses must be a dict with the keys 'post' and "
                          "'pre' and nothing else")
    for norm in ("post", "pre"):
        if not isinstance(final_losses[norm], dict):
            raise CheckFailed(f"{name}: final_losses[{norm!r}] must be a dict {{seed: final "
                              f"loss}}, got {_describe(final_losses[norm])}")
    seeds = set(final_losses["post"])
    if seeds != set(final_losses["pre"]):
        raise CheckFailed(f"{name}: run the same seeds for both arrangements (post: "
                          f"{sorted(final_losses['post'], key=repr)}, pre: "
                          f"{sorted(final_losses['pre'], key=repr)})")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise CheckFailed(f"{name}: the seeds must be whole numbers, got "
                          f"{sorted(seeds, key=repr)}")
    if len(seeds) < 3:
        raise CheckFailed(f"{name}: run at least three different seeds (got {len(seeds)}); "
                          "a claim about every run needs more than one or two")
    losses = {norm: {seed: _loss(final_losses[norm][seed], name, norm, seed)
                     for seed in sorted(seeds)} for norm in ("post", "pre")}
    for norm in ("post", "pre"):
        for seed, loss in losses[norm].items():
            truth = norm_run(norm, NORM_RUN_RATE, seed, warmup=NORM_RUN_WARMUP)
            truth = truth if math.isfinite(truth) else math.inf
            if truth == loss or math.isclose(loss, truth, rel_tol=1e-3):
                continue
            raise CheckFailed(
                f"{name}: your {norm}-norm loss for seed {seed} is {loss:.4g}, but "
                f"norm_run({norm!r}, {NORM_RUN_RATE:g}, {seed}, warmup={NORM_RUN_WARMUP}) "
                f"gives {truth:.4g}: use the rate {NORM_RUN_RATE:g} and "
                f"{NORM_RUN_WARMUP} warm-up steps, and the mean loss of the last 20 steps")
    margin = min(losses["post"].values()) - max(losses["pre"].values())
    holds = margin > 0
    if prediction != holds:
        said = "holds" if prediction else "breaks"
        if holds:
            found = f"every pre-norm run still ends below every post-norm run (by {margin:.3f} at least)"
        else:
            found = f"a pre-norm run ends {-margin:.3f} above a post-norm run"
        raise CheckFailed(f"{name}: your runs are right, but you predicted the ordering "
                          f"{said}; in them {found}")
    print(f"✅ {name}: your prediction matches your {len(seeds)} seeds (the worst pre-norm "
          f"run ends {abs(margin):.3f} {'below' if holds else 'above'} the best post-norm "
          "run).")


__all__ = ["check_block_parameters", "check_schedule_recorded", "check_schedule_prediction",
           "check_norm_prediction_recorded", "check_decoder_self_mask",
           "check_residual", "check_norm_experiment", "norm_curve", "norm_run",
           "reference_decoder_self_mask", "reference_residual"]
