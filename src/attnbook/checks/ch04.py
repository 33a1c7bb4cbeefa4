"""Checks for the exercises of chapter 4, "Queries, keys and values"."""

from __future__ import annotations

import torch

from attnbook.attention import causal_mask, masked_softmax, padding_mask, scaled_dot_product_attention
from attnbook.checks.core import CheckFailed, compare_with_reference


def _size(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _regression_problem(generator: torch.Generator):
    n_query, n_train = _size(generator, 1, 9), _size(generator, 1, 12)
    x_query = torch.rand(n_query, generator=generator, dtype=torch.float64) * 5
    x_train = torch.rand(n_train, generator=generator, dtype=torch.float64) * 5
    y_train = torch.randn(n_train, generator=generator, dtype=torch.float64)
    bandwidth = float(torch.rand(1, generator=generator)) + 0.2
    return x_query, x_train, y_train, bandwidth


def reference_nadaraya_watson(x_query, x_train, y_train, bandwidth):
    """Nadaraya-Watson with a Gaussian kernel, as scaled dot-product attention:
    -(x - x_i)^2 / 2h^2 = [x, 1] . [x_i / h^2, -x_i^2 / 2h^2] - x^2 / 2h^2, and the
    last term, the same for every key, cancels in the softmax."""
    q = torch.stack([x_query, torch.ones_like(x_query)], dim=-1)  # (Q, 2)
    k = torch.stack([x_train / bandwidth**2, -x_train**2 / (2 * bandwidth**2)], dim=-1)  # (N, 2)
    output, _ = scaled_dot_product_attention(q, k, y_train[:, None], scale=1.0)  # (Q, 1)
    return output[:, 0]


def check_nadaraya_watson(student_fn) -> None:
    """Exercise 4.1: kernel regression with a Gaussian kernel."""
    compare_with_reference(student_fn, reference_nadaraya_watson, _regression_problem,
                           name="Exercise 4.1 (nadaraya_watson)", atol=1e-8, rtol=1e-6)


def _require_boolean(student_fn, args: tuple, name: str) -> None:
    """Refuse a mask that is not boolean (True = may attend); a crash is left to
    compare_with_reference, which reports it."""
    try:
        mask = student_fn(*args)
    except Exception:
        return
    if torch.is_tensor(mask) and mask.dtype != torch.bool:
        raise CheckFailed(f"{name}: a mask must be boolean (True where attention is allowed), "
                          f"got dtype {mask.dtype}; comparisons such as < or <= give one")


def _lengths(generator: torch.Generator):
    batch, max_len = _size(generator, 1, 5), _size(generator, 1, 8)
    lengths = torch.randint(0, max_len + 1, (batch,), generator=generator)
    lengths[0] = max_len  # one sequence with no padding at all
    return lengths, max_len


def check_padding_mask(student_fn) -> None:
    """Exercise 4.2: True at the real positions of each padded sequence."""
    name = "Exercise 4.2 (padding_mask)"
    _require_boolean(student_fn, (torch.tensor([2, 0]), 3), name)
    compare_with_reference(student_fn, padding_mask, _lengths, name=name)


def _square_size(generator: torch.Generator):
    return (_size(generator, 1, 9),)


def check_causal_mask(student_fn) -> None:
    """Exercise 4.3: True where query i may see key j, that is j <= i."""
    name = "Exercise 4.3 (causal_mask)"
    _require_boolean(student_fn, (3,), name)
    compare_with_reference(student_fn, causal_mask, _square_size, name=name)


def _masked_problem(generator: torch.Generator):
    batch, lq, lk, d, dv = (_size(generator, 1, 3), _size(generator, 1, 6), _size(generator, 1, 7),
                            _size(generator, 1, 8), _size(generator, 1, 5))
    q = torch.randn(batch, lq, d, generator=generator, dtype=torch.float64)
    k = torch.randn(batch, lk, d, generator=generator, dtype=torch.float64)
    v = torch.randn(batch, lk, dv, generator=generator, dtype=torch.float64)
    mask = torch.rand(batch, lq, lk, generator=generator) < 0.6
    mask[0, 0] = False  # a query that may see nothing: zeros, not NaN
    return q, k, v, mask


def check_masked_attention(student_fn) -> None:
    """Exercise 4.4: scaled dot-product attention with a boolean mask, returning (output, weights)."""
    compare_with_reference(student_fn, scaled_dot_product_attention, _masked_problem,
                           name="Exercise 4.4 (masked_attention)", atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"))


def _large_logits(generator: torch.Generator):
    rows, cols = _size(generator, 1, 4), _size(generator, 2, 6)
    # A huge offset per row makes a naive exp() overflow; the small spread within a row
    # keeps the answer far from one-hot, so a wrong temperature is caught too.
    offset = 1000 * torch.randn(rows, 1, generator=generator)
    logits = offset + 3 * torch.randn(rows, cols, generator=generator)
    temperature = float(torch.rand(1, generator=generator)) * 2.5 + 0.5
    return logits, temperature


def reference_softmax_with_temperature(logits, temperature):
    return masked_softmax(logits / temperature)


def check_softmax_with_temperature(student_fn) -> None:
    """Exercise 4.5: a softmax with temperature that survives huge logits."""
    compare_with_reference(student_fn, reference_softmax_with_temperature, _large_logits,
                           name="Exercise 4.5 (softmax_with_temperature)")


__all__ = ["check_nadaraya_watson", "check_padding_mask", "check_causal_mask",
           "check_masked_attention", "check_softmax_with_temperature"]
