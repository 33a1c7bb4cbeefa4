"""Checks for the exercises of chapter 7, "Multi-head attention"."""

from __future__ import annotations

import torch
from torch import nn

from attnbook.attention import causal_mask
from attnbook.checks.core import CheckFailed, check_answer, compare_with_reference
from attnbook.multihead import MultiHeadAttention, merge_heads, split_heads


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _split_inputs(generator: torch.Generator):
    n_heads, head_dim = _randint(generator, 1, 4), _randint(generator, 1, 5)
    x = torch.randn(_randint(generator, 1, 3), _randint(generator, 1, 6), n_heads * head_dim,
                    generator=generator)
    return x, n_heads


def check_split_heads(student_fn) -> None:
    """Exercise 7.1: (B, L, D) -> (B, H, L, D/H)."""
    compare_with_reference(student_fn, split_heads, _split_inputs, name="Exercise 7.1 (split_heads)")


def _merge_inputs(generator: torch.Generator):
    shape = [_randint(generator, 1, 3), _randint(generator, 1, 4), _randint(generator, 1, 6),
             _randint(generator, 1, 5)]
    return (torch.randn(*shape, generator=generator),)


def check_merge_heads(student_fn) -> None:
    """Exercise 7.2: (B, H, L, d) -> (B, L, H*d)."""
    compare_with_reference(student_fn, merge_heads, _merge_inputs, name="Exercise 7.2 (merge_heads)")


def _module_and_inputs(generator: torch.Generator):
    n_heads, head_dim = _randint(generator, 1, 4), _randint(generator, 1, 4)
    batch, n_queries, n_keys = _randint(generator, 1, 3), _randint(generator, 1, 6), _randint(generator, 1, 6)
    torch.manual_seed(_randint(generator, 0, 10_000))
    module = MultiHeadAttention(n_heads * head_dim, n_heads)
    query = torch.randn(batch, n_queries, n_heads * head_dim, generator=generator)
    key = torch.randn(batch, n_keys, n_heads * head_dim, generator=generator)
    value = torch.randn(batch, n_keys, n_heads * head_dim, generator=generator)
    mask = causal_mask(n_queries, max(n_queries, n_keys))[:, :n_keys] if n_keys >= n_queries else None
    return module, query, key, value, mask


def _module_output(module, query, key, value, mask):
    with torch.no_grad():
        return module(query, key, value, mask)[0]


def check_heads_loop(student_fn) -> None:
    """Exercise 7.3: multi-head attention, one head at a time."""
    def run(module, query, key, value, mask):
        with torch.no_grad():
            return student_fn(module, query, key, value, mask)
    compare_with_reference(run, _module_output, _module_and_inputs, name="Exercise 7.3 (heads_loop)")


def check_to_torch(student_fn) -> None:
    """Exercise 7.4: an nn.MultiheadAttention that computes what our module computes."""
    name = "Exercise 7.4 (to_torch)"

    def run(module, query, key, value, mask):
        theirs = student_fn(module)
        if not isinstance(theirs, nn.MultiheadAttention):
            raise CheckFailed(f"{name}: expected an nn.MultiheadAttention, got a {type(theirs).__name__}")
        if not theirs.batch_first:
            raise CheckFailed(f"{name}: create it with batch_first=True, as our module is batch-first")
        with torch.no_grad():
            return theirs(query, key, value)[0]

    def reference(module, query, key, value, mask):
        return _module_output(module, query, key, value, None)

    compare_with_reference(run, reference, _module_and_inputs, name=name)


def check_parameter_count(answer) -> None:
    """Exercise 7.5: parameters of MultiHeadAttention(64, n_heads), for any n_heads."""
    expected = sum(p.numel() for p in MultiHeadAttention(64, 8).parameters())
    check_answer(answer, expected, name="Exercise 7.5 (parameter count)",
                 hint="Count the weights and biases of the four d_model x d_model projections.")


__all__ = ["check_split_heads", "check_merge_heads", "check_heads_loop", "check_to_torch",
           "check_parameter_count"]
