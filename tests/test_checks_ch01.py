"""A mutation test of chapter 1's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnbook.checks import CheckFailed
from attnbook.checks.ch01 import (
    SLIP_TARGET,
    SLIPS,
    check_accuracy_by_length,
    check_bits_to_tell_apart,
    check_greedy_decode,
    check_last_real_state,
    check_sequence_loss,
    check_slips,
    check_slips_recorded,
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


# Exercise 1.2: sequence_loss


def loss_by_hand(logits, targets, pad_id):
    log_probs = logits.log_softmax(dim=-1).gather(2, targets[..., None])[..., 0]  # (B, T)
    real = (targets != pad_id).to(logits.dtype)
    return -(log_probs * real).sum() / real.sum()


def loss_summed_then_divided(logits, targets, pad_id):
    flat = targets.reshape(-1)
    keep = flat != pad_id
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[keep], flat[keep], reduction="sum")
    return total / keep.sum()


def loss_with_zero_class_weight(logits, targets, pad_id):
    weight = torch.ones(logits.shape[-1], dtype=logits.dtype)
    weight[pad_id] = 0  # a weighted mean with weight 0 on padding is the mean over real ones
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), weight=weight)


@pytest.mark.parametrize("student", [loss_by_hand, loss_summed_then_divided,
                                     loss_with_zero_class_weight])
def test_1_2_accepts_right_answers_written_differently(student, capsys):
    check_sequence_loss(student)
    assert "the gradient with respect to the logits is right too" in capsys.readouterr().out


def loss_assumes_pad_zero(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)


def loss_counts_padding(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def loss_mean_of_row_means(logits, targets, pad_id):
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    real = (targets != pad_id).float()
    return ((losses * real).sum(1) / real.sum(1)).mean()


def loss_as_python_float(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id).item()


def loss_marks_padding_in_place(logits, targets, pad_id):
    targets[targets == pad_id] = -100
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def loss_detached(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id).detach()


def loss_clamps_probabilities_in_place(logits, targets, pad_id):
    probs = torch.softmax(logits, dim=-1)
    probs.clamp_(min=1e-12)  # softmax's backward needs its output: backward raises
    picked = probs.log().gather(2, targets[..., None])[..., 0]
    return -picked[targets != pad_id].mean()


def loss_in_numpy(logits, targets, pad_id):
    x = logits.numpy()  # fails once logits require grad
    log_probs = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(
        -1, keepdims=True)
    picked = np.take_along_axis(log_probs, targets.numpy()[..., None], axis=-1)[..., 0]
    real = targets.numpy() != pad_id
    return torch.tensor(-picked[real].mean(), dtype=logits.dtype)


@pytest.mark.parametrize("student, match", [
    (loss_in_numpy, r"pad_id=3, your function raised RuntimeError: Can't call numpy\(\) on Tensor "
                    r"that requires grad.*\(line \d+: 'x = logits.numpy\(\)  # fails once"),
    (loss_assumes_pad_zero, r"on test 1 of 5.*, 3\): values are wrong|on test 1 of 5.*1 of 1 values"),
    (loss_counts_padding, r"on test 1 of 5.*1 of 1 values are wrong"),
    (loss_mean_of_row_means, r"1 of 1 values are wrong; the first is at index \(\): expected"),
    (loss_as_python_float, r"expected a tensor of shape \(\) and dtype torch.float32, got a float"),
    (loss_marks_padding_in_place, r"changed its `targets` in place"),
    (loss_detached, r"pad_id=3, the result does not depend on the inputs through autograd"),
    (loss_clamps_probabilities_in_place, r"pad_id=3, the backward pass through your function raised "
                                         r"RuntimeError: one of the variables needed"),
])
def test_1_2_names_what_is_wrong(student, match):
    fails(check_sequence_loss, student, match)


def sequence_loss_as_given(logits, targets, pad_id):  # the exercise's buggy function
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    real = (targets.flatten() != pad_id).float()
    return (losses * real).mean()


def loss_fixed_with_boolean_index(logits, targets, pad_id):
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return losses[targets.flatten() != pad_id].mean()


def loss_half_fixed_divides_by_rows(logits, targets, pad_id):
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    real = (targets.flatten() != pad_id).float()
    return (losses * real).sum() / targets.shape[0]  # divides by B, not by the real count


def test_1_2_the_given_bug_fails_and_its_fixes_pass(capsys):
    fails(check_sequence_loss, sequence_loss_as_given,
          r"on test 1 of 5.*1 of 1 values are wrong")
    fails(check_sequence_loss, loss_half_fixed_divides_by_rows, r"1 of 1 values are wrong")
    check_sequence_loss(loss_fixed_with_boolean_index)
    assert "the gradient with respect to the logits is right too" in capsys.readouterr().out


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
