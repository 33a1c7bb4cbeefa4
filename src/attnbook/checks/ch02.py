"""Checks for the exercises of chapter 2, "Additive attention"."""

from __future__ import annotations

import random

import torch

from attnbook.attention import AdditiveScore, masked_softmax, padding_mask
from attnbook.checks.core import CheckFailed, check_answer, compare_with_reference
from attnbook.data import date_vocabs, make_batch, random_example
from attnbook.seq2seq import attend, bahdanau_model


def _size(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _query_keys_weights(generator: torch.Generator):
    B, S, Dq, Dk, A = (_size(generator, 1, 4), _size(generator, 1, 7), _size(generator, 1, 6),
                       _size(generator, 1, 6), _size(generator, 1, 5))
    query = torch.randn(B, Dq, generator=generator)
    keys = torch.randn(B, S, Dk, generator=generator)
    W_q = torch.randn(A, Dq, generator=generator)
    W_k = torch.randn(A, Dk, generator=generator)
    v = torch.randn(A, generator=generator)
    return query, keys, W_q, W_k, v


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
    """Exercise 2.1: v . tanh(W_q q + W_k k) for every key."""
    compare_with_reference(student_fn, reference_additive_score, _query_keys_weights,
                           name="Exercise 2.1 (additive_score)")


def _scores_and_mask(generator: torch.Generator):
    B, S = _size(generator, 2, 5), _size(generator, 1, 8)
    # Rows offset by hundreds: exp() overflows unless the row maximum is subtracted first.
    scores = torch.randn(B, S, generator=generator) * 5 + 100 * torch.randn(B, 1, generator=generator)
    lengths = torch.randint(1, S + 1, (B,), generator=generator)
    mask = padding_mask(lengths, S)  # padding at the end of each row
    mask[-1] = False  # a row with nothing to attend to
    return scores, mask


def check_masked_softmax(student_fn) -> None:
    """Exercise 2.2: a softmax over the real positions; a fully masked row gives zeros,
    and its gradient is zero too (never NaN)."""
    name = "Exercise 2.2 (masked_softmax)"
    compare_with_reference(student_fn, masked_softmax, _scores_and_mask, name=name)
    scores, mask = _scores_and_mask(torch.Generator().manual_seed(7))
    scores.requires_grad_(True)
    weights = student_fn(scores, mask)
    if not weights.requires_grad:
        raise CheckFailed(f"{name}: the result does not depend on the scores through autograd "
                          "(did you use .detach(), numpy or a Python loop over floats?)")
    (weights * torch.arange(1.0, scores.shape[1] + 1)).sum().backward()
    if not torch.isfinite(scores.grad).all():
        raise CheckFailed(f"{name}: the values are right, but the gradient with respect to the "
                          "scores contains NaN or inf (look at the fully masked row)")
    print(f"✅ {name}: gradients are finite, also for a fully masked row.")


def _weights_and_values(generator: torch.Generator):
    B, S, D = _size(generator, 1, 4), _size(generator, 1, 7), _size(generator, 1, 6)
    weights = torch.softmax(torch.randn(B, S, generator=generator), dim=-1)
    values = torch.randn(B, S, D, generator=generator)
    return weights, values


def check_context_vector(student_fn) -> None:
    """Exercise 2.3: the weighted sum of the encoder outputs."""
    compare_with_reference(student_fn, attend, _weights_and_values,
                           name="Exercise 2.3 (context_vector)")


def _decoder_step_inputs(generator: torch.Generator):
    seed = int(torch.randint(0, 10_000, (1,), generator=generator))
    src_vocab, tgt_vocab = date_vocabs()
    torch.manual_seed(seed)
    model = bahdanau_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16,
                           attn_dim=8).eval()
    rng = random.Random(seed)
    batch = make_batch([random_example(rng, rng.randint(1, 2)) for _ in range(3)],
                       src_vocab, tgt_vocab)
    with torch.no_grad():
        memory = model.encoder(batch.src, batch.src_lengths)
        state = model.decoder.init_state(memory)
        for t in range(_size(generator, 0, 3)):  # start a few steps in
            _, state, _ = model.decoder.step(batch.tgt_in[:, t], state, memory)
    return model.decoder, batch.tgt_in[:, 3], state, memory


def check_bahdanau_step(student_fn) -> None:
    """Exercise 2.4: one step of the Bahdanau decoder, (logits, state, weights)."""
    def reference(decoder, prev_tokens, state, memory):
        with torch.no_grad():
            return decoder.step(prev_tokens, state, memory)

    def student(decoder, prev_tokens, state, memory):
        with torch.no_grad():
            return student_fn(decoder, prev_tokens, state, memory)

    compare_with_reference(student, reference, _decoder_step_inputs,
                           name="Exercise 2.4 (bahdanau_step)", trials=3)


IDEAL_ALIGNMENT = [6, 7, 8, 9, None, 3, 4, None, 0, 1]  # "05.06.1999" -> "1999-06-05"


def check_ideal_alignment(answer) -> None:
    """Exercise 2.5: which source position each output character of "1999-06-05" copies."""
    name = "Exercise 2.5 (ideal alignment)"
    if answer is ...:
        check_answer(answer, IDEAL_ALIGNMENT, name)
    if not isinstance(answer, list) or len(answer) != len(IDEAL_ALIGNMENT):
        raise CheckFailed(f"{name}: expected a list of {len(IDEAL_ALIGNMENT)} entries, one per "
                          f"output character of '1999-06-05', got {answer!r}")
    for t, (got, expected) in enumerate(zip(answer, IDEAL_ALIGNMENT)):
        if got != expected:
            raise CheckFailed(f"{name}: entry {t} (output character {'1999-06-05'[t]!r}) should not "
                              f"be {got!r}. Count source positions from 0: '05.06.1999'[0] is '0'.")
    print(f"✅ {name}: right.")


__all__ = ["check_additive_score", "check_masked_softmax", "check_context_vector",
           "check_bahdanau_step", "check_ideal_alignment"]
