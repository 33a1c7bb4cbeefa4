"""Mutation tests of the chapter 10 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnbook.attention import scaled_dot_product_attention
from attnbook.bench.memory import peak_memory_bytes
from attnbook.checks.ch10 import (
    check_chunked_attention,
    check_fused_intensity,
    check_peak_prediction,
    check_prediction_recorded,
)
from attnbook.checks.core import CheckFailed

# --- 10.1 predict, then measure ------------------------------------------------------------

# four float32 matrices (scores, masked copy, exponentials, weights) + row max and sum
TRUTH = 2 * 3 * (4 * 4 * 1000 * 1500 + 2 * 4 * 1000)
MATRIX = 2 * 3 * 1000 * 1500 * 4  # one float32 matrix of scores for every head


def inputs():
    q = torch.randn(2, 3, 1000, 32)
    k, v = torch.randn(2, 3, 1500, 32), torch.randn(2, 3, 1500, 32)
    mask = torch.ones(1000, 1500, dtype=torch.bool).tril(500)
    return q, k, v, mask


def test_10_1_a_prediction_is_recorded_whatever_it_is(capsys):
    check_prediction_recorded(1e8)
    assert "recorded 100,000,000 bytes" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="replace the ... with your prediction"):
        check_prediction_recorded(...)
    with pytest.raises(CheckFailed, match="must be a positive number of bytes"):
        check_prediction_recorded("100 MB")


def test_10_1_passes_a_measured_peak_and_a_close_prediction(capsys):
    q, k, v, mask = inputs()
    measured = peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v, mask))
    assert measured == TRUTH
    check_peak_prediction(4 * MATRIX, measured)  # the matrices only: 0.03% off
    assert "✅ Exercise 10.1" in capsys.readouterr().out
    check_peak_prediction(1.4e8, torch.tensor(float(measured)))  # 3% off, a 0-d tensor
    assert "✅ Exercise 10.1" in capsys.readouterr().out
    check_peak_prediction(4 * MATRIX + 1000 * 1500, measured)  # + one ~mask: 1% off
    assert "✅ Exercise 10.1" in capsys.readouterr().out


@pytest.mark.parametrize("prediction, verdict", [
    (3 * MATRIX, "0.75 times the peak; with a mask, masked_softmax first makes a masked copy"),
    (3 * MATRIX + 6 * 1000 * 1500, "0.812 times the peak; .* ~mask, one byte per score, is freed"),
    (4 * MATRIX + 6 * 1000 * 1500, "1.06 times the peak; the inverted mask ~mask is freed"),
    (5 * MATRIX, "1.25 times the peak; five matrices is one too many"),
    (4 * MATRIX * 1000 // 1500, "0.666 times the peak; the matrices are Lq x Lk"),
    (MATRIX, "0.25 times the peak; four matrices of scores"),
    (4 * MATRIX // 6, "count every batch element and every head"),
    (2 * MATRIX, "0.5 times the peak; the scores are float32"),
    (8 * MATRIX, "float32 takes 4 bytes per number, not 8"),
    (..., "replace the ... with your prediction"),
])
def test_10_1_rejects_wrong_predictions(prediction, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_peak_prediction(prediction, TRUTH)


def test_10_1_rejects_wrong_measurements():
    def with_inputs_inside():
        q, k, v, mask = inputs()  # created inside the measured call: they count
        return scaled_dot_product_attention(q, k, v, mask)

    measured = peak_memory_bytes(with_inputs_inside)
    with pytest.raises(CheckFailed, match="were q, k, v or the mask created inside"):
        check_peak_prediction(TRUTH, measured)
    q, k, v, mask = inputs()
    measured = peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v))
    with pytest.raises(CheckFailed, match="without a mask: was the mask passed"):
        check_peak_prediction(TRUTH, measured)
    measured = peak_memory_bytes(
        lambda: scaled_dot_product_attention(q[:, :1], k[:, :1], v[:, :1], mask))
    with pytest.raises(CheckFailed, match="less than the call allocates"):
        check_peak_prediction(TRUTH, measured)
    with pytest.raises(CheckFailed, match="the measurement .* and the prediction"):
        check_peak_prediction(3 * MATRIX, measured)


# --- 10.2 derive the intensity of a fused kernel ----------------------------------------------


@pytest.mark.parametrize("student", [
    lambda n_queries, n_keys, bytes_per_element: (
        2 * n_queries * n_keys / (bytes_per_element * (n_queries + n_keys))),
    lambda n_queries, n_keys, bytes_per_element: (
        4.0 * n_queries * n_keys * 128 / (bytes_per_element * 128 * 2 * (n_queries + n_keys))),
    lambda n_queries, n_keys, bytes_per_element: np.float64(
        1 / (bytes_per_element * (1 / (2 * n_keys) + 1 / (2 * n_queries)))),
])
def test_10_2_passes_correct_answers_written_differently(student, capsys):
    """Also a numpy float64, which is a Python float."""
    check_fused_intensity(student)
    assert "✅ Exercise 10.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # the output's write forgotten
    (lambda n_queries, n_keys, s: 4 * n_queries * n_keys / (s * (n_queries + 2 * n_keys)),
     "n_queries=1, n_keys=4096, bytes_per_element=2: expected"),
    # multiply-adds, not FLOPs
    (lambda n_queries, n_keys, s: n_queries * n_keys / (s * (n_queries + n_keys)), "expected"),
    # bytes_per_element ignored (counts numbers, not bytes)
    (lambda n_queries, n_keys, s: 2 * n_queries * n_keys / (n_queries + n_keys),
     "bytes_per_element=2: expected"),
    # the scores written out too: plain attention's traffic
    (lambda n_queries, n_keys, s: 4 * n_queries * n_keys * 64 / (
        s * (2 * 64 * (n_queries + n_keys) + n_queries * n_keys)), "expected"),
    # integer division
    (lambda n_queries, n_keys, s: 2 * n_queries * n_keys // (s * (n_queries + n_keys)),
     "return a Python float .*got builtins.int"),
    # a float32 tensor, not a Python float
    (lambda n_queries, n_keys, s: torch.tensor(2.0 * n_queries * n_keys) / (
        s * (n_queries + n_keys)), "return a Python float .*got torch.Tensor"),
    # a numpy float32
    (lambda n_queries, n_keys, s: np.float32(2 * n_queries * n_keys / (
        s * (n_queries + n_keys))), "return a Python float .*got numpy.float32"),
])
def test_10_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_fused_intensity(student)


# --- 10.3 debug chunked attention -------------------------------------------------------------


def as_given(q, k, v, chunk):
    outputs, weights = [], []
    for start in range(0, q.shape[-2] - chunk, chunk):
        out, w = scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)
        outputs.append(out)
        weights.append(w)
    return torch.cat(outputs, dim=-2)


def keeps_weights(q, k, v, chunk):
    outputs, weights = [], []
    for start in range(0, q.shape[-2], chunk):
        out, w = scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)
        outputs.append(out)
        weights.append(w)
    return torch.cat(outputs, dim=-2)


def drops_the_tail(q, k, v, chunk):
    outputs = []
    for start in range(0, q.shape[-2] - chunk + 1, chunk):
        outputs.append(scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)[0])
    return torch.cat(outputs, dim=-2)


def fixed(q, k, v, chunk):
    outputs = []
    for start in range(0, q.shape[-2], chunk):
        outputs.append(scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)[0])
    return torch.cat(outputs, dim=-2)


def with_split_and_softmax(q, k, v, chunk):
    """Correct, written differently: torch.split and torch.softmax."""
    outputs = []
    for block in torch.split(q, chunk, dim=-2):
        weights = torch.softmax(block @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        outputs.append(weights @ v)
    return torch.cat(outputs, dim=-2)


def into_preallocated(q, k, v, chunk):
    """Correct, written differently: each chunk written into a preallocated output."""
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, q.shape[-2], chunk):
        out[..., start:start + chunk, :] = scaled_dot_product_attention(
            q[..., start:start + chunk, :], k, v)[0]
    return out


def wrong_axis(q, k, v, chunk):
    """Chunks q[:, ...]: the queries in 3-D, but the heads in 4-D (no memory saved)."""
    outputs = []
    for start in range(0, q.shape[1], chunk):
        outputs.append(scaled_dot_product_attention(q[:, start:start + chunk], k, v)[0])
    return torch.cat(outputs, dim=1)


def output_like_q(q, k, v, chunk):
    """Preallocates the output shaped like q: wrong when v is wider than q."""
    out = torch.empty_like(q)
    for start in range(0, q.shape[-2], chunk):
        out[..., start:start + chunk, :] = scaled_dot_product_attention(
            q[..., start:start + chunk, :], k, v)[0]
    return out


def keeps_weights_in_half(q, k, v, chunk):
    """Keeps every chunk's weights, "to look at later", in half precision."""
    outputs, weights = [], []
    for start in range(0, q.shape[-2], chunk):
        out, w = scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)
        outputs.append(out)
        weights.append(w.half())
    return torch.cat(outputs, dim=-2)


def keeps_every_other_chunk(q, k, v, chunk):
    outputs, weights = [], []
    for i, start in enumerate(range(0, q.shape[-2], chunk)):
        out, w = scaled_dot_product_attention(q[..., start:start + chunk, :], k, v)
        outputs.append(out)
        if i % 2 == 0:
            weights.append(w)
    return torch.cat(outputs, dim=-2)


@pytest.mark.parametrize("student", [fixed, with_split_and_softmax, into_preallocated])
def test_10_3_passes_correct_answers(student, capsys):
    check_chunked_attention(student)
    assert "✅ Exercise 10.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (as_given, "chunk=4 \\(a multiple\\): wrong shape: expected \\(2, 8, 4\\), got \\(2, 4, 4\\)"),
    (drops_the_tail, "chunk=4 \\(not a multiple\\): wrong shape"),
    (keeps_weights, "the values are right, but .* the peak memory is .* still holds about N x N"),
    (lambda q, k, v, chunk: scaled_dot_product_attention(q, k, v)[0],
     "100% of plain attention's .* queries' axis \\(-2\\)\\? On 4-D input axis 1 is the heads"),
    (lambda q, k, v, chunk: fixed(q, k, v.transpose(-1, -2).transpose(-1, -2) * 1.01, chunk),
     "values are wrong"),
    # on 4-D input it chunks the heads: caught where 2 of 3 heads meet all keys and values
    (wrong_axis, "chunk=2 \\(dv != d.*raised ValueError: q, k and v must have the same leading"),
    (output_like_q, "dv != d"),
    (keeps_weights_in_half, "the values are right, but .* 24% of plain .*at most 12.5% allowed"),
    (keeps_every_other_chunk, "the values are right, but .* still holds about N x N"),
])
def test_10_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_chunked_attention(student)
