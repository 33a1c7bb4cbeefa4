"""Checks for the exercises of chapter 1, "The bottleneck".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape the exercise allows appears
(batches of one, length-one sequences, padding), then on fresh random inputs.
Floats are compared with atol 1e-5 + rtol 1e-4 * |expected| unless a check says
otherwise; the caller's tensors and lists must be unchanged after the call.
"""

from __future__ import annotations

import random

import torch

from attnbook.checks.core import (
    CheckFailed,
    call_student,
    check_answer,
    compare_gradients,
    compare_with_reference,
    in_turn,
    random_size,
    verdict,
)
from attnbook.data import Example, date_vocabs, make_batch, random_example
from attnbook.seq2seq import bottleneck_model, greedy_decode, last_real_state
from attnbook.train import accuracy_by_length, sequence_loss

# Exercise 1.1


def _padded_outputs(batch: int | None = None, length: int | None = None,
                    hidden: int | None = None):
    def make(generator: torch.Generator):
        B = batch or random_size(generator, 2, 5)
        S = length or random_size(generator, 2, 8)
        H = hidden or random_size(generator, 2, 4)
        outputs = torch.randn(B, S, H, generator=generator)
        lengths = torch.randint(1, S + 1, (B,), generator=generator)
        lengths[0] = 1  # a sequence of one real position
        if B > 1:
            lengths[1] = S  # and one without padding
        return outputs, lengths
    return make


def check_last_real_state(student_fn) -> None:
    """Exercise 1.1: the encoder output at each sequence's last real position.

    Cases: a batch of one and a length-one sequence (a `.squeeze()` too many fails
    there), a hidden size of one, then random batches with padding; exact values
    are expected (atol 1e-6).
    """
    makers = [_padded_outputs(1, 1, 1), _padded_outputs(1, 5, 3), _padded_outputs(4, 6, 1),
              _padded_outputs(3, 7, 2), _padded_outputs(), _padded_outputs()]
    compare_with_reference(student_fn, last_real_state, in_turn(*makers),
                           name="Exercise 1.1 (last_real_state)", trials=len(makers),
                           atol=1e-6, rtol=0.0, arg_names=("outputs", "lengths"))


# Exercise 1.2


def _logits_and_targets(pad_id: int | None = None, batch: int | None = None):
    def make(generator: torch.Generator):
        B, T, V = (batch or random_size(generator, 2, 4), random_size(generator, 2, 7),
                   random_size(generator, 4, 7))
        pad = random_size(generator, 1, V - 1) if pad_id is None else pad_id
        logits = torch.randn(B, T, V, generator=generator) * 2
        targets = torch.randint(0, V - 1, (B, T), generator=generator)
        targets[targets >= pad] += 1  # real targets are never the pad id
        targets[0, -1] = pad  # some padding, which must not count
        if B > 1:
            targets[1, T // 2:] = pad  # rows with different numbers of real targets
        return logits, targets, pad
    return make


def check_sequence_loss(student_fn) -> None:
    """Exercise 1.2: mean cross-entropy over real target positions, as a 0-d tensor.

    Cases: `pad_id` 0 and other ids (an answer that assumes 0 fails), a batch of
    one, rows with different numbers of real targets (a mean of per-row means
    fails). Values and the gradient with respect to the logits are compared with
    atol 1e-5 + rtol 1e-4 * |expected|.
    """
    name = "Exercise 1.2 (sequence_loss)"
    makers = [_logits_and_targets(pad_id=3), _logits_and_targets(pad_id=0),
              _logits_and_targets(pad_id=1, batch=1), _logits_and_targets(),
              _logits_and_targets()]
    compare_with_reference(student_fn, sequence_loss, in_turn(*makers), name=name,
                           trials=len(makers), arg_names=("logits", "targets", "pad_id"))
    generator = torch.Generator().manual_seed(99)
    for make in makers[:3]:
        logits, targets, pad_id = make(generator)
        compare_gradients(student_fn, sequence_loss, (logits, targets, pad_id), wrt=(0,), name=name,
                          case=f"with logits of shape {tuple(logits.shape)} and pad_id={pad_id}")
    print(f"✅ {name}: the gradient with respect to the logits is right too.")


# Exercise 1.3

# (seed, <eos> bias, max_len, batch size). Larger biases make <eos> likely, so:
# rows that write <eos> at different steps before max_len (they must keep decoding until
# every row has; "stop once every row's *latest* token is <eos>" gives other lengths),
# decodings cut off by max_len (5, 9, 3: an answer that ignores max_len fails), one that
# ends exactly at max_len, one that stops after one step, and a batch of one.
DECODING_CASES = ((7, 0.3, 12, 4), (9, 0.3, 12, 4), (55, 0.3, 12, 4), (24, 0.3, 5, 4),
                  (6, 0.3, 9, 4), (0, 0.0, 3, 1), (9, 0.3, 7, 4), (3, 0.0, 12, 4))


def _small_model_and_batch(seed: int, eos_bias: float, max_len: int = 12, batch: int = 4):
    src_vocab, tgt_vocab = date_vocabs()
    torch.manual_seed(seed)
    model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16).eval()
    with torch.no_grad():  # make <eos> likely, so that some rows finish before others
        model.decoder.out.bias[tgt_vocab.eos_id] += eos_bias
    rng = random.Random(seed)
    examples = [random_example(rng, rng.randint(1, 2)) for _ in range(batch)]
    batch_ = make_batch(examples, src_vocab, tgt_vocab)
    return model, batch_.src, batch_.src_lengths, max_len


def _random_model_and_batch(generator: torch.Generator):
    return _small_model_and_batch(random_size(generator, 0, 9_999),
                                  float(torch.empty(1).uniform_(0.0, 0.6, generator=generator)),
                                  random_size(generator, 2, 15), random_size(generator, 1, 5))


def _reference_tokens(model, src, src_lengths, max_len):
    with torch.no_grad():
        tokens, _ = greedy_decode(model, src, src_lengths, max_len)
    return tokens


def _student_tokens(student_fn):
    def run(model, src, src_lengths, max_len):
        with torch.no_grad():
            return student_fn(model, src, src_lengths, max_len)
    return run


def check_greedy_decode(student_fn) -> None:
    """Exercise 1.3: greedy decoding with (randomly initialised) models.

    The fixed cases (DECODING_CASES) come first: rows finishing at different steps,
    decodings cut off at several values of `max_len`, a batch of one; then random
    models, batches and `max_len`. The tokens must be a (B, steps) tensor of dtype
    long and match exactly.
    """
    makers = [lambda _, case=case: _small_model_and_batch(*case) for case in DECODING_CASES]
    makers += [_random_model_and_batch] * 3
    compare_with_reference(_student_tokens(student_fn), _reference_tokens, in_turn(*makers),
                           name="Exercise 1.3 (greedy_decode)", trials=len(makers),
                           arg_names=("model", "src", "src_lengths", "max_len"))


# Exercise 1.4

# Bucket edges: the chapter's; narrower ones; buckets that stay empty (lengths under 8
# do not occur) and sources outside every bucket; keys whose text order differs from
# their numeric order ("8-9" before "10-29"); and edges that source lengths hit exactly
# (a bucket is [lo, hi), so a source of length hi belongs to the next one).
BUCKET_EDGES = ([0, 20, 40, 60, 80], [0, 5, 8, 10, 30, 70], [12, 13, 14, 15, 16, 30],
                [8, 10, 30, 70], [10, 20, 25, 40])


def _examples_and_predictions(edges: list[int]):
    def make(generator: torch.Generator):
        rng = random.Random(random_size(generator, 0, 9_999))
        examples: list[Example] = [random_example(rng, rng.randint(1, 3)) for _ in range(60)]
        predictions = [e.target if rng.random() < 0.6 else e.target[:-1] + "0" for e in examples]
        return examples, predictions, list(edges)
    return make


def check_accuracy_by_length(student_fn) -> None:
    """Exercise 1.4: exact match per input-length bucket, as a dict in bucket order.

    The edges change from case to case (BUCKET_EDGES): an answer that assumes the
    chapter's edges, keeps empty buckets, includes `hi` in a bucket, or sorts the keys
    as text fails, and the verdict names the bucket. Accuracies must be Python numbers
    and are compared with atol 1e-6: 1 - 1/3 equals 2/3, and a mean taken in float32
    (`torch.tensor(right).float().mean().item()`) passes, while two fractions of at
    most 60 examples differ by at least 1/3540. The three lists must be left as they were.
    """
    name = "Exercise 1.4 (accuracy_by_length)"
    generator = torch.Generator().manual_seed(1234)
    for trial, edges in enumerate(BUCKET_EDGES, start=1):
        examples, predictions, edges = _examples_and_predictions(edges)(generator)
        case = f"on test {trial} of {len(BUCKET_EDGES)}, with edges {edges}"
        expected = accuracy_by_length(examples, predictions, edges)
        before = (list(examples), list(predictions), list(edges))
        got = call_student(student_fn, (examples, predictions, edges), name, case)
        for argument, old, new in zip(("examples", "predictions", "edges"), before,
                                      (examples, predictions, edges)):
            if list(new) != old:
                raise CheckFailed(f"{name}: {case}, your function changed its `{argument}` "
                                  "list in place; leave the caller's lists as they were")
        if not isinstance(got, dict):
            raise CheckFailed(f"{name}: {case}, expected a dict, got a {type(got).__name__}")
        if list(got) != list(expected):
            raise CheckFailed(f"{name}: {case}, expected the buckets {list(expected)} in this "
                              f"order, got {list(got)}")
        for bucket, accuracy in expected.items():
            problem = verdict(got[bucket], accuracy, atol=1e-6, rtol=0.0)
            if problem:
                raise CheckFailed(f"{name}: {case}, bucket {bucket!r}: {problem}")
    print(f"✅ {name}: correct on {len(BUCKET_EDGES)} sets of edges.")


# Exercise 1.5

BITS_FOR_THREE_DATES = 46  # ceil(3 * log2(36525)) = ceil(45.47)


def check_bits_for_three_dates(answer) -> None:
    """Exercise 1.5: the whole number of bits that tells three dates apart (an int)."""
    check_answer(answer, BITS_FOR_THREE_DATES, "Exercise 1.5 (bits for three dates)",
                 hint="Each date is one of 36,525 values: log2(36525) bits each, three times, "
                      "rounded up.")


__all__ = ["check_last_real_state", "check_sequence_loss", "check_greedy_decode",
           "check_accuracy_by_length", "check_bits_for_three_dates"]
