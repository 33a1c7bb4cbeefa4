"""Checks for the exercises of chapter 5, "Self-attention"."""

from __future__ import annotations

import torch

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.bench import max_path_length
from attnbook.checks.core import check_answer, compare_with_reference


def _size(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _weights(generator: torch.Generator, model_dim: int, head_dim: int):
    return tuple(torch.randn(model_dim, head_dim, generator=generator, dtype=torch.float64)
                 for _ in range(3))


def _cross_problem(generator: torch.Generator):
    batch, lq, lk, model_dim, head_dim = (_size(generator, 1, 3), _size(generator, 1, 6),
                                          _size(generator, 1, 7), _size(generator, 2, 8),
                                          _size(generator, 1, 6))
    x = torch.randn(batch, lq, model_dim, generator=generator, dtype=torch.float64)
    memory = torch.randn(batch, lk, model_dim, generator=generator, dtype=torch.float64)
    return (x, memory, *_weights(generator, model_dim, head_dim))


def reference_cross_attention(x, memory, w_q, w_k, w_v):
    return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v)


def check_cross_attention(student_fn) -> None:
    """Exercise 5.1: queries from x, keys and values from memory."""
    compare_with_reference(student_fn, reference_cross_attention, _cross_problem,
                           name="Exercise 5.1 (cross_attention)", atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"))


def _self_problem(generator: torch.Generator):
    batch, length, model_dim, head_dim = (_size(generator, 1, 3), _size(generator, 1, 7),
                                          _size(generator, 2, 8), _size(generator, 1, 6))
    x = torch.randn(batch, length, model_dim, generator=generator, dtype=torch.float64)
    return (x, *_weights(generator, model_dim, head_dim))


def reference_causal_self_attention(x, w_q, w_k, w_v):
    mask = causal_mask(x.shape[-2], device=x.device)
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, mask)


def check_causal_self_attention(student_fn) -> None:
    """Exercise 5.2: self-attention in which position i sees positions j <= i only."""
    compare_with_reference(student_fn, reference_causal_self_attention, _self_problem,
                           name="Exercise 5.2 (causal_self_attention)", atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"))


def _permutation(generator: torch.Generator):
    return (torch.randperm(_size(generator, 1, 10), generator=generator),)


def check_inverse_permutation(student_fn) -> None:
    """Exercise 5.3: the permutation that undoes `perm`."""
    compare_with_reference(student_fn, torch.argsort, _permutation,
                           name="Exercise 5.3 (inverse_permutation)")


def _connections(generator: torch.Generator):
    n = _size(generator, 1, 12)
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
    back, ahead = _size(generator, 0, 3), _size(generator, 0, 3)
    connections = (offset <= back) & (-offset <= ahead)  # a band: i reads j in [i - back, i + ahead]
    if _size(generator, 0, 3) == 0:
        connections = torch.ones(n, n, dtype=torch.bool)  # attention
    return (connections,)


def check_max_path_length(student_fn) -> None:
    """Exercise 5.4: layers until information has reached everywhere it can."""
    compare_with_reference(student_fn, max_path_length, _connections,
                           name="Exercise 5.4 (max_path_length)", trials=8)


def check_weights_memory(answer) -> None:
    """Exercise 5.5: numbers in the attention weights of batch 8, 12 heads, 1024 positions."""
    check_answer(answer, 8 * 12 * 1024 * 1024, name="Exercise 5.5 (memory of the weights)",
                 hint="The weights have shape (batch, heads, queries, keys).")


__all__ = ["check_cross_attention", "check_causal_self_attention", "check_inverse_permutation",
           "check_max_path_length", "check_weights_memory"]
