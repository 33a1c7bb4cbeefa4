"""Checks for the exercises of chapter 1, "The bottleneck".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape the exercise allows appears
(batches of one, length-one sequences, padding), then on fresh random inputs.
Floats are compared with atol 1e-5 + rtol 1e-4 * |expected| unless a check says
otherwise; the caller's tensors and lists must be unchanged after the call.
"""

from __future__ import annotations

import numbers
import random

import torch

from attnbook.checks.core import (
    CheckFailed,
    call_student,
    compare_gradients,
    compare_with_reference,
    in_turn,
    random_size,
    verdict,
)
from attnbook.data import Example, date_vocabs, make_batch, random_example
from attnbook.seq2seq import bottleneck_model, greedy_decode, last_real_state
from attnbook.train import accuracy_by_length, char_accuracy, date_exact_match, sequence_loss

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

SLIP_TARGET = "2004-06-03;1957-04-07;2022-08-28"
SLIPS = {"substituted": "2004-06-08;1957-04-07;2022-08-28",  # one digit wrong
         "inserted": "2004-06-003;1957-04-07;2022-08-28",  # one digit too many
         "no separator": "2004-06-031957-04-07;2022-08-28"}  # the first `;` dropped
PREDICTION_TOLERANCE = 0.05  # a predicted character score may be off by 5 points


def _slip_truth() -> dict[str, tuple[float, list[float]]]:
    return {name: (char_accuracy([output], [SLIP_TARGET]),
                   date_exact_match([output], [SLIP_TARGET]))
            for name, output in SLIPS.items()}


def _as_number(value):
    """A Python number from an int, a float, a NumPy scalar or a 0-d tensor, else None."""
    if torch.is_tensor(value):
        value = value.item() if value.numel() == 1 else None
    elif hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _read_slips(answer, label: str, name: str) -> dict[str, tuple[float, list[float]]]:
    """{output: (character score, [three date scores])} from the student's dict, or a
    one-line verdict saying what is missing or malformed."""
    if answer is ...:
        raise CheckFailed(f"{name}: replace the ... in your {label} with a dict")
    if not isinstance(answer, dict) or set(answer) != set(SLIPS):
        raise CheckFailed(f"{name}: your {label} must be a dict with the keys "
                          f"{sorted(SLIPS)} and nothing else, got {_short(answer)}")
    read = {}
    for key in SLIPS:
        entry = answer[key]
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise CheckFailed(f"{name}: {label}[{key!r}] must be a pair (character score, "
                              f"[three date scores]), got {_short(entry)}")
        characters, dates = _as_number(entry[0]), entry[1]
        if characters is None:
            raise CheckFailed(f"{name}: the character score in {label}[{key!r}] must be "
                              f"a number, got {_short(entry[0])}")
        if not isinstance(dates, (tuple, list)) or len(dates) != 3 or any(
                _as_number(d) is None for d in dates):
            raise CheckFailed(f"{name}: the date scores in {label}[{key!r}] must be a list "
                              f"of three numbers (first, second, third date), got "
                              f"{_short(dates)}")
        read[key] = (characters, [_as_number(d) for d in dates])
    return read


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def check_slips_recorded(predicted) -> None:
    """Exercise 1.5, first step: a prediction of the right form is written down. Says
    nothing about whether it is right: that comes after the measurement."""
    name = "Exercise 1.5 (prediction)"
    _read_slips(predicted, "prediction", name)
    print(f"✅ {name}: recorded for all {len(SLIPS)} outputs. Now measure.")


def check_slips(predicted, measured) -> None:
    """Exercise 1.5: `char_accuracy` and `date_exact_match` of three outputs with one
    slip each (SLIPS) against SLIP_TARGET.

    A predicted character score may be off by PREDICTION_TOLERANCE (5 points: the
    coincidences after a shift are not the point); a measured one must match within
    1e-9. Date scores, predicted or measured, must be exact (each is 0 or 1). Every
    number that is off is named, with the amount.
    """
    name = "Exercise 1.5 (one slip, two scores)"
    answers = {"prediction": _read_slips(predicted, "prediction", name),
               "measurement": _read_slips(measured, "measurement", name)}
    problems = []
    for label, tolerance in (("prediction", PREDICTION_TOLERANCE), ("measurement", 1e-9)):
        adjective = "predicted" if label == "prediction" else "measured"
        for key, (true_chars, true_dates) in _slip_truth().items():
            characters, dates = answers[label][key]
            if abs(characters - true_chars) > tolerance:
                problems.append(f"the {adjective} character score of {key!r} is "
                                f"{characters:.3g}, off by {characters - true_chars:+.3f}")
            if dates != true_dates:
                wrong = [k + 1 for k in range(3) if dates[k] != true_dates[k]]
                words = [("first", "second", "third")[k - 1] for k in wrong]
                places = " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1
                                      else words)
                problems.append(f"the {adjective} date scores of {key!r} are wrong for "
                                f"the {places} date")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems))
    truth = _slip_truth()
    print(f"✅ {name}: prediction and measurement both right (one wrong digit costs "
          f"{1 - truth['substituted'][0]:.0%} of the characters, one extra digit "
          f"{1 - truth['inserted'][0]:.0%}).")


# Exercise 1.6

DAYS_1950_TO_2049 = 36_525
# (n_dates, n_days): the chapter's dates, one date, no choice at all (0 bits), powers of
# two (exact: 3 dates of 1,024 days need 30 bits, one more day needs 31), few days,
# weeks, and five dates (per-date rounding then differs by 2).
BITS_CASES = [(3, 36_525), (1, 36_525), (1, 1), (4, 1), (3, 1_024), (3, 1_025),
              (1, 2), (2, 3), (5, 36_525), (2, 7), (6, 10), (4, 365), (2, 100_000)]


def reference_bits(n_dates: int, n_days: int) -> int:
    """The smallest whole b with 2**b >= n_days**n_dates, in exact integer arithmetic."""
    return (n_days ** n_dates - 1).bit_length()


def check_bits_to_tell_apart(student_fn) -> None:
    """Exercise 1.6: the whole number of bits that tells any `n_dates` dates apart, each
    one of `n_days` days. Exact, and an int (not a float or a tensor); fixed cases
    (BITS_CASES) where rounding each date up, or rounding down, or counting in another
    base gives another number, then random ones."""
    name = "Exercise 1.6 (bits to tell dates apart)"
    generator = torch.Generator().manual_seed(1234)
    cases = list(BITS_CASES) + [(random_size(generator, 1, 6),
                                 random_size(generator, 2, 50_000)) for _ in range(20)]
    for n_dates, n_days in cases:
        case = f"bits_to_tell_apart({n_dates}, {n_days})"
        got = call_student(student_fn, (n_dates, n_days), name, case=case)
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            raise CheckFailed(f"{name}: {case} returned {_short(got)}; return a whole "
                              "number (an int)")
        expected = reference_bits(n_dates, n_days)
        if got != expected:
            raise CheckFailed(f"{name}: {case} gives {got}, but {n_days:,} ** {n_dates} "
                              f"values need {expected} bits ({got - expected:+d})")
    print(f"✅ {name}: right in all {len(cases)} cases.")


__all__ = ["check_last_real_state", "check_sequence_loss", "check_greedy_decode",
           "check_accuracy_by_length", "check_slips_recorded", "check_slips",
           "check_bits_to_tell_apart", "reference_bits", "SLIPS", "SLIP_TARGET"]
