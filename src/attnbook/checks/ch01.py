"""Checks for the exercises of chapter 1, "The bottleneck"."""

from __future__ import annotations

import random

import torch

from attnbook.checks.core import CheckFailed, compare_with_reference
from attnbook.data import Example, date_vocabs, make_batch, random_example
from attnbook.seq2seq import bottleneck_model, greedy_decode, last_real_state
from attnbook.train import accuracy_by_length, sequence_loss


def _padded_outputs(generator: torch.Generator):
    batch, length, hidden = (int(torch.randint(1, 6, (1,), generator=generator)),
                             int(torch.randint(2, 9, (1,), generator=generator)),
                             int(torch.randint(1, 5, (1,), generator=generator)))
    outputs = torch.randn(batch, length, hidden, generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = 1  # always include a sequence of one real position
    return outputs, lengths


def check_last_real_state(student_fn) -> None:
    """Exercise 1.1: the encoder output at each sequence's last real position."""
    compare_with_reference(student_fn, last_real_state, _padded_outputs,
                           name="Exercise 1.1 (last_real_state)")


def _logits_and_targets(generator: torch.Generator):
    batch, steps, vocab = 3, int(torch.randint(2, 7, (1,), generator=generator)), 5
    logits = torch.randn(batch, steps, vocab, generator=generator)
    pad_id = int(torch.randint(0, vocab, (1,), generator=generator))  # not always 0
    targets = torch.randint(0, vocab - 1, (batch, steps), generator=generator)
    targets[targets >= pad_id] += 1  # real targets are never pad_id
    targets[0, -1] = pad_id  # some padding, which must not count
    targets[1, steps // 2:] = pad_id
    return logits, targets, pad_id


def check_sequence_loss(student_fn) -> None:
    """Exercise 1.2: mean cross-entropy over real target positions."""
    compare_with_reference(student_fn, sequence_loss, _logits_and_targets,
                           name="Exercise 1.2 (sequence_loss)")


# Models whose rows write <eos> at different steps, all before max_len (found by trying
# seeds with an <eos> bias of 0.3): row b must keep decoding after it has finished until
# every row has, so "stop once every row's *latest* token is <eos>" gives other lengths.
STAGGERED_SEEDS = (7, 9, 55)


def _small_model_and_batch(seed: int, eos_bias: float):
    src_vocab, tgt_vocab = date_vocabs()
    torch.manual_seed(seed)
    model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16).eval()
    with torch.no_grad():  # make <eos> likely, so that some rows finish before others
        model.decoder.out.bias[tgt_vocab.eos_id] += eos_bias
    rng = random.Random(seed)
    batch = make_batch([random_example(rng, rng.randint(1, 2)) for _ in range(4)],
                       src_vocab, tgt_vocab)
    return model, batch.src, batch.src_lengths, 12


def _model_and_batch(generator: torch.Generator):
    seed = int(torch.randint(0, 10_000, (1,), generator=generator))
    return _small_model_and_batch(seed, float(torch.empty(1).uniform_(0.0, 0.6, generator=generator)))


def _reference_tokens(model, src, src_lengths, max_len):
    with torch.no_grad():
        tokens, _ = greedy_decode(model, src, src_lengths, max_len)
    return tokens


def _student_tokens(student_fn):
    def run(model, src, src_lengths, max_len):
        with torch.no_grad():
            result = student_fn(model, src, src_lengths, max_len)
        return result[0] if isinstance(result, tuple) else result
    return run


def check_greedy_decode(student_fn) -> None:
    """Exercise 1.3: greedy decoding with a (randomly initialised) model.

    The models are biased towards <eos>, so some decodings stop early (every row
    has finished), some after rows finished at different steps, and others run
    until `max_len`. The staggered cases come first.
    """
    staggered = iter(STAGGERED_SEEDS)

    def make_inputs(generator):
        seed = next(staggered, None)
        if seed is not None:
            return _small_model_and_batch(seed, eos_bias=0.3)
        return _model_and_batch(generator)

    compare_with_reference(_student_tokens(student_fn), _reference_tokens, make_inputs,
                           name="Exercise 1.3 (greedy_decode)", trials=len(STAGGERED_SEEDS) + 6)


def _examples_and_predictions(generator: torch.Generator):
    rng = random.Random(int(torch.randint(0, 10_000, (1,), generator=generator)))
    examples: list[Example] = [random_example(rng, rng.randint(1, 3)) for _ in range(40)]
    predictions = [e.target if rng.random() < 0.6 else e.target[:-1] + "0" for e in examples]
    return examples, predictions, [0, 20, 40, 60, 80]


def check_accuracy_by_length(student_fn) -> None:
    """Exercise 1.4: exact match per input-length bucket."""
    def as_pairs(examples, predictions, edges):
        result = student_fn(examples, predictions, edges)
        if not isinstance(result, dict):
            raise CheckFailed(f"Exercise 1.4 (accuracy_by_length): expected a dict, "
                              f"got a {type(result).__name__}")
        return list(result.items())

    def reference(examples, predictions, edges):
        return list(accuracy_by_length(examples, predictions, edges).items())

    compare_with_reference(as_pairs, reference, _examples_and_predictions,
                           name="Exercise 1.4 (accuracy_by_length)")


__all__ = ["check_last_real_state", "check_sequence_loss", "check_greedy_decode",
           "check_accuracy_by_length"]
