"""A mutation test of chapter 1's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnbook.checks import CheckFailed
from attnbook.checks.ch01 import (
    check_accuracy_by_length,
    check_bits_for_three_dates,
    check_greedy_decode,
    check_last_real_state,
    check_sequence_loss,
)
from attnbook.seq2seq import greedy_decode
from attnbook.train import accuracy_by_length


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


# Exercise 1.5: bits for three dates


@pytest.mark.parametrize("answer", [math.ceil(math.log2(36_525**3)), (36_525**3 - 1).bit_length(),
                                    np.int64(46)])
def test_1_5_accepts_right_answers_written_differently(answer, capsys):
    check_bits_for_three_dates(answer)
    assert "✅ Exercise 1.5" in capsys.readouterr().out


@pytest.mark.parametrize("answer, match", [
    (round(3 * math.log2(36_525)), r"45 is not right\. Each date is one of 36,525 values"),
    (math.ceil(math.log2(36_525)), r"16 is not right"),
    (float(math.ceil(3 * math.log2(36_525))), r"must be a whole number \(an int\), got a float"),
    (torch.tensor(3 * math.log2(36_525)).ceil().long(),
     r"must be a whole number.*got a tensor of shape \(\)"),
    (..., r"replace the \.\.\. with your answer"),
])
def test_1_5_names_what_is_wrong(answer, match):
    with pytest.raises(CheckFailed, match=match):
        check_bits_for_three_dates(answer)
