"""A mutation test of chapter 1's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch

from attnbook.checks import CheckFailed
from attnbook.checks.ch01 import (
    SLIP_TARGET,
    SLIPS,
    check_accuracy_by_length,
    check_bits_to_tell_apart,
    check_greedy_decode,
    check_last_real_state,
    check_slips,
    check_slips_recorded,
    check_teacher_forcing_pair,
)
from attnbook.seq2seq import greedy_decode
from attnbook.train import accuracy_by_length, char_accuracy, date_exact_match


def fails(check, student, match):
    with pytest.raises(CheckFailed, match=match) as failure:
        check(student)
    assert "\n" not in str(failure.value), "a verdict is one line"
    return str(failure.value)


# Exercise 1.1: last_real_state


def last_state_loop(outputs, lengths):
    return torch.stack([outputs[b, int(n) - 1] for b, n in enumerate(lengths)])


def last_state_gather(outputs, lengths):
    index = (lengths - 1)[:, None, None].expand(-1, 1, outputs.shape[2])
    return outputs.gather(1, index)[:, 0]


@pytest.mark.parametrize("student", [last_state_loop, last_state_gather])
def test_1_1_accepts_right_answers_written_differently(student, capsys):
    check_last_real_state(student)
    assert "✅ Exercise 1.1" in capsys.readouterr().out


def last_state_ignores_lengths(outputs, lengths):
    return outputs[:, -1]


def last_state_off_by_one(outputs, lengths):
    return outputs[torch.arange(len(lengths)), lengths]


def last_state_squeezes_too_much(outputs, lengths):
    return outputs.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, outputs.shape[2])).squeeze()


def last_state_in_place(outputs, lengths):
    lengths -= 1
    return outputs[torch.arange(len(lengths)), lengths]


def last_state_numpy(outputs, lengths):
    return outputs.numpy()[np.arange(len(lengths)), lengths.numpy() - 1]


@pytest.mark.parametrize("student, match", [
    (last_state_ignores_lengths, r"values are wrong; the first is at index"),
    (last_state_off_by_one, r"raised IndexError.*line \d+: 'return outputs\[torch.arange"),
    (last_state_squeezes_too_much, r"inputs \(shape \(1, 1, 1\), shape \(1,\)\): wrong shape: "
                                   r"expected \(1, 1\), got \(\)"),
    (last_state_in_place, r"changed its `lengths` in place"),
    (last_state_numpy, r"expected a tensor of shape \(1, 1\) and dtype torch.float32, got a ndarray"),
])
def test_1_1_names_what_is_wrong(student, match):
    fails(check_last_real_state, student, match)


# Exercise 1.2: teacher_forcing_pair (a debug exercise: an off-by-one in a length)


def pair_as_given(targets, bos_id, eos_id, pad_id):  # the exercise's buggy function
    longest = max(len(ids) for ids in targets)
    tgt_in = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    for row, ids in enumerate(targets):
        n = len(ids)
        tgt_in[row, :n] = torch.tensor([bos_id] + ids)[:n]
        tgt_out[row, :n] = torch.tensor(ids + [eos_id])[:n]
    return tgt_in, tgt_out


def pair_fixed(targets, bos_id, eos_id, pad_id):  # the exercise's solution
    longest = max(len(ids) for ids in targets) + 1
    tgt_in = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    for row, ids in enumerate(targets):
        n = len(ids) + 1
        tgt_in[row, :n] = torch.tensor([bos_id] + ids)
        tgt_out[row, :n] = torch.tensor(ids + [eos_id])
    return tgt_in, tgt_out


def pair_with_pad_sequence(targets, bos_id, eos_id, pad_id):
    pad = torch.nn.utils.rnn.pad_sequence
    return (pad([torch.tensor([bos_id, *ids]) for ids in targets], batch_first=True,
                padding_value=pad_id),
            pad([torch.tensor([*ids, eos_id]) for ids in targets], batch_first=True,
                padding_value=pad_id))


def pair_as_lists(targets, bos_id, eos_id, pad_id):  # returns a list, rows padded by hand
    T = 1 + max(map(len, targets))
    rows_in = [[bos_id, *ids] + [pad_id] * (T - 1 - len(ids)) for ids in targets]
    rows_out = [[*ids, eos_id] + [pad_id] * (T - 1 - len(ids)) for ids in targets]
    return [torch.tensor(rows_in), torch.tensor(rows_out)]


@pytest.mark.parametrize("student", [pair_fixed, pair_with_pad_sequence, pair_as_lists])
def test_1_2_accepts_right_answers_written_differently(student, capsys):
    check_teacher_forcing_pair(student)
    assert "✅ Exercise 1.2" in capsys.readouterr().out


def pair_longer_but_no_eos(targets, bos_id, eos_id, pad_id):  # only T fixed
    longest = max(len(ids) for ids in targets) + 1
    tgt_in = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    tgt_out = torch.full((len(targets), longest), pad_id, dtype=torch.long)
    for row, ids in enumerate(targets):
        n = len(ids)
        tgt_in[row, :n] = torch.tensor([bos_id] + ids)[:n]
        tgt_out[row, :n] = torch.tensor(ids + [eos_id])[:n]
    return tgt_in, tgt_out


def pair_eos_in_last_column(targets, bos_id, eos_id, pad_id):  # <eos> after the padding
    tgt_in, _ = pair_fixed(targets, bos_id, eos_id, pad_id)
    body = pair_fixed(targets, bos_id, pad_id, pad_id)[1]
    body[:, -1] = eos_id
    return tgt_in, body


def pair_sliced_from_one_sequence(targets, bos_id, eos_id, pad_id):
    full = pair_with_pad_sequence([[*ids, eos_id] for ids in targets], bos_id, pad_id,
                                  pad_id)[0]  # <bos> + ids + <eos>, padded
    return full[:, :-1], full[:, 1:]  # shorter rows then read <eos>, not <pad>


def pair_pads_with_zeros(targets, bos_id, eos_id, pad_id):
    return pair_fixed(targets, bos_id, eos_id, 0)


def pair_swapped(targets, bos_id, eos_id, pad_id):  # the decoder reads what it must say
    tgt_in, tgt_out = pair_fixed(targets, bos_id, eos_id, pad_id)
    return tgt_out, tgt_in


def pair_appends_in_place(targets, bos_id, eos_id, pad_id):
    for ids in targets:
        ids.append(eos_id)
    tgt_out = pair_with_pad_sequence(targets, pad_id, pad_id, pad_id)[1][:, :-1]
    tgt_in = pair_with_pad_sequence([ids[:-1] for ids in targets], bos_id, eos_id,
                                    pad_id)[0]
    return tgt_in, tgt_out


def pair_int32(targets, bos_id, eos_id, pad_id):
    return tuple(x.int() for x in pair_fixed(targets, bos_id, eos_id, pad_id))


@pytest.mark.parametrize("student, match", [
    (pair_as_given, r"rows of different lengths .*: the tgt_in \(item 0\): wrong shape: "
                    r"expected \(3, 4\), got \(3, 3\)"),
    (pair_longer_but_no_eos, r"rows of different lengths .*: the tgt_in \(item 0\): 3 of "
                             r"12 values are wrong"),
    (pair_eos_in_last_column, r"rows of different lengths .*: the tgt_out \(item 1\): 4 "
                              r"of 12 values are wrong; the first is at index \(1, 1\): "
                              r"expected 2, got 0"),
    (pair_sliced_from_one_sequence, r"the tgt_in \(item 0\): 2 of 12 values are wrong; "
                                    r"the first is at index \(1, 2\): expected 0, got 2"),
    (pair_pads_with_zeros, r"pad_id 9, bos_id 8, eos_id 7 .*: the tgt_in \(item 0\): "
                           r"5 of 15 values are wrong"),
    (pair_swapped, r"the tgt_in \(item 0\): .* values are wrong; the first is at index "
                   r"\(0, 0\): expected 1, got 3"),
    (pair_appends_in_place, r"changed the `targets` lists in place"),
    (pair_int32, r"the tgt_in \(item 0\): wrong dtype: expected torch.int64, got "
                 r"torch.int32"),
])
def test_1_2_names_what_is_wrong(student, match):
    fails(check_teacher_forcing_pair, student, match)


# Exercise 1.3: greedy_decode


def decode_with_cat(model, src, src_lengths, max_len):
    memory = model.encoder(src, src_lengths)
    state = model.decoder.init_state(memory)
    tokens = torch.full((len(src),), model.bos_id)
    produced = torch.empty(len(src), 0, dtype=torch.long)
    while produced.shape[1] < max_len and not (produced == model.eos_id).any(dim=1).all():
        logits, state, _ = model.decoder.step(tokens, state, memory)
        tokens = logits.argmax(dim=-1)
        produced = torch.cat([produced, tokens[:, None]], dim=1)
    return produced


def decode_rows_then_trim(model, src, src_lengths, max_len):
    """Each row on its own for max_len steps, then cut after the first step at which
    every row has written <eos>."""
    rows = []
    for b in range(len(src)):
        memory = model.encoder(src[b:b + 1], src_lengths[b:b + 1])
        state, token, row = model.decoder.init_state(memory), torch.tensor([model.bos_id]), []
        for _ in range(max_len):
            logits, state, _ = model.decoder.step(token, state, memory)
            token = logits.argmax(dim=-1)
            row.append(token)
        rows.append(torch.cat(row))
    tokens = torch.stack(rows)
    done = (tokens == model.eos_id).cummax(dim=1).values.all(dim=0)
    return tokens[:, :int(done.nonzero()[0]) + 1] if done.any() else tokens


def test_1_3_accepts_a_right_answer_written_differently(capsys):
    check_greedy_decode(decode_with_cat)
    check_greedy_decode(lambda model, src, lengths, max_len: greedy_decode(
        model, src, lengths, max_len)[0])
    check_greedy_decode(decode_rows_then_trim)
    assert capsys.readouterr().out.count("✅ Exercise 1.3") == 3


def decoder(stop, steps=lambda max_len: max_len, keep_bos=False):
    """A greedy decoder with a chosen stopping rule and number of steps."""
    def decode(model, src, src_lengths, max_len):
        memory = model.encoder(src, src_lengths)
        state = model.decoder.init_state(memory)
        tokens = torch.full((len(src),), model.bos_id)
        produced = [tokens] if keep_bos else []
        finished = torch.zeros(len(src), dtype=torch.bool)
        for _ in range(steps(max_len)):
            logits, state, _ = model.decoder.step(tokens, state, memory)
            tokens = logits.argmax(dim=-1)
            produced.append(tokens)
            finished |= tokens == model.eos_id
            if stop(tokens == model.eos_id, finished):
                break
        return torch.stack(produced, dim=1)
    return decode


every_row_finished = decoder(lambda latest, finished: finished.all())


@pytest.mark.parametrize("student, match", [
    (decoder(lambda latest, finished: latest.all()), r"on test 1 of 11.*wrong shape"),
    (decoder(lambda latest, finished: finished.any()), r"on test 1 of 11.*wrong shape"),
    (decoder(lambda latest, finished: finished.all(), steps=lambda max_len: 12),
     r"on test 4 of 11.*5\): wrong shape: expected \(4, 5\), got \(4, 12\)"),
    (decoder(lambda latest, finished: finished.all(), steps=lambda max_len: max_len - 1),
     r"on test 4 of 11.*5\): wrong shape: expected \(4, 5\), got \(4, 4\)"),
    (decoder(lambda latest, finished: finished.all(), keep_bos=True), r"on test 1 of 11.*wrong shape"),
    (lambda model, src, lengths, max_len: every_row_finished(
        model, src, torch.full_like(lengths, src.shape[1]), max_len),  # reads the padding too
     r"on test 1 of 11.*values are wrong"),
    (lambda model, src, lengths, max_len: every_row_finished(model, src, lengths, max_len).int(),
     r"on test 1 of 11.*wrong dtype: expected torch.int64, got torch.int32"),
    (lambda model, src, lengths, max_len: list(every_row_finished(model, src, lengths, max_len)),
     r"expected a tensor of shape \(4, 4\) and dtype torch.int64, got a list"),
])
def test_1_3_names_what_is_wrong(student, match):
    fails(check_greedy_decode, student, match)


def test_1_3_cases_exercise_max_len_and_staggered_rows():
    from attnbook.checks.ch01 import DECODING_CASES, _reference_tokens, _small_model_and_batch

    lengths = []
    for case in DECODING_CASES:
        model, src, src_lengths, max_len = _small_model_and_batch(*case)
        lengths.append((_reference_tokens(model, src, src_lengths, max_len).shape[1], max_len))
    cut_off = {max_len for steps, max_len in lengths if steps == max_len}
    assert len(cut_off) >= 3, lengths  # max_len decides the length at several values
    assert any(steps < max_len for steps, max_len in lengths)  # and decodings that stop early
    assert any(len(src) == 1 for _, src, _, _ in [_small_model_and_batch(*c) for c in DECODING_CASES])


# Exercise 1.4: accuracy_by_length


def accuracy_with_numpy(examples, predictions, edges):
    lengths = np.array([len(e.source) for e in examples])
    right = np.array([p == e.target for p, e in zip(predictions, examples)])
    result = {}
    for lo, hi in zip(edges, edges[1:]):
        inside = (lengths >= lo) & (lengths < hi)
        if inside.any():
            result[f"{lo}-{hi - 1}"] = right[inside].mean()  # a NumPy float64
    return result


def accuracy_from_errors(examples, predictions, edges):
    result = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        pairs = [(p, e) for p, e in zip(predictions, examples) if lo <= len(e.source) < hi]
        if pairs:
            wrong = sum(p != e.target for p, e in pairs)
            result[f"{lo}-{hi - 1}"] = 1 - wrong / len(pairs)  # rounds differently from right / n
    return result


def accuracy_in_float32(examples, predictions, edges):
    """A mean taken by torch in float32: 0.523809552 for 11/21, right to 3e-8."""
    return buckets(examples, predictions, edges,
                   value=lambda right: torch.tensor(right).float().mean().item())


@pytest.mark.parametrize("student", [accuracy_with_numpy, accuracy_from_errors,
                                     accuracy_in_float32])
def test_1_4_accepts_right_answers_written_differently(student, capsys):
    check_accuracy_by_length(student)
    assert "✅ Exercise 1.4" in capsys.readouterr().out


def buckets(examples, predictions, edges, inside=lambda n, lo, hi: lo <= n < hi, keep_empty=False,
            value=lambda right: sum(right) / len(right)):
    result = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        right = [p == e.target for p, e in zip(predictions, examples) if inside(len(e.source), lo, hi)]
        if right or keep_empty:
            result[f"{lo}-{hi - 1}"] = value(right) if right else 0.0
    return result


def accuracy_drains_predictions(examples, predictions, edges):
    right = [predictions.pop(0) == e.target for e in examples]
    result = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = [r for r, e in zip(right, examples) if lo <= len(e.source) < hi]
        if inside:
            result[f"{lo}-{hi - 1}"] = sum(inside) / len(inside)
    return result


@pytest.mark.parametrize("student, match", [
    (lambda examples, predictions, edges: buckets(examples, predictions, [0, 20, 40, 60, 80]),
     r"on test 2 of 5, with edges \[0, 5, 8, 10, 30, 70\], expected the buckets"),
    (lambda examples, predictions, edges: buckets(examples, predictions, edges, keep_empty=True),
     r"on test 1 of 5.*expected the buckets \['0-19', '20-39', '40-59'\] in this order, got "
     r"\['0-19', '20-39', '40-59', '60-79'\]"),
    (lambda examples, predictions, edges: buckets(
        examples, predictions, edges, inside=lambda n, lo, hi: lo <= n <= hi),
     r"bucket '\d+-\d+': expected 0\.\d+, got 0\.\d+"),
    (lambda examples, predictions, edges: dict(sorted(buckets(examples, predictions, edges).items())),
     r"on test 2 of 5.*in this order, got \['10-29', '30-69', '8-9'\]"),
    (lambda examples, predictions, edges: buckets(
        examples, predictions, edges, value=lambda right: torch.tensor(right).float().mean()),
     r"on test 1 of 5.*bucket '0-19': expected a number \(0\.\d+\), got a tensor of shape \(\)"),
    (lambda examples, predictions, edges: buckets(
        examples, predictions, edges, value=lambda right: 100 * sum(right) / len(right)),
     r"bucket '0-19': expected 0\.\d+, got \d+\.\d+"),
    (accuracy_drains_predictions, r"changed its `predictions` list in place"),
    (lambda examples, predictions, edges: list(buckets(examples, predictions, edges).items()),
     r"expected a dict, got a list"),
])
def test_1_4_names_what_is_wrong(student, match):
    fails(check_accuracy_by_length, student, match)


def test_1_4_old_wrong_answer_still_fails():
    with pytest.raises(CheckFailed, match="Exercise 1.4"):
        check_accuracy_by_length(lambda examples, predictions, edges: accuracy_by_length(
            examples, predictions, [0, 30, 60, 90]))


# Exercise 1.5: one slip, two scores

RIGHT_PREDICTION = {"substituted": (31 / 32, [0, 1, 1]), "inserted": (9 / 32, [0, 1, 1]),
                    "no separator": (10 / 32, [0, 0, 0])}


def measure():
    return {name: (char_accuracy([output], [SLIP_TARGET]),
                   date_exact_match([output], [SLIP_TARGET]))
            for name, output in SLIPS.items()}


def test_1_5_passes_a_rough_prediction_and_a_measurement_in_other_types(capsys):
    check_slips_recorded(RIGHT_PREDICTION)
    measured = {name: (torch.tensor(c, dtype=torch.float64), tuple(np.array(d)))
                for name, (c, d) in measure().items()}
    rough = {"substituted": (0.95, [0.0, 1.0, 1.0]), "inserted": (0.3, (0, 1, 1)),
             "no separator": [0.3, [False + 0, 0, 0]]}  # within 5 points
    check_slips(rough, measured)
    assert "✅ Exercise 1.5 (one slip, two scores)" in capsys.readouterr().out


@pytest.mark.parametrize("predicted, measured, match", [
    # an insertion taken for a substitution: one character lost
    (dict(RIGHT_PREDICTION, inserted=(31 / 32, [0, 1, 1])), None,
     r"predicted character score of 'inserted' is 0.969, off by \+0.656"),
    # a dropped `;` taken for a harmless slip: the later dates "still right"
    (dict(RIGHT_PREDICTION, **{"no separator": (10 / 32, [0, 1, 1])}), None,
     r"predicted date scores of 'no separator' are wrong for the second and third date"),
    # measured with the output and the target swapped: another denominator
    (RIGHT_PREDICTION, {name: (char_accuracy([SLIP_TARGET], [output]),
                               date_exact_match([output], [SLIP_TARGET]))
                        for name, output in SLIPS.items()},
     r"measured character score of 'inserted' is 0.303, off by -0.009"),
    # counted how many dates are right instead of which
    (RIGHT_PREDICTION, {name: (c, [sum(d), 0, 0]) for name, (c, d) in measure().items()},
     r"measured date scores of 'substituted' are wrong for the first, second and third date"),
])
def test_1_5_names_what_is_off(predicted, measured, match):
    with pytest.raises(CheckFailed, match=match):
        check_slips(predicted, measured if measured is not None else measure())


def test_1_5_reads_date_scores_as_bools_arrays_and_tuples(capsys):
    check_slips(RIGHT_PREDICTION, measure())
    as_bools = {"substituted": (0.97, [False, True, True]),
                "inserted": (0.3, np.array([0, 1, 1])),
                "no separator": (0.3, (False, False, False))}
    check_slips_recorded(as_bools)
    check_slips(as_bools, {name: (c, torch.tensor(d)) for name, (c, d) in measure().items()})
    assert "✅ Exercise 1.5 (one slip, two scores)" in capsys.readouterr().out


@pytest.mark.parametrize("predicted, match", [
    # percentages where fractions are asked for
    (dict(RIGHT_PREDICTION, substituted=(97, [0, 1, 1])),
     r"character score in prediction\['substituted'\] is 97, above 1: write it as a "
     r"fraction between 0 and 1"),
    (dict(RIGHT_PREDICTION, inserted=(np.float64(28.1), [0, 1, 1])),
     r"prediction\['inserted'\] is 28.1, above 1"),
    # date scores as a string or with one score missing
    (dict(RIGHT_PREDICTION, inserted=(0.3, "011")), r"list of three numbers"),
    (dict(RIGHT_PREDICTION, inserted=(0.3, np.array([1, 1]))), r"list of three numbers"),
])
def test_1_5_asks_for_fractions_and_three_date_scores(predicted, match):
    fails(check_slips_recorded, predicted, match)


@pytest.mark.parametrize("predicted, match", [
    (..., r"replace the \.\.\. in your prediction"),
    ({"substituted": (0.97, [0, 1, 1])}, r"must be a dict with the keys"),
    (dict(RIGHT_PREDICTION, inserted=(0.3, [0, 1])), r"list of three numbers"),
    (dict(RIGHT_PREDICTION, inserted=("30%", [0, 1, 1])), r"must be a number"),
])
def test_1_5_a_prediction_must_be_written_down_in_form(predicted, match):
    with pytest.raises(CheckFailed, match=match):
        check_slips_recorded(predicted)


# Exercise 1.6: bits to tell dates apart


@pytest.mark.parametrize("student", [
    lambda n, d: math.ceil(n * math.log2(d)),
    lambda n, d: (d ** n - 1).bit_length(),
    lambda n, d: next(b for b in range(200) if 2 ** b >= d ** n),
    lambda n, d: int(np.int64(math.ceil(math.log2(d ** n)))),
])
def test_1_6_accepts_right_answers_written_differently(student, capsys):
    check_bits_to_tell_apart(student)
    assert "✅ Exercise 1.6" in capsys.readouterr().out


@pytest.mark.parametrize("student, match", [
    # rounds up once per date: 3 * 16 = 48
    (lambda n, d: n * math.ceil(math.log2(d)),
     r"bits_to_tell_apart\(3, 36525\) gives 48, but 36,525 \*\* 3 values need 46 bits \(\+2\)"),
    # rounds to the nearest
    (lambda n, d: round(n * math.log2(d)), r"bits_to_tell_apart\(3, 36525\) gives 45"),
    # one bit per power of two too many: floor + 1
    (lambda n, d: math.floor(n * math.log2(d)) + 1,
     r"bits_to_tell_apart\(1, 1\) gives 1, but 1 \*\* 1 values need 0 bits"),
    # a float
    (lambda n, d: float(math.ceil(n * math.log2(d))), r"returned 46.0; return a whole number"),
    # forgets that the order of the dates matters (combinations, not sequences)
    (lambda n, d: (math.comb(d + n - 1, n) - 1).bit_length(),
     r"bits_to_tell_apart\(3, 36525\) gives 43"),
])
def test_1_6_names_what_is_wrong(student, match):
    fails(check_bits_to_tell_apart, student, match)
