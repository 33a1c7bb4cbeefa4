"""Checks for the exercises of chapter 2, "Additive attention".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape and mask form the exercise
allows appears, then on fresh random inputs. Floats are compared with atol 1e-5 +
rtol 1e-4 * |expected| unless a check says otherwise; the caller's tensors must be
unchanged after the call.
"""

from __future__ import annotations

import numbers
import random

import torch

from attnbook.attention import AdditiveScore, masked_softmax, padding_mask
from attnbook.checks.core import (
    CheckFailed,
    check_answer,
    compare_cases,
    compare_gradients,
    compare_with_reference,
    in_turn,
    random_size,
)
from attnbook.data import date_vocabs, make_batch, random_example
from attnbook.seq2seq import AttentionState, attend, bahdanau_model


def _shape(generator: torch.Generator, fixed: tuple, ranges: tuple) -> tuple[int, ...]:
    """`fixed` sizes where given (not None), random ones in `ranges` elsewhere."""
    return tuple(f if f is not None else random_size(generator, *r) for f, r in zip(fixed, ranges))


# Exercise 2.1


def _query_keys_weights(B=None, S=None, Dq=None, Dk=None, A=None):
    def make(generator: torch.Generator):
        b, s, dq, dk, a = _shape(generator, (B, S, Dq, Dk, A),
                                 ((1, 4), (1, 7), (1, 6), (1, 6), (1, 5)))
        return (torch.randn(b, dq, generator=generator), torch.randn(b, s, dk, generator=generator),
                torch.randn(a, dq, generator=generator), torch.randn(a, dk, generator=generator),
                torch.randn(a, generator=generator))
    return make


def reference_additive_score(query, keys, W_q, W_k, v):
    """The package's AdditiveScore with the given weights (and no bias)."""
    A, Dq = W_q.shape
    score = AdditiveScore(Dq, W_k.shape[1], A)
    with torch.no_grad():
        score.W_q.weight.copy_(W_q)
        score.W_k.weight.copy_(W_k)
        score.W_k.bias.zero_()
        score.v.weight.copy_(v[None, :])
        return score(query, keys)


def check_additive_score(student_fn) -> None:
    """Exercise 2.1: v . tanh(W_q q + W_k k) for every key.

    Cases: a batch of one with one key (a `.squeeze()` too many fails), query and key
    sizes that differ (W_q and W_k swapped fails) and that are equal (swapped weights
    then give wrong values instead of an error), an attention size of one, then random
    sizes.
    """
    makers = [_query_keys_weights(1, 1, 3, 2, 4), _query_keys_weights(2, 5, 4, 4, 3),
              _query_keys_weights(3, 4, 2, 5, 1), _query_keys_weights(4, 6, 5, 3, 2),
              _query_keys_weights(), _query_keys_weights()]
    compare_with_reference(student_fn, reference_additive_score, in_turn(*makers),
                           name="Exercise 2.1 (additive_score)", trials=len(makers),
                           arg_names=("query", "keys", "W_q", "W_k", "v"))


# Exercise 2.2

NEG_INF = float("-inf")


def _scores(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    # Rows offset by hundreds: exp() overflows unless the row maximum is subtracted first.
    offsets = 100 * torch.randn(*shape[:-1], 1, generator=generator)
    return torch.randn(*shape, generator=generator) * 5 + offsets


def _padding(generator: torch.Generator, B: int, S: int) -> torch.Tensor:
    """(B, S) boolean padding; the last row has nothing to attend to."""
    mask = padding_mask(torch.randint(1, S + 1, (B,), generator=generator), S)
    mask[-1] = False
    return mask


def _as_additive(mask: torch.Tensor) -> torch.Tensor:
    """0 where allowed, -inf where forbidden."""
    return torch.zeros(mask.shape).masked_fill(~mask, NEG_INF)


def _masked_softmax_cases(generator: torch.Generator) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(description, scores, mask) for every shape and mask form the exercise allows."""
    B, T, S = random_size(generator, 2, 4), random_size(generator, 2, 4), random_size(generator, 3, 8)
    cases = []
    mask = _padding(generator, B, S)
    cases.append(("a boolean mask, padding and a fully masked row", _scores(generator, (B, S)), mask))
    cases.append(("an additive mask, padding and a fully -inf row", _scores(generator, (B, S)),
                  _as_additive(_padding(generator, B, S))))
    cases.append(("a boolean (B, 1, S) mask that broadcasts over T",
                  _scores(generator, (B, T, S)), _padding(generator, B, S)[:, None, :]))
    cases.append(("an additive (B, 1, S) mask that broadcasts over T",
                  _scores(generator, (B, T, S)), _as_additive(_padding(generator, B, S))[:, None, :]))
    slopes = -torch.rand(T, S, generator=generator) * 3  # finite values shift the scores
    causal = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    cases.append(("an additive (T, S) mask with finite values, broadcast over B",
                  _scores(generator, (B, T, S)), slopes.masked_fill(~causal, NEG_INF)))
    scores = _scores(generator, (B, S))
    scores[0, -1] = NEG_INF  # a score function already masked these
    scores[-1] = NEG_INF
    cases.append(("scores that already hold -inf (a whole row) and a boolean mask", scores,
                  torch.ones(B, S, dtype=torch.bool)))
    cases.append(("one key, a boolean mask and a fully masked row", _scores(generator, (B, 1)),
                  _padding(generator, B, 1)))
    # Masks that broadcast in other ways: a boolean (T, S) mask over a batch (an answer
    # that unsqueezes every 2-D mask as if it were (B, S) padding fails), a boolean (S,)
    # mask for 2-D scores, and an additive mask on scores that already hold -inf.
    cases.append(("a boolean (T, S) mask, broadcast over B", _scores(generator, (B, T, S)),
                  causal))
    cases.append(("a boolean (S,) mask, broadcast over B", _scores(generator, (B, S)),
                  (torch.rand(S, generator=generator) < 0.6) | (torch.arange(S) == 0)))
    scores = _scores(generator, (B, S))
    scores[0, 0] = NEG_INF
    scores[-1] = NEG_INF
    cases.append(("scores that already hold -inf (a whole row) and an additive mask", scores,
                  _as_additive(_padding(generator, B, S) | (torch.arange(S) == S - 1))))
    # Rows near +1000 and -1000, beyond what exp() holds even in float64 (exp(710) is
    # inf, exp(-746) is 0): computing in float64 does not pass for subtracting the maximum.
    scores = torch.randn(3, 5, generator=generator) * 5 + torch.tensor([[1000.0], [-1000.0], [0.0]])
    cases.append(("rows near +1000 and -1000 (exp overflows there even in float64)", scores,
                  _padding(generator, 3, 5) | (torch.arange(5) == 0)))
    return cases


# Gradients are compared with this atol and rtol. Under upstream gradients of about 100,
# scores in the hundreds (float32 holds 1000 only to about 6e-5) make right answers that
# take another route (log-sum-exp) differ from the reference's gradient by up to 4e-3;
# a wrong gradient (a detached denominator, NaN) is off by 1 or more.
GRAD_TOL = 2e-2


def _describe_case(description: str, scores: torch.Tensor, mask: torch.Tensor) -> str:
    return (f"with scores of shape {tuple(scores.shape)} and {description} "
            f"(mask of shape {tuple(mask.shape)})")


def reference_masked_softmax(scores, mask):
    """The package's masked_softmax, for a boolean or an additive mask."""
    if mask.dtype == torch.bool:
        return masked_softmax(scores, mask)
    return masked_softmax(scores + mask)


def check_masked_softmax(student_fn) -> None:
    """Exercise 2.2: a softmax over the allowed positions; a fully masked row gives zeros.

    Cases: 2-D and 3-D scores; boolean and additive masks, of the scores' shape and
    broadcasting ((B, 1, S), (T, S), (S,)); fully masked rows in both forms and scores
    that already hold -inf, with either form; rows offset by hundreds, and rows near
    +1000 and -1000, where exp() overflows or underflows even in float64 unless the
    row maximum is subtracted first; one key. The weights are compared with atol 1e-5
    + rtol 1e-4; then the gradient with respect to the scores, for every case, under
    upstream gradients of size about 100 (a division by a tiny number instead of by 1
    in a fully masked row then overflows to inf, and inf * 0 is NaN): it must be free
    of NaN and inf and match the reference's (atol GRAD_TOL + rtol GRAD_TOL, 2e-2: the
    reason is at GRAD_TOL).
    """
    name = "Exercise 2.2 (masked_softmax)"
    cases = [(_describe_case(*case), case[1], case[2])
             for case in _masked_softmax_cases(torch.Generator().manual_seed(1234))]
    compare_cases(student_fn, reference_masked_softmax, [(d, (s, m)) for d, s, m in cases],
                  name=name, arg_names=("scores", "mask"))
    for description, scores, mask in cases:
        compare_gradients(_times_100(student_fn), _times_100(reference_masked_softmax),
                          (scores, mask), wrt=(0,), name=name, case=description,
                          atol=GRAD_TOL, rtol=GRAD_TOL)
    print(f"✅ {name}: gradients are right and finite in every case, also for fully "
          "masked rows.")


def _times_100(function):
    def scaled(scores, mask):
        return 100 * function(scores, mask)
    return scaled


# Exercise 2.3


def _weights_and_values(B=None, S=None, D=None):
    def make(generator: torch.Generator):
        b, s, d = _shape(generator, (B, S, D), ((2, 4), (1, 7), (1, 6)))
        mask = padding_mask(torch.randint(1, s + 1, (b,), generator=generator), s)
        if b > 1:
            mask[-1] = False  # a fully masked row: all-zero weights, a zero context
        weights = masked_softmax(torch.randn(b, s, generator=generator), mask)
        return weights, torch.randn(b, s, d, generator=generator)
    return make


def check_context_vector(student_fn) -> None:
    """Exercise 2.3: the weighted sum of the encoder outputs.

    Cases: a batch of one, one position, a feature size of one (a `.squeeze()` too
    many fails), weights that are zero at padding and all zero in a fully masked row
    (the context is then zero: renormalising the weights gives NaN), random sizes.
    """
    makers = [_weights_and_values(1, 1, 1), _weights_and_values(1, 4, 3),
              _weights_and_values(3, 5, 1), _weights_and_values(4, 6, 4),
              _weights_and_values(), _weights_and_values()]
    compare_with_reference(student_fn, attend, in_turn(*makers),
                           name="Exercise 2.3 (context_vector)", trials=len(makers),
                           arg_names=("weights", "values"))


# Exercise 2.4


def _decoder_step_inputs(batch: int | None = None):
    def make(generator: torch.Generator):
        seed = random_size(generator, 0, 9_999)
        B = batch or random_size(generator, 2, 4)
        src_vocab, tgt_vocab = date_vocabs()
        torch.manual_seed(seed)
        model = bahdanau_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16,
                               attn_dim=8).eval()
        rng = random.Random(seed)
        batch_ = make_batch([random_example(rng, rng.randint(1, 2)) for _ in range(B)],
                            src_vocab, tgt_vocab)
        with torch.no_grad():
            memory = model.encoder(batch_.src, batch_.src_lengths)
            state = model.decoder.init_state(memory)
            for t in range(random_size(generator, 0, 3)):  # start a few steps in
                _, state, _ = model.decoder.step(batch_.tgt_in[:, t], state, memory)
        return model.decoder, batch_.tgt_in[:, 3], state, memory
    return make


def check_bahdanau_step(student_fn) -> None:
    """Exercise 2.4: one step of the Bahdanau decoder, (logits, state, weights).

    Cases: a batch of one, then batches with padding, started 0 to 3 steps in. The
    logits, every field of the new state (its `t` must be an int) and the weights are
    compared with atol 1e-5 + rtol 1e-4; `state` and `memory` must be unchanged.
    """
    name = "Exercise 2.4 (bahdanau_step)"

    def reference(decoder, prev_tokens, state, memory):
        state = AttentionState(*state)  # compare_with_reference hands over a plain tuple copy
        with torch.no_grad():
            return decoder.step(prev_tokens, state, memory)

    def student(decoder, prev_tokens, state, memory):
        before = (memory.outputs.clone(), memory.final.clone(), memory.mask.clone())
        with torch.no_grad():
            result = student_fn(decoder, prev_tokens, state, memory)
        after = (memory.outputs, memory.final, memory.mask)
        for field, old, new in zip(("outputs", "final", "mask"), before, after):
            if not torch.equal(old, new):
                raise CheckFailed(f"{name}: on a batch of shape {tuple(prev_tokens.shape)}, your "
                                  f"function changed `memory.{field}` in place; leave the "
                                  "caller's tensors as they were")
        return result

    makers = [_decoder_step_inputs(1), _decoder_step_inputs(), _decoder_step_inputs(),
              _decoder_step_inputs()]
    compare_with_reference(student, reference, in_turn(*makers), name=name, trials=len(makers),
                           item_names=("logits", "new state", "weights"),
                           arg_names=("decoder", "prev_tokens", "state", "memory"))


# Exercise 2.5

IDEAL_ALIGNMENT = [6, 7, 8, 9, None, 3, 4, None, 0, 1]  # "05.06.1999" -> "1999-06-05"


def check_ideal_alignment(answer) -> None:
    """Exercise 2.5: which source position each output character of "1999-06-05" copies.

    A list of ten entries, each an int (a position) or None (a hyphen); 6.0 or True is
    not a position.
    """
    name = "Exercise 2.5 (ideal alignment)"
    if answer is ...:
        check_answer(answer, IDEAL_ALIGNMENT, name)
    if not isinstance(answer, list) or len(answer) != len(IDEAL_ALIGNMENT):
        raise CheckFailed(f"{name}: expected a list of {len(IDEAL_ALIGNMENT)} entries, one per "
                          f"output character of '1999-06-05', got {answer!r}")
    for t, (got, expected) in enumerate(zip(answer, IDEAL_ALIGNMENT)):
        where = f"entry {t} (output character {'1999-06-05'[t]!r})"
        if got is not None and (isinstance(got, bool) or not isinstance(got, numbers.Integral)):
            raise CheckFailed(f"{name}: {where} must be a position (an int) or None, got "
                              f"a {type(got).__name__} ({got!r})")
        if got != expected:
            raise CheckFailed(f"{name}: {where} should not be {got!r}. Count source positions "
                              "from 0: '05.06.1999'[0] is '0'.")
    print(f"✅ {name}: right.")


__all__ = ["check_additive_score", "check_masked_softmax", "check_context_vector",
           "check_bahdanau_step", "check_ideal_alignment"]
