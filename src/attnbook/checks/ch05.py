"""Checks for the exercises of chapter 5, "Self-attention"."""

from __future__ import annotations

import torch

from attnbook.attention import causal_mask, padding_mask, scaled_dot_product_attention
from attnbook.bench import max_path_length
from attnbook.checks.core import (
    CheckFailed,
    as_number,
    call_student,
    compare_cases,
    compare_prediction,
    compare_with_reference,
    in_turn,
    random_size,
    recorded,
)


def _weights(generator: torch.Generator, model_dim: int, head_dim: int, value_dim: int):
    """w_q, w_k (D, d) and w_v (D, dv), with d != dv and d != D, so that a scale by
    the wrong width, or one weight used in place of another, changes the result."""
    shapes = [(model_dim, head_dim), (model_dim, head_dim), (model_dim, value_dim)]
    return tuple(torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes)


def _widths(generator: torch.Generator):
    model_dim = random_size(generator, 2, 8)
    head_dim = random_size(generator, 1, 6)
    while head_dim == model_dim:
        head_dim = random_size(generator, 1, 6)
    value_dim = random_size(generator, 1, 5)
    while value_dim == head_dim:
        value_dim = random_size(generator, 1, 5)
    return model_dim, head_dim, value_dim


def _cross_case(batch: int, n_queries: int, n_keys: int, lengths: list[int], seed: int):
    """A named case of exercise 5.1: x (B, Lq, D), memory (B, Lk, D) padded after
    lengths[b] positions, and w_q, w_k (D, d), w_v (D, dv) with D != d != dv."""
    generator = torch.Generator().manual_seed(seed)
    model_dim, head_dim, value_dim = _widths(generator)
    x = torch.randn(batch, n_queries, model_dim, generator=generator, dtype=torch.float64)
    memory = torch.randn(batch, n_keys, model_dim, generator=generator, dtype=torch.float64)
    weights = _weights(generator, model_dim, head_dim, value_dim)
    description = (f"with x {tuple(x.shape)}, memory {tuple(memory.shape)}, memory_lengths "
                   f"{lengths} and widths D = {model_dim}, d = {head_dim}, dv = {value_dim}")
    return description, (x, memory, torch.tensor(lengths), *weights)


def _cross_cases() -> list[tuple[str, tuple]]:
    """No padding first, then padded memories with lengths down to 1, a memory of one
    position, one query, a batch of one, and as many queries as the batch size (so that a
    (B, Lk) mask broadcast against (B, Lq, Lk) fits by chance and gives wrong values)."""
    fixed = [(2, 3, 4, [4, 4]), (3, 4, 6, [6, 2, 4]), (2, 5, 3, [1, 3]), (1, 2, 7, [3]),
             (3, 3, 5, [5, 1, 2]), (2, 1, 4, [2, 4]), (2, 3, 1, [1, 1])]
    cases = [_cross_case(*sizes, seed=i) for i, sizes in enumerate(fixed)]
    generator = torch.Generator().manual_seed(51)
    for i in range(6):
        batch, n_keys = random_size(generator, 1, 3), random_size(generator, 1, 7)
        lengths = [random_size(generator, 1, n_keys) for _ in range(batch)]
        cases.append(_cross_case(batch, random_size(generator, 1, 6), n_keys, lengths,
                                 seed=100 + i))
    return cases


def reference_cross_attention(x, memory, memory_lengths, w_q, w_k, w_v):
    """Cross-attention of x over the first memory_lengths[b] positions of memory b."""
    keys_are_real = padding_mask(memory_lengths, memory.shape[-2])[:, None, :]  # (B, 1, Lk)
    return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v, keys_are_real)


def check_cross_attention(student_fn) -> None:
    """Exercise 5.1: queries from x, keys and values from a padded memory, whose padded
    positions get no weight; returns (output, weights).

    float64; memories without padding and padded ones with lengths down to 1, one query
    and several, a memory of one position, widths with D != d != dv, 7 fixed and 6
    random cases; outputs and weights within 1e-8 + 1e-6 * |expected|.
    """
    name = "Exercise 5.1 (cross_attention)"

    def run(*inputs):
        result = student_fn(*inputs)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            got = "one tensor" if torch.is_tensor(result) else type(result).__name__
            raise CheckFailed(f"{name}: return (output, weights), got {got}")
        return tuple(result)

    cases = _cross_cases()
    compare_cases(run, reference_cross_attention, cases, name=name, atol=1e-8,
                  rtol=1e-6, item_names=("output", "weights"), announce=False,
                  arg_names=("x", "memory", "memory_lengths", "w_q", "w_k", "w_v"))
    print(f"✅ {name}: outputs and weights correct in all {len(cases)} cases.")


def _self_problem(length: tuple[int, int]):
    def make(generator: torch.Generator):
        batch, n = random_size(generator, 1, 3), random_size(generator, *length)
        model_dim, head_dim, value_dim = _widths(generator)
        x = torch.randn(batch, n, model_dim, generator=generator, dtype=torch.float64)
        return (x, *_weights(generator, model_dim, head_dim, value_dim))
    return make


def reference_causal_self_attention(x, w_q, w_k, w_v):
    mask = causal_mask(x.shape[-2], device=x.device)
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, mask)


def check_causal_self_attention(student_fn) -> None:
    """Exercise 5.2: the fixed causal self-attention: position i sees positions j <= i only,
    scores scaled by 1/sqrt(d) (the width of a query, not of x).

    float64; lengths 1 to 7 (and batch sizes that differ from the length), D != d !=
    dv; within 1e-8 + 1e-6 * |expected|.
    """
    compare_with_reference(student_fn, reference_causal_self_attention,
                           in_turn(_self_problem((2, 7)), _self_problem((1, 1)), _self_problem((4, 7))),
                           name="Exercise 5.2 (causal_self_attention)", trials=6, atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"), arg_names=("x", "w_q", "w_k", "w_v"))


def _band(n: int, back: int, ahead: int) -> torch.Tensor:
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
    return (offset <= back) & (-offset <= ahead)  # i reads j in [i - back, i + ahead]


WINDOW_LENGTH, WINDOWS = 256, (16, 64)


def check_window_prediction_recorded(predicted_layers_16, predicted_layers_64) -> None:
    """Exercise 5.3, first step: both predictions are whole numbers. Says nothing about
    whether they are right: that comes after the measurement."""
    name = "Exercise 5.3 (prediction)"
    values = recorded(name, {"predicted_layers_16": predicted_layers_16,
                             "predicted_layers_64": predicted_layers_64})
    print(f"✅ {name}: recorded {values['predicted_layers_16']} and "
          f"{values['predicted_layers_64']} layers. Now measure.")


def check_window_prediction(predicted_layers_16, predicted_layers_64, measured_layers_16,
                            measured_layers_64) -> None:
    """Exercise 5.3: the maximum path length of causal sliding-window attention over 256
    positions, where query i reads keys i - W + 1 to i, for W = 16 and W = 64. Whole
    numbers (ints, NumPy integers or integer 0-d tensors), compared exactly."""
    name = "Exercise 5.3 (a sliding window's reach)"
    values = recorded(name, {"predicted_layers_16": predicted_layers_16,
                             "predicted_layers_64": predicted_layers_64,
                             "measured_layers_16": measured_layers_16,
                             "measured_layers_64": measured_layers_64})
    truth = {w: max_path_length(_band(WINDOW_LENGTH, w - 1, 0)) for w in WINDOWS}
    compare_prediction(name, {
        f"path length for W = {w}": (values[f"predicted_layers_{w}"],
                                     values[f"measured_layers_{w}"], truth[w])
        for w in WINDOWS})
    print(f"✅ {name}: prediction and measurement both right ({truth[16]} layers for W = 16, "
          f"{truth[64]} for W = 64).")


def _band_cases() -> list[tuple[int, int, int]]:
    fixed = [(1, 0, 0), (1, 2, 3), (2, 1, 0), (7, 0, 0), (10, 3, 0), (10, 0, 3), (10, 1, 1),
             (13, 4, 2), (13, 2, 4), (9, 8, 0), (9, 20, 1), (12, 3, 3), (16, 5, 0), (17, 4, 4)]
    generator = torch.Generator().manual_seed(54)
    drawn = [(random_size(generator, 2, 40), random_size(generator, 0, 6),
              random_size(generator, 0, 6)) for _ in range(30)]
    return fixed + drawn


def check_band_path_length(student_fn) -> None:
    """Exercise 5.4: the maximum path length of a band (position i reads j for
    i - back <= j <= i + ahead) over n positions, as a formula.

    Fixed cases first (one position, no connections, one-sided bands either way, bands
    wider than the sequence, lengths that are and are not multiples of the width),
    then 30 random (n, back, ahead) with n up to 40; a Python int (or NumPy integer),
    compared exactly with `max_path_length` of the band's connection matrix.
    """
    name = "Exercise 5.4 (band_path_length)"
    cases = _band_cases()
    for n, back, ahead in cases:
        case = f"band_path_length({n}, {back}, {ahead})"
        got = call_student(student_fn, (n, back, ahead), name, case=case)
        layers = as_number(got, whole=True)
        if layers is None or torch.is_tensor(got):
            raise CheckFailed(f"{name}: {case} returned {got!r}; return a whole number (int)")
        truth = max_path_length(_band(n, back, ahead))
        if layers != truth:
            raise CheckFailed(f"{name}: {case} gives {layers}, but the band needs {truth} "
                              f"layers ({layers - truth:+d})")
    print(f"✅ {name}: right in all {len(cases)} cases.")


__all__ = ["check_cross_attention", "check_causal_self_attention",
           "check_window_prediction_recorded", "check_window_prediction",
           "check_band_path_length"]
