"""Checks for the exercises of chapter 5, "Self-attention"."""

from __future__ import annotations

import torch

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.bench import max_path_length
from attnbook.checks.core import check_answer, compare_with_reference, in_turn, random_size


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


def _cross_problem(lq: tuple[int, int], lk: tuple[int, int]):
    def make(generator: torch.Generator):
        batch = random_size(generator, 1, 3)
        n_q, n_k = random_size(generator, *lq), random_size(generator, *lk)
        model_dim, head_dim, value_dim = _widths(generator)
        x = torch.randn(batch, n_q, model_dim, generator=generator, dtype=torch.float64)
        memory = torch.randn(batch, n_k, model_dim, generator=generator, dtype=torch.float64)
        return (x, memory, *_weights(generator, model_dim, head_dim, value_dim))
    return make


def reference_cross_attention(x, memory, w_q, w_k, w_v):
    return scaled_dot_product_attention(x @ w_q, memory @ w_k, memory @ w_v)


def check_cross_attention(student_fn) -> None:
    """Exercise 5.1: queries from x, keys and values from memory.

    float64; query and memory lengths from 1 to 7 (equal and unequal), widths with
    D != d != dv; within 1e-8 + 1e-6 * |expected|.
    """
    cases = in_turn(_cross_problem((2, 6), (2, 7)), _cross_problem((1, 1), (2, 7)),
                    _cross_problem((2, 6), (1, 1)), _cross_problem((3, 3), (3, 3)))
    compare_with_reference(student_fn, reference_cross_attention, cases,
                           name="Exercise 5.1 (cross_attention)", trials=6, atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"),
                           arg_names=("x", "memory", "w_q", "w_k", "w_v"))


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
    """Exercise 5.2: self-attention in which position i sees positions j <= i only.

    float64; lengths 1 to 7 (and batch sizes that differ from the length), D != d !=
    dv; within 1e-8 + 1e-6 * |expected|.
    """
    compare_with_reference(student_fn, reference_causal_self_attention,
                           in_turn(_self_problem((2, 7)), _self_problem((1, 1)), _self_problem((4, 7))),
                           name="Exercise 5.2 (causal_self_attention)", trials=6, atol=1e-8, rtol=1e-6,
                           item_names=("output", "weights"), arg_names=("x", "w_q", "w_k", "w_v"))


def _permutation(low: int, high: int):
    def make(generator: torch.Generator):
        n = random_size(generator, low, high)
        perm = torch.randperm(n, generator=generator)
        if n >= 3:  # a 3-cycle at the front: a permutation that is not its own inverse
            perm[:3] = perm[:3][torch.tensor([1, 2, 0])]
        return (perm,)
    return make


def check_inverse_permutation(student_fn) -> None:
    """Exercise 5.3: the permutation that undoes `perm`, an int64 tensor like `perm`.

    Lengths 1 and 3 to 10, with permutations that are not their own inverse;
    compared exactly.
    """
    compare_with_reference(student_fn, torch.argsort,
                           in_turn(_permutation(3, 10), _permutation(1, 1), _permutation(3, 10)),
                           name="Exercise 5.3 (inverse_permutation)", trials=6, arg_names=("perm",))


def _connections(kind: str):
    def make(generator: torch.Generator):
        n = random_size(generator, 2, 12)
        offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
        if kind == "attention":
            return (torch.ones(n, n, dtype=torch.bool),)
        if kind == "none":
            return (torch.eye(n, dtype=torch.bool),)
        back = random_size(generator, 1, 3)
        ahead = 0 if kind == "causal" else random_size(generator, 1, 3)
        return ((offset <= back) & (-offset <= ahead),)  # a band: i reads j in [i - back, i + ahead]
    return make


def check_max_path_length(student_fn) -> None:
    """Exercise 5.4: layers until information has reached everywhere it can, a Python int.

    Attention (everything connected), one-sided and two-sided bands of several
    widths, and no connections at all (0 layers); the int is compared exactly.
    """
    cases = in_turn(_connections("band"), _connections("causal"), _connections("attention"),
                    _connections("none"), _connections("band"), _connections("causal"))
    compare_with_reference(student_fn, max_path_length, cases,
                           name="Exercise 5.4 (max_path_length)", trials=8, arg_names=("connections",))


def check_weights_memory(answer) -> None:
    """Exercise 5.5: numbers in the attention weights of batch 8, 12 heads, 1024 positions,
    a Python int (a float or a 0-d tensor is refused)."""
    check_answer(answer, 8 * 12 * 1024 * 1024, name="Exercise 5.5 (memory of the weights)",
                 hint="The weights have shape (batch, heads, queries, keys).")


__all__ = ["check_cross_attention", "check_causal_self_attention", "check_inverse_permutation",
           "check_max_path_length", "check_weights_memory"]
