"""Checks for the exercises of chapter 3, "Multiplicative attention"."""

from __future__ import annotations

import torch

from attnbook.attention import (
    ConcatScore,
    DotScore,
    GeneralScore,
    local_attention_weights,
    padding_mask,
)
from attnbook.checks.core import check_answer, compare_with_reference


def _size(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _query_and_keys(generator: torch.Generator):
    B, S, D = _size(generator, 1, 4), _size(generator, 1, 7), _size(generator, 1, 6)
    return torch.randn(B, D, generator=generator), torch.randn(B, S, D, generator=generator)


def check_dot_score(student_fn) -> None:
    """Exercise 3.1: q . k for every key."""
    def reference(query, keys):
        return DotScore(query.shape[1], keys.shape[2])(query, keys)

    compare_with_reference(student_fn, reference, _query_and_keys, name="Exercise 3.1 (dot_score)")


def _query_keys_matrix(generator: torch.Generator):
    B, S, Dq, Dk = (_size(generator, 1, 4), _size(generator, 1, 7), _size(generator, 1, 6),
                    _size(generator, 1, 6))
    return (torch.randn(B, Dq, generator=generator), torch.randn(B, S, Dk, generator=generator),
            torch.randn(Dq, Dk, generator=generator))


def check_general_score(student_fn) -> None:
    """Exercise 3.2: the bilinear form q^T W k for every key."""
    def reference(query, keys, W):
        score = GeneralScore(query.shape[1], keys.shape[2])
        with torch.no_grad():
            score.W.weight.copy_(W)
            return score(query, keys)

    compare_with_reference(student_fn, reference, _query_keys_matrix,
                           name="Exercise 3.2 (general_score)")


def _concat_inputs(generator: torch.Generator):
    B, S, Dq, Dk, A = (_size(generator, 1, 4), _size(generator, 1, 7), _size(generator, 1, 6),
                       _size(generator, 1, 6), _size(generator, 1, 5))
    return (torch.randn(B, Dq, generator=generator), torch.randn(B, S, Dk, generator=generator),
            torch.randn(A, Dq + Dk, generator=generator), torch.randn(A, generator=generator),
            torch.randn(A, generator=generator))


def check_concat_score(student_fn) -> None:
    """Exercise 3.3: v . tanh(W [q; k] + b) for every key."""
    def reference(query, keys, W, b, v):
        score = ConcatScore(query.shape[1], keys.shape[2], W.shape[0])
        with torch.no_grad():
            score.W.weight.copy_(W)
            score.W.bias.copy_(b)
            score.v.weight.copy_(v[None, :])
            return score(query, keys)

    compare_with_reference(student_fn, reference, _concat_inputs,
                           name="Exercise 3.3 (concat_score)")


def _local_inputs(generator: torch.Generator):
    B, S = _size(generator, 2, 4), _size(generator, 3, 12)
    scores = torch.randn(B, S, generator=generator) * 3
    lengths = torch.randint(1, S + 1, (B,), generator=generator)
    centers = torch.rand(B, generator=generator) * (lengths - 1)  # inside each input
    return scores, centers, padding_mask(lengths, S), _size(generator, 1, 3)


def check_local_p_weights(student_fn) -> None:
    """Exercise 3.4: softmax inside the window [p - D, p + D], times the Gaussian bump."""
    def reference(scores, centers, mask, half_width):
        return local_attention_weights(scores, centers, mask, half_width, gaussian=True)

    compare_with_reference(student_fn, reference, _local_inputs,
                           name="Exercise 3.4 (local_p_weights)")


def check_cost_per_step(general_precomputed, general_from_scratch) -> None:
    """Exercise 3.5: multiply-adds of the general score per decoder step, S = 80, d = 128."""
    S, d = 80, 128
    check_answer(general_precomputed, S * d, "Exercise 3.5 (with W k precomputed)",
                 hint="With W k stored, what is left is one dot product of length d per key.")
    check_answer(general_from_scratch, S * d * d + S * d, "Exercise 3.5 (from scratch)",
                 hint="W k costs d * d multiply-adds per key, then comes the dot product.")


__all__ = ["check_dot_score", "check_general_score", "check_concat_score",
           "check_local_p_weights", "check_cost_per_step"]
