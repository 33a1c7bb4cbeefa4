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
    compare_with_reference,
    in_turn,
    random_size,
    verdict,
)
from attnbook.data import Example, date_vocabs, make_batch, pad_sequences, random_example
from attnbook.seq2seq import bottleneck_model, greedy_decode, last_real_state
from attnbook.train import accuracy_by_length, char_accuracy, date_exact_match

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


def reference_teacher_forcing_pair(targets, bos_id: int, eos_id: int, pad_id: int):
    """(tgt_in, tgt_out) as `attnbook.data.make_batch` builds them: `<bos>` + target and
    target + `<eos>`, each padded with `pad_id` to one more than the longest target."""
    return (pad_sequences([[bos_id] + list(ids) for ids in targets], pad_id),
            pad_sequences([list(ids) + [eos_id] for ids in targets], pad_id))


def _pair_cases(generator: torch.Generator) -> list[tuple[str, tuple]]:
    """(description, (targets, bos_id, eos_id, pad_id)): rows of different lengths, no
    padding at all, rows of one id, a batch of one, pad_id other than 0 (an answer
    that pads with zeros fails) and bos/eos in another order, the date vocabulary's
    own ids, then random batches with random special ids."""
    _, tgt_vocab = date_vocabs()
    dates = [tgt_vocab.encode(t) for t in ("2004-06-03", "1957-04-07;2022-08-28")]
    special = (tgt_vocab.bos_id, tgt_vocab.eos_id, tgt_vocab.pad_id)
    cases = [("rows of different lengths", ([[3, 4, 5], [6], [7, 8]], 1, 2, 0)),
             ("rows of the same length (no padding)", ([[3, 4], [5, 6]], 1, 2, 0)),
             ("rows of one id", ([[3], [4], [5]], 1, 2, 0)),
             ("a batch of one", ([[5, 6, 7, 4]], 1, 2, 0)),
             ("pad_id 9, bos_id 8, eos_id 7", ([[1, 2], [3, 4, 5, 6], [0]], 8, 7, 9)),
             ("two date targets and the date vocabulary's ids", (dates, *special))]
    for _ in range(4):
        ids = torch.randperm(20, generator=generator).tolist()
        bos_id, eos_id, pad_id, regular = ids[0], ids[1], ids[2], ids[3:]
        targets = [[regular[int(k)] for k in torch.randint(
                        0, len(regular), (random_size(generator, 1, 8),),
                        generator=generator)]
                   for _ in range(random_size(generator, 1, 5))]
        cases.append(("random targets and ids", (targets, bos_id, eos_id, pad_id)))
    return [(f"{description} (target lengths {[len(t) for t in inputs[0]]}, bos_id "
             f"{inputs[1]}, eos_id {inputs[2]}, pad_id {inputs[3]})", inputs)
            for description, inputs in cases]


def check_teacher_forcing_pair(student_fn) -> None:
    """Exercise 1.2: the decoder's input and target, `(tgt_in, tgt_out)`, from a list
    of target id lists: two (B, T) tensors of dtype long with T one more than the
    longest target, `bos_id` + ids and ids + `eos_id`, padded with `pad_id`.

    Cases (_pair_cases): rows of different lengths, no padding, rows of one id, a
    batch of one, special ids other than 0, 1, 2, then random ones. Exact; the
    `targets` lists must be left as they were.
    """
    name = "Exercise 1.2 (teacher_forcing_pair)"
    cases = _pair_cases(torch.Generator().manual_seed(1234))
    for description, (targets, bos_id, eos_id, pad_id) in cases:
        expected = reference_teacher_forcing_pair(targets, bos_id, eos_id, pad_id)
        before = [list(ids) for ids in targets]
        got = call_student(student_fn, (targets, bos_id, eos_id, pad_id), name,
                           case=description)
        if [list(ids) for ids in targets] != before:
            raise CheckFailed(f"{name}: {description}, your function changed the "
                              "`targets` lists in place; build new lists instead")
        problem = verdict(got, expected, atol=0.0, rtol=0.0,
                          item_names=("tgt_in", "tgt_out"))
        if problem:
            raise CheckFailed(f"{name}: {description}: {problem}")
    print(f"✅ {name}: right in all {len(cases)} cases.")


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
PREDICTION_TOLERANCE = 0.05  # a predicted character score (a fraction) may be off by 0.05


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
        characters, dates = _as_number(entry[0]), _date_scores(entry[1])
        if characters is None:
            raise CheckFailed(f"{name}: the character score in {label}[{key!r}] must be "
                              f"a number, got {_short(entry[0])}")
        if characters > 1:
            raise CheckFailed(f"{name}: the character score in {label}[{key!r}] is "
                              f"{characters:g}, above 1: write it as a fraction between 0 "
                              "and 1 (97% is 0.97), not as a percentage")
        if dates is None:
            raise CheckFailed(f"{name}: the date scores in {label}[{key!r}] must be a list "
                              f"of three numbers (first, second, third date), got "
                              f"{_short(entry[1])}")
        read[key] = (characters, dates)
    return read


def _date_scores(value) -> list[float] | None:
    """Three date scores as floats, from a list or tuple of numbers or bools, a NumPy
    array or a tensor of three entries; else None."""
    if not isinstance(value, (tuple, list)) and hasattr(value, "tolist"):
        value = value.tolist()  # a NumPy array or a tensor
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        return None
    scores = []
    for score in value:
        if hasattr(score, "item") and not isinstance(score, (list, tuple, dict)):
            try:
                score = score.item()  # NumPy and 0-d tensor scalars, bools included
            except (TypeError, ValueError):
                return None
        if isinstance(score, bool):
            score = float(score)  # True is a date right, False a date wrong
        number = _as_number(score)
        if number is None:
            return None
        scores.append(number)
    return scores


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

    Character scores are fractions between 0 and 1 (a value above 1, a percentage,
    gets its own verdict). A predicted one may be off by PREDICTION_TOLERANCE (0.05:
    the coincidences after a shift are not the point); a measured one must match
    within 1e-9. Date scores, predicted or measured, must be exact (each is 0 or 1;
    bools, tuples, NumPy arrays and tensors are read too). Every number that is off is
    named, with the amount.
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


__all__ = ["check_last_real_state", "check_teacher_forcing_pair", "check_greedy_decode",
           "check_accuracy_by_length", "check_slips_recorded", "check_slips",
           "check_bits_to_tell_apart", "reference_bits", "reference_teacher_forcing_pair",
           "SLIPS", "SLIP_TARGET"]
