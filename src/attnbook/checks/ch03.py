"""Checks for the exercises of chapter 3, "Multiplicative attention".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape the exercise allows appears,
then on fresh random inputs. Floats are compared with atol 1e-5 + rtol 1e-4 *
|expected|; the caller's tensors must be unchanged after the call; numbers must be
Python ints where the exercise asks for a count.
"""

from __future__ import annotations

import torch

from attnbook.attention import (
    ConcatScore,
    DotScore,
    GeneralScore,
    local_attention_weights,
    padding_mask,
)
from attnbook.checks.core import (
    check_answer,
    compare_cases,
    compare_gradients,
    compare_with_reference,
    in_turn,
    random_size,
)


def _shape(generator: torch.Generator, fixed: tuple, ranges: tuple) -> tuple[int, ...]:
    """`fixed` sizes where given (not None), random ones in `ranges` elsewhere."""
    return tuple(f if f is not None else random_size(generator, *r) for f, r in zip(fixed, ranges))


# Exercise 3.1


def _query_and_keys(B=None, S=None, D=None):
    def make(generator: torch.Generator):
        b, s, d = _shape(generator, (B, S, D), ((1, 4), (1, 7), (1, 6)))
        return torch.randn(b, d, generator=generator), torch.randn(b, s, d, generator=generator)
    return make


def check_dot_score(student_fn) -> None:
    """Exercise 3.1: q . k for every key.

    Cases: a batch of one with one key and one feature (a `.squeeze()` too many
    fails), as many keys as rows in the batch (a query that is not lined up with its
    keys then broadcasts and mixes the rows), one key, then random sizes.
    """
    def reference(query, keys):
        return DotScore(query.shape[1], keys.shape[2])(query, keys)

    makers = [_query_and_keys(1, 1, 1), _query_and_keys(1, 5, 3), _query_and_keys(3, 3, 2),
              _query_and_keys(4, 1, 2), _query_and_keys(), _query_and_keys()]
    compare_with_reference(student_fn, reference, in_turn(*makers), name="Exercise 3.1 (dot_score)",
                           trials=len(makers), arg_names=("query", "keys"))


# Exercise 3.2


def _query_keys_matrix(B=None, S=None, Dq=None, Dk=None):
    def make(generator: torch.Generator):
        b, s, dq, dk = _shape(generator, (B, S, Dq, Dk), ((1, 4), (1, 7), (1, 6), (1, 6)))
        return (torch.randn(b, dq, generator=generator), torch.randn(b, s, dk, generator=generator),
                torch.randn(dq, dk, generator=generator))
    return make


def check_general_score(student_fn) -> None:
    """Exercise 3.2: the bilinear form q^T W k for every key.

    Cases: a batch of one with one key, query and key sizes that differ (W used
    transposed raises) and that are equal (W used transposed then gives wrong values),
    then random sizes.
    """
    def reference(query, keys, W):
        score = GeneralScore(query.shape[1], keys.shape[2])
        with torch.no_grad():
            score.W.weight.copy_(W)
            return score(query, keys)

    makers = [_query_keys_matrix(1, 1, 2, 3), _query_keys_matrix(2, 4, 3, 3),
              _query_keys_matrix(3, 5, 4, 2), _query_keys_matrix(), _query_keys_matrix()]
    compare_with_reference(student_fn, reference, in_turn(*makers),
                           name="Exercise 3.2 (general_score)", trials=len(makers),
                           arg_names=("query", "keys", "W"))


# Exercise 3.3


def _concat_inputs(B=None, S=None, Dq=None, Dk=None, A=None):
    def make(generator: torch.Generator):
        b, s, dq, dk, a = _shape(generator, (B, S, Dq, Dk, A),
                                 ((1, 4), (1, 7), (1, 6), (1, 6), (1, 5)))
        return (torch.randn(b, dq, generator=generator), torch.randn(b, s, dk, generator=generator),
                torch.randn(a, dq + dk, generator=generator), torch.randn(a, generator=generator),
                torch.randn(a, generator=generator))
    return make


def check_concat_score(student_fn) -> None:
    """Exercise 3.3: v . tanh(W [q; k] + b) for every key.

    Cases: a batch of one with one key, query and key sizes that differ and that
    are equal ([k; q] instead of [q; k] gives wrong values either way), an attention
    size of one, then random sizes; `b` is never zero, so leaving it out fails.
    """
    def reference(query, keys, W, b, v):
        score = ConcatScore(query.shape[1], keys.shape[2], W.shape[0])
        with torch.no_grad():
            score.W.weight.copy_(W)
            score.W.bias.copy_(b)
            score.v.weight.copy_(v[None, :])
            return score(query, keys)

    makers = [_concat_inputs(1, 1, 2, 3, 4), _concat_inputs(2, 5, 3, 3, 2),
              _concat_inputs(3, 4, 4, 2, 1), _concat_inputs(), _concat_inputs()]
    compare_with_reference(student_fn, reference, in_turn(*makers),
                           name="Exercise 3.3 (concat_score)", trials=len(makers),
                           arg_names=("query", "keys", "W", "b", "v"))


# Exercise 3.4


def _local_case(generator: torch.Generator, B: int, S: int, half_width: int,
                beyond: bool = False):
    """Scores, centres, a padding mask and D. Centres lie inside each row's real
    positions; with `beyond`, the first row's centre lies so far into the padding that
    its window holds only padding (its weights are all zero)."""
    scores = torch.randn(B, S, generator=generator) * 3
    lengths = torch.randint(1, S + 1, (B,), generator=generator)
    centers = torch.rand(B, generator=generator) * (lengths - 1)
    if beyond:
        lengths[0] = 1
        centers[0] = S - 1 - torch.rand(1, generator=generator).item() * 0.4
    return scores, centers, padding_mask(lengths, S), half_width


def _local_cases(generator: torch.Generator) -> list[tuple[str, tuple]]:
    cases = [("a window that reaches past both ends (D = 3, S = 5)", _local_case(generator, 3, 5, 3)),
             ("D = 1 in a long input", _local_case(generator, 4, 12, 1)),
             ("D = 2, padding inside the windows", _local_case(generator, 4, 9, 2)),
             ("a row whose window holds only padding (D = 1)",
              _local_case(generator, 3, 10, 1, beyond=True)),
             ("a batch of one (D = 2)", _local_case(generator, 1, 7, 2)),
             ("D = 4, wider than most inputs", _local_case(generator, 3, 6, 4))]
    for _ in range(2):
        B, S = random_size(generator, 2, 4), random_size(generator, 3, 12)
        cases.append(("random sizes", _local_case(generator, B, S, random_size(generator, 1, 3))))
    return [(f"with scores of shape {tuple(inputs[0].shape)}, {description}", inputs)
            for description, inputs in cases]


def reference_local_p_weights(scores, centers, mask, half_width):
    return local_attention_weights(scores, centers, mask, half_width, gaussian=True)


def check_local_p_weights(student_fn) -> None:
    """Exercise 3.4: softmax inside the window [p - D, p + D], times the Gaussian bump.

    Cases: windows that reach past the ends of the input or into its padding, a row
    whose window holds only padding (all-zero weights, not NaN), D from 1 to 4 (an
    answer that fixes D or uses sigma = D fails), a batch of one, random sizes.
    Centres are never half-integers, so every way of rounding agrees. The weights
    and their gradients with respect to `scores` and `centers` (the Gaussian is how
    local-p learns p) are compared with atol 1e-5 + rtol 1e-4.
    """
    name = "Exercise 3.4 (local_p_weights)"
    cases = _local_cases(torch.Generator().manual_seed(1234))
    compare_cases(student_fn, reference_local_p_weights, cases, name=name,
                  arg_names=("scores", "centers", "mask", "half_width"))
    for description, inputs in cases:
        compare_gradients(student_fn, reference_local_p_weights, inputs, wrt=(0, 1), name=name,
                          case=description)
    print(f"✅ {name}: the gradients with respect to the scores and the centres are right too.")


# Exercise 3.5


def check_cost_per_step(general_precomputed, general_from_scratch) -> None:
    """Exercise 3.5: multiply-adds of the general score per decoder step, S = 80, d = 128.
    Both answers must be ints."""
    S, d = 80, 128
    check_answer(general_precomputed, S * d, "Exercise 3.5 (with W k precomputed)",
                 hint="With W k stored, what is left is one dot product of length d per key.")
    check_answer(general_from_scratch, S * d * d + S * d, "Exercise 3.5 (from scratch)",
                 hint="W k costs d * d multiply-adds per key, then comes the dot product.")


__all__ = ["check_dot_score", "check_general_score", "check_concat_score",
           "check_local_p_weights", "check_cost_per_step"]
