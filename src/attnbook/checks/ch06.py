"""Checks for the exercises of chapter 6, "Position"."""

from __future__ import annotations

import torch

from attnbook.checks.core import CheckFailed, compare_with_reference
from attnbook.positional import alibi_bias, alibi_slopes, apply_rope, sinusoidal_encoding


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _table_sizes(generator: torch.Generator):
    return _randint(generator, 1, 60), 2 * _randint(generator, 1, 16)


def check_sinusoidal_table(student_fn) -> None:
    """Exercise 6.1: the (n_positions, d_model) sinusoidal table."""
    compare_with_reference(student_fn, sinusoidal_encoding, _table_sizes,
                           name="Exercise 6.1 (sinusoidal_table)")


def _rope_inputs(generator: torch.Generator):
    batch, length, d = _randint(generator, 1, 3), _randint(generator, 1, 9), 2 * _randint(generator, 1, 8)
    x = torch.randn(batch, length, d, generator=generator)
    positions = torch.randint(0, 100, (length,), generator=generator)
    return x, positions


def check_rope(student_fn) -> None:
    """Exercise 6.2: rotate each pair of dimensions by position * theta_i."""
    compare_with_reference(student_fn, apply_rope, _rope_inputs, name="Exercise 6.2 (rope)")


def _as_tensor(student_fn, name: str):
    def run(*args):
        result = student_fn(*args)
        if isinstance(result, (list, tuple)):
            result = torch.tensor(result)
        if not torch.is_tensor(result):
            raise CheckFailed(f"{name}: expected a tensor (or a list of numbers), "
                              f"got a {type(result).__name__}")
        return result.double()
    return run


def _head_counts(generator: torch.Generator):
    return (_randint(generator, 1, 24),)


def check_alibi_slopes(student_fn) -> None:
    """Exercise 6.3: one slope per head, including head counts that are not powers of two."""
    name = "Exercise 6.3 (slopes)"
    compare_with_reference(_as_tensor(student_fn, name), alibi_slopes, _head_counts,
                           name=name, trials=10)


def _bias_sizes(generator: torch.Generator):
    n_queries = _randint(generator, 1, 8)
    return _randint(generator, 1, 8), n_queries, n_queries + _randint(generator, 0, 4)


def check_alibi_bias(student_fn) -> None:
    """Exercise 6.4: the (H, Lq, Lk) bias -slope_h * |i - j|, queries at the last positions."""
    compare_with_reference(student_fn, alibi_bias, _bias_sizes, name="Exercise 6.4 (alibi)")


__all__ = ["check_sinusoidal_table", "check_rope", "check_alibi_slopes", "check_alibi_bias"]
