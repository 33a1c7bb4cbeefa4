"""Checks for the exercises of chapter 2, "Additive attention".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape and mask form the exercise
allows appears, then on fresh random inputs. Floats are compared with atol 1e-5 +
rtol 1e-4 * |expected| unless a check says otherwise; the caller's tensors must be
unchanged after the call.
"""

from __future__ import annotations

import math
import numbers
import random

import torch

from attnbook.attention import AdditiveScore, masked_softmax, padding_mask
from attnbook.checks.core import (
    CheckFailed,
    _describe,
    as_number,
    call_student,
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
    + rtol 1e-4, and must have the scores' dtype (float32 here: an answer that computes
    in float64 must cast back); then the gradient with respect to the scores, for every case, under
    upstream gradients of size about 100 (a division by a tiny number instead of by 1
    in a fully masked row then overflows to inf, and inf * 0 is NaN): it must be free
    of NaN and inf and match the reference's (atol GRAD_TOL + rtol GRAD_TOL, 2e-2: the
    reason is at GRAD_TOL).
    """
    name = "Exercise 2.2 (masked_softmax)"
    cases = [(_describe_case(*case), case[1], case[2])
             for case in _masked_softmax_cases(torch.Generator().manual_seed(1234))]
    student = in_scores_dtype(student_fn, name)
    compare_cases(student, reference_masked_softmax, [(d, (s, m)) for d, s, m in cases],
                  name=name, arg_names=("scores", "mask"))
    for description, scores, mask in cases:
        compare_gradients(_times_100(student), _times_100(reference_masked_softmax),
                          (scores, mask), wrt=(0,), name=name, case=description,
                          atol=GRAD_TOL, rtol=GRAD_TOL, arg_names=("scores", "mask"))
    print(f"✅ {name}: gradients are right and finite in every case, also for fully "
          "masked rows.")


def in_scores_dtype(student_fn, name: str):
    """`student_fn` whose tensor result must have the dtype of its first argument (the
    scores): a float64 result from float32 scores gets a verdict saying so."""
    def run(scores, *rest):
        result = student_fn(scores, *rest)
        if torch.is_tensor(result) and result.dtype != scores.dtype:
            raise CheckFailed(f"{name}: with scores of dtype {scores.dtype}, your weights "
                              f"have dtype {result.dtype}; return the scores' dtype")
        return result
    return run


def _times_100(function):
    def scaled(scores, mask):
        return 100 * function(scores, mask)
    return scaled


# Exercise 2.3


def _scores_mask_values(generator: torch.Generator, B: int, S: int, D: int,
                        lengths: list[int] | None = None):
    """Scores, a boolean padding mask with at least one real position per row (the
    decoder never meets an empty row) and values."""
    if lengths is None:
        lengths = torch.randint(1, S + 1, (B,), generator=generator).tolist()
    mask = padding_mask(torch.tensor(lengths), S)
    scores = 3 * torch.randn(B, S, generator=generator)
    return scores, mask, torch.randn(B, S, D, generator=generator)


def reference_context_from_scores(scores, mask, values):
    """The package's way: a masked softmax over the positions, then the weighted sum."""
    return attend(masked_softmax(scores, mask), values)


def check_context_from_scores(student_fn) -> None:
    """Exercise 2.3: the context vector from scores, a boolean padding mask (True at
    real positions, at least one per row) and values, (B, S), (B, S), (B, S, D) -> (B, D).

    Cases: a batch of one (a softmax over the batch gives weights of one, or NaN at
    padding), as many rows as positions and features (a softmax over the wrong axis then
    raises nothing), padding in every row but the first, no padding, one position, then
    random sizes. Compared with atol 1e-5 + rtol 1e-4; the arguments must be unchanged.
    """
    name = "Exercise 2.3 (context_from_scores)"
    generator = torch.Generator().manual_seed(1234)
    cases = [("a batch of one with two padded positions",
              _scores_mask_values(generator, 1, 5, 3, [3])),
             ("3 rows, 3 positions, 3 features, no padding",
              _scores_mask_values(generator, 3, 3, 3, [3, 3, 3])),
             ("3 rows, 3 positions, 3 features, with padding",
              _scores_mask_values(generator, 3, 3, 3, [3, 1, 2])),
             ("padding in every row but the first",
              _scores_mask_values(generator, 4, 6, 2, [6, 2, 4, 1])),
             ("one position", _scores_mask_values(generator, 2, 1, 4, [1, 1]))]
    for _ in range(3):
        B, S, D = (random_size(generator, 2, 5), random_size(generator, 2, 8),
                   random_size(generator, 1, 6))
        cases.append(("random sizes", _scores_mask_values(generator, B, S, D)))
    cases = [(f"{description} (scores of shape {tuple(inputs[0].shape)}, values of shape "
              f"{tuple(inputs[2].shape)})", inputs) for description, inputs in cases]
    compare_cases(student_fn, reference_context_from_scores, cases, name=name,
                  arg_names=("scores", "mask", "values"))


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
    new state must be an AttentionState (a plain tuple gets its own verdict); the
    logits, every field of the new state (its `t` must be an int) and the weights are
    compared with atol 1e-5 + rtol 1e-4; `state` and `memory` must be unchanged.
    """
    name = "Exercise 2.4 (bahdanau_step)"

    def reference(decoder, prev_tokens, state, memory):
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
        if (isinstance(result, (tuple, list)) and len(result) == 3
                and not isinstance(result[1], AttentionState)):
            raise CheckFailed(f"{name}: the new state must be an AttentionState, got "
                              f"{_describe(result[1])}; build it with "
                              "state._replace(hidden=..., t=state.t + 1)")
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

    A list (or tuple) of ten entries, each an int (a position) or None (a hyphen);
    6.0 or True is not a position.
    """
    name = "Exercise 2.5 (ideal alignment)"
    if answer is ...:
        check_answer(answer, IDEAL_ALIGNMENT, name)
    if not isinstance(answer, (list, tuple)) or len(answer) != len(IDEAL_ALIGNMENT):
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


# Exercise 2.6

# (v, n_positions): v all zero (every weight is 1/S), one entry, negative entries (the
# bound needs |v|, not v), S = 1 (one position gets everything) and S = 2, an L2 norm
# that differs from the L1 norm, a sharp v with many positions, a wide v.
WEIGHT_LIMIT_CASES = [([0.0, 0.0, 0.0], 5), ([1.5], 2), ([1.0, -2.0, 0.5], 10),
                      ([0.3, 0.4], 1), ([0.25, 0.25, 0.25, 0.25], 80), ([-3.0, 2.0], 30),
                      ([0.1] * 32, 80), ([2.5, -2.5, 1.0], 2)]


def reference_weight_limits(v: torch.Tensor, n_positions: int) -> tuple[float, float]:
    """(smallest, largest) weight an additive score with vector v can give one of
    n_positions real positions: every score lies in (-|v|_1, |v|_1), because each tanh
    lies in (-1, 1), whatever the query, keys, W_q, W_k and bias; the bounds are
    approached, never reached."""
    spread = math.exp(2 * float(v.double().abs().sum()))
    others = n_positions - 1
    return 1 / (1 + others * spread), spread / (spread + others)


def check_weight_limits(student_fn) -> None:
    """Exercise 2.6: the smallest and largest weight an additive score with vector `v`
    can give one of `n_positions` positions, as a pair of numbers (Python floats, NumPy
    numbers or 0-d tensors), each within a relative 1e-5 (float32 arithmetic passes).

    Fixed cases (WEIGHT_LIMIT_CASES), then random vectors of 1 to 64 entries with
    |v|_1 up to 10 and 1 to 100 positions; `v` must be left as it was.
    """
    name = "Exercise 2.6 (weight limits)"
    generator = torch.Generator().manual_seed(1234)
    cases = [(torch.tensor(v), n) for v, n in WEIGHT_LIMIT_CASES]
    for _ in range(12):
        size = random_size(generator, 1, 64)
        v = torch.randn(size, generator=generator)
        v = v * float(torch.rand(1, generator=generator)) * 10 / v.abs().sum()
        cases.append((v, random_size(generator, 1, 100)))
    for v, n_positions in cases:
        shown = [round(x, 3) for x in v.tolist()[:4]] + (["..."] if len(v) > 4 else [])
        case = f"weight_limits(v={shown}, n_positions={n_positions})"
        before = v.clone()
        got = call_student(student_fn, (v, n_positions), name, case=case)
        if not torch.equal(before, v):
            raise CheckFailed(f"{name}: {case} changed `v` in place; leave it as it was")
        if (torch.is_tensor(got) or hasattr(got, "tolist")) and getattr(got, "shape", ()) == (2,):
            got = list(got)  # a 1-D tensor or array of two numbers is a pair too
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{name}: {case} must return a pair (smallest, largest), "
                              f"got {_describe(got)}")
        for label, value, truth in zip(("smallest", "largest"), got,
                                       reference_weight_limits(v, n_positions)):
            number = as_number(value, whole=False)
            if number is None:
                raise CheckFailed(f"{name}: {case}: the {label} weight must be a number, "
                                  f"got {_describe(value)}")
            if not math.isclose(number, truth, rel_tol=1e-5, abs_tol=1e-300):
                raise CheckFailed(f"{name}: {case}: the {label} weight should be "
                                  f"{truth:.6g}, got {number:.6g}")
    print(f"✅ {name}: right in all {len(cases)} cases.")


__all__ = ["check_additive_score", "check_masked_softmax", "check_context_from_scores",
           "check_bahdanau_step", "check_ideal_alignment", "check_weight_limits",
           "in_scores_dtype", "reference_context_from_scores", "reference_weight_limits"]
