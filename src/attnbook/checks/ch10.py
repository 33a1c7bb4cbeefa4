"""Checks for the exercises of chapter 10, "The cost of attention"."""

from __future__ import annotations

import contextlib
import io
import math
import numbers

import torch

from attnbook.attention import scaled_dot_product_attention
from attnbook.bench.memory import peak_memory_bytes
from attnbook.checks.core import CheckFailed, call_student, compare_cases, verdict
from attnbook.cost import attention_flops, plain_attention_peak_bytes

# Exercise 10.1: predict, then measure

PEAK_PROBLEM = {"q": (2, 3, 1000, 32), "k": (2, 3, 1500, 32), "mask": (1000, 1500),
                "dtype": torch.float32}


def _peak_truth() -> int:
    """With a boolean mask, four (Lq x Lk) float32 matrices per head are alive at the peak
    (the scores, their masked copy made by masked_fill, the exponentials and either
    exp(x - max) or the weights), plus a maximum and a sum per query row."""
    batch, heads, n_queries, _ = PEAK_PROBLEM["q"]
    n_keys = PEAK_PROBLEM["k"][2]
    return batch * heads * (4 * 4 * n_queries * n_keys + 2 * 4 * n_queries)


def _number(value, name: str, what: str) -> float:
    if value is ...:
        raise CheckFailed(f"{name}: replace the ... with {what}")
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise CheckFailed(f"{name}: {what} must be a positive number of bytes, got {value!r}")
    return float(value)


def check_prediction_recorded(prediction) -> None:
    """Exercise 10.1, first step: a prediction is written down (a positive number of bytes).
    Says nothing about whether it is right: that comes after the measurement."""
    name = "Exercise 10.1 (prediction)"
    value = _number(prediction, name, "your prediction")
    print(f"✅ {name}: recorded {value:,.0f} bytes ({value / 2**20:.1f} MiB). Now measure.")


_MASKED_COPY = ("with a mask, masked_softmax first makes a masked copy of the scores "
                "(masked_fill is not in place) while scaled_dot_product_attention still holds "
                "the scores: four matrices are alive at the peak, not three")
_PREDICTION_HINTS = [  # (ratio to the truth, hint), the first within 3% of the ratio
    (3 / 4, _MASKED_COPY),
    (13 / 16, _MASKED_COPY + " (and ~mask, one byte per score, is freed before the peak)"),
    (17 / 16, "the inverted mask ~mask is freed as soon as masked_fill returns, before the "
              "peak: do not count it"),
    (5 / 4, "five matrices is one too many: the temporary x - row_max is freed once exp "
            "exists, before the weights are made"),
    (2 / 3, "the matrices are Lq x Lk = 1000 x 1500, not 1000 x 1000"),
    (1 / 4, "four matrices of scores are alive at once, not one"),
    (1 / 6, "count every batch element and every head (B * H = 6)"),
    (1 / 2, "the scores are float32, 4 bytes each"),
    (2.0, "float32 takes 4 bytes per number, not 8"),
]


def check_peak_prediction(prediction, measured) -> None:
    """Exercise 10.1: the prediction and the measurement of the peak extra memory of
    plain attention on q (2, 3, 1000, 32), k and v (2, 3, 1500, 32), float32, with a
    boolean mask of shape (1000, 1500).

    The truth (four float32 matrices of 1000 x 1500 per head, and two numbers per query
    row) matches the CPU measurement to the byte. The measurement must be within 1% of
    it, the prediction within 5%.
    """
    name = "Exercise 10.1 (peak memory)"
    predicted = _number(prediction, name, "your prediction")
    got = _number(measured, name, "your measurement")
    truth = _peak_truth()
    problems = []
    if abs(got - truth) > 0.01 * truth:
        if got > truth:
            why = ("more than the call itself allocates: were q, k, v or the mask created "
                   "inside the measured function? They must exist before it")
        elif abs(got / truth - 0.75) < 0.01:
            why = ("what the call allocates without a mask: was the mask passed, "
                   "peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v, mask))?")
        else:
            why = ("less than the call allocates: was the call itself measured, "
                   "peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v, mask))?")
        problems.append(f"the measurement ({got:,.0f} bytes) is {got / truth:.3g} times the "
                        f"peak, {why}")
    if abs(predicted - truth) > 0.05 * truth:
        ratio = predicted / truth
        hint = next((text for target, text in _PREDICTION_HINTS
                     if abs(ratio - target) <= 0.03 * target), "")
        detail = f"; {hint}" if hint else ""
        problems.append(f"the prediction ({predicted:,.0f} bytes) is {ratio:.3g} times the "
                        f"peak{detail}")
    if problems:
        raise CheckFailed(f"{name}: " + "; and ".join(problems) + ".")
    print(f"✅ {name}: prediction within {abs(predicted / truth - 1):.1%} and measurement "
          f"within {abs(got / truth - 1):.1%} of the peak, {truth:,} bytes.")


# Exercise 10.2: derive the intensity of a fused kernel


def reference_fused_intensity(n_queries: int, n_keys: int, bytes_per_element: int) -> float:
    """FLOPs of attention's two products over the bytes of reading Q, K, V once and
    writing O once (the scores stay on chip), for one head of width d (d cancels)."""
    d = 64
    flops = attention_flops(n_queries, d, n_keys=n_keys)
    moved = bytes_per_element * d * (2 * n_queries + 2 * n_keys)
    return flops / moved


def check_fused_intensity(student_fn) -> None:
    """Exercise 10.2: arithmetic intensity (FLOP/byte) of one head of attention whose
    scores never leave the chip, as a Python float (a numpy float64 is one; a tensor, a
    numpy float32 or an int is not), within a relative 1e-6.

    Cases: one query against long caches (a decoding step), equal lengths (a prompt),
    more queries than keys, and 1, 2 and 4 bytes per number, so that every argument
    matters.
    """
    cases = []
    for n_queries, n_keys, size in [(1, 4096, 2), (1, 100_000, 2), (2048, 2048, 2),
                                    (512, 8192, 4), (4096, 1024, 1), (1, 1, 4), (3, 5, 2)]:
        cases.append((f"with n_queries={n_queries}, n_keys={n_keys}, bytes_per_element={size}",
                      (n_queries, n_keys, size)))
    name = "Exercise 10.2 (fused_intensity)"
    for description, inputs in cases:
        got = call_student(student_fn, inputs, name, description)
        if isinstance(got, bool) or not isinstance(got, float):
            raise CheckFailed(
                f"{name}: {description}: return a Python float (float(...) or .item() "
                f"converts), got {type(got).__module__}.{type(got).__name__} {got!r}")
        problem = verdict(got, float(reference_fused_intensity(*inputs)), atol=0, rtol=1e-6)
        if problem:
            raise CheckFailed(f"{name}: {description}: {problem}")
    print(f"✅ {name}: correct in all {len(cases)} cases.")


# Exercise 10.3: debug chunked attention


def _qkv(shape_q: tuple[int, ...], n_keys: int, seed: int, dtype=torch.float64,
         dv: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=generator, dtype=dtype)
    k = torch.randn(*shape_q[:-2], n_keys, shape_q[-1], generator=generator, dtype=dtype)
    v = torch.randn(*shape_q[:-2], n_keys, dv or shape_q[-1], generator=generator, dtype=dtype)
    return q, k, v


def reference_chunked_attention(q, k, v, chunk):
    return scaled_dot_product_attention(q, k, v)[0]


# 4-D, so that chunking an axis other than the queries' saves nothing; the limit is twice
# chunk / N, so that keeping every chunk's weights, even in half precision, fails
MEMORY_CASE = {"shape": (1, 2, 2048, 32), "chunk": 128, "limit": 0.125}


def check_chunked_attention(student_fn) -> None:
    """Exercise 10.3: the output of softmax(q k^T / sqrt(d)) v, computed `chunk` queries
    at a time, and a peak memory at most an eighth of plain attention's (twice
    chunk / N).

    Values (float64, within 1e-8 + 1e-6 * |expected|): 3-D and 4-D inputs, lengths
    that are and are not multiples of `chunk`, a chunk longer than the sequence, a chunk
    of 1, fewer queries than keys, and values wider than the keys (dv != d). Memory: q,
    k, v of shape (1, 2, 2048, 32) in float32 with chunks of 128, measured with
    `peak_memory_bytes`.
    """
    name = "Exercise 10.3 (chunked_attention)"
    cases = [
        ("with q (2, 8, 4), k and v (2, 8, 4), chunk=4 (a multiple)", (*_qkv((2, 8, 4), 8, 1), 4)),
        ("with q (2, 10, 4), k and v (2, 10, 4), chunk=4 (not a multiple)",
         (*_qkv((2, 10, 4), 10, 2), 4)),
        ("with q (1, 5, 3), k and v (1, 5, 3), chunk=8 (longer than the sequence)",
         (*_qkv((1, 5, 3), 5, 3), 8)),
        ("with q (2, 3, 7, 5), k and v (2, 3, 7, 5), chunk=3 (4-D: batch and heads)",
         (*_qkv((2, 3, 7, 5), 7, 4), 3)),
        ("with q (1, 6, 4), k and v (1, 11, 4), chunk=1 (fewer queries than keys)",
         (*_qkv((1, 6, 4), 11, 5), 1)),
        ("with q (2, 3, 7, 5), k (2, 3, 9, 5) and v (2, 3, 9, 6), chunk=2 (dv != d: the "
         "output is (..., Lq, dv))", (*_qkv((2, 3, 7, 5), 9, 7, dv=6), 2)),
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # one line in the end, not two
        compare_cases(student_fn, reference_chunked_attention, cases, name, atol=1e-8,
                      rtol=1e-6, arg_names=("q", "k", "v", "chunk"))
    shape, chunk = MEMORY_CASE["shape"], MEMORY_CASE["chunk"]
    n = shape[-2]
    q, k, v = _qkv(shape, n, 6, dtype=torch.float32)
    case = f"with q, k and v of shape {shape} in float32 and chunk={chunk}"
    with torch.no_grad():
        peak = peak_memory_bytes(lambda: call_student(student_fn, (q, k, v, chunk), name, case))
    plain = plain_attention_peak_bytes(n, batch_heads=math.prod(shape[:-2]))
    if peak > MEMORY_CASE["limit"] * plain:
        hint = ("nothing was saved: are the chunks taken along the queries' axis (-2)? On "
                "4-D input axis 1 is the heads" if peak > 0.8 * plain else
                "something still holds about N x N numbers at once")
        raise CheckFailed(
            f"{name}: the values are right, but {case} the peak memory is "
            f"{peak / 2**20:.1f} MiB, {peak / plain:.0%} of plain attention's "
            f"{plain / 2**20:.1f} MiB (at most {MEMORY_CASE['limit']:.1%} allowed): {hint}")
    print(f"✅ {name}: right values in all {len(cases)} cases, and a peak of "
          f"{peak / plain:.0%} of plain attention's memory.")


__all__ = ["check_prediction_recorded", "check_peak_prediction", "check_fused_intensity",
           "check_chunked_attention"]
