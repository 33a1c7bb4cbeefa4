"""Checks for the exercises of chapter 6, "Position"."""

from __future__ import annotations

import torch

from attnbook.checks.core import CheckFailed, compare_with_reference, in_turn, random_size
from attnbook.positional import alibi_bias, alibi_slopes, apply_rope, sinusoidal_encoding


def _table_sizes(n_positions: tuple[int, int], half_width: tuple[int, int]):
    def make(generator: torch.Generator):
        return random_size(generator, *n_positions), 2 * random_size(generator, *half_width)
    return make


def check_sinusoidal_table(student_fn) -> None:
    """Exercise 6.1: the float32 (n_positions, d_model) sinusoidal table.

    Up to 60 positions and widths up to 32 (one position, width 2 too); within
    1e-5 + 1e-4 * |expected|, which float32 arithmetic meets.
    """
    cases = in_turn(_table_sizes((2, 60), (2, 16)), _table_sizes((1, 1), (1, 4)),
                    _table_sizes((2, 60), (1, 1)), _table_sizes((30, 60), (8, 16)))
    compare_with_reference(student_fn, sinusoidal_encoding, cases, trials=6,
                           name="Exercise 6.1 (sinusoidal_table)", arg_names=("n_positions", "d_model"))


def _rope_inputs(leading: tuple[int, ...], dtype: torch.dtype):
    def make(generator: torch.Generator):
        length, d = random_size(generator, 2, 9), 2 * random_size(generator, 2, 8)
        shape = tuple(random_size(generator, 1, n) for n in leading) + (length, d)
        x = torch.randn(shape, generator=generator, dtype=dtype)
        positions = torch.randint(0, 100, (length,), generator=generator)  # not 0, 1, 2, ...
        return x, positions
    return make


def check_rope(student_fn) -> None:
    """Exercise 6.2: rotate each pair of dimensions by position * theta_i.

    x of 2, 3 and 4 dimensions, float32 and float64, positions in [0, 100) in
    any order; the result must keep x's shape and dtype; within 1e-5 + 1e-4 * |expected|.
    """
    cases = in_turn(_rope_inputs((3,), torch.float32), _rope_inputs((2, 3), torch.float64),
                    _rope_inputs((), torch.float32), _rope_inputs((3,), torch.float64))
    compare_with_reference(student_fn, apply_rope, cases, trials=6, name="Exercise 6.2 (rope)",
                           arg_names=("x", "positions"))


def _as_tensor(student_fn, name: str):
    def run(*args):
        result = student_fn(*args)
        if isinstance(result, (list, tuple)):
            try:
                result = torch.tensor(result, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as error:
                raise CheckFailed(f"{name}: on inputs ({args[0]}), your function returned a "
                                  f"{type(result).__name__} that is not a flat list of numbers "
                                  f"({' '.join(str(error).split())})") from None
        if not torch.is_tensor(result):
            raise CheckFailed(f"{name}: expected a tensor (or a list of numbers), "
                              f"got a {type(result).__name__}")
        if not result.is_floating_point():
            raise CheckFailed(f"{name}: expected floats, got a tensor of dtype {result.dtype}")
        return result.double()
    return run


def check_alibi_slopes(student_fn) -> None:
    """Exercise 6.3: one slope per head, including head counts that are not powers of two.

    1, 2, 3, 6, 8 and 12 heads, then random counts up to 24; a 1-D float tensor (any
    float dtype) or a list of floats, within 1e-5 + 1e-4 * |expected|.
    """
    name = "Exercise 6.3 (slopes)"
    fixed = [lambda g, n=n: (n,) for n in (1, 2, 3, 6, 8, 12)]
    cases = in_turn(*fixed, *[lambda g: (random_size(g, 1, 24),)] * 4)
    compare_with_reference(_as_tensor(student_fn, name), alibi_slopes, cases, name=name, trials=10)


def _bias_sizes(extra_keys: tuple[int, int], n_queries: tuple[int, int] = (2, 8)):
    def make(generator: torch.Generator):
        lq = random_size(generator, *n_queries)
        return random_size(generator, 2, 8), lq, lq + random_size(generator, *extra_keys)
    return make


def check_alibi_bias(student_fn) -> None:
    """Exercise 6.4: the float32 (H, Lq, Lk) bias -slope_h * |i - j|, queries at the last positions.

    As many keys as queries and more keys than queries (a cache), a single query,
    2 to 8 heads; within 1e-5 + 1e-4 * |expected|.
    """
    cases = in_turn(_bias_sizes((1, 4)), _bias_sizes((0, 0)), _bias_sizes((1, 4), (1, 1)),
                    _bias_sizes((0, 4)))
    compare_with_reference(student_fn, alibi_bias, cases, trials=6, name="Exercise 6.4 (alibi)",
                           arg_names=("n_heads", "n_queries", "n_keys"))


__all__ = ["check_sinusoidal_table", "check_rope", "check_alibi_slopes", "check_alibi_bias"]
