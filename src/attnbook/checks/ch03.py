"""Checks for the exercises of chapter 3, "Multiplicative attention".

Each check runs the student's function on a fixed list of cases, chosen so that
every argument matters to some case and every shape the exercise allows appears,
then on fresh random inputs. Floats are compared with atol 1e-5 + rtol 1e-4 *
|expected|; the caller's tensors must be unchanged after the call; numbers must be
Python ints where the exercise asks for a count.
"""

from __future__ import annotations

import numbers

import torch

from attnbook.attention import (
    GeneralScore,
    local_attention_weights,
    local_window,
    padding_mask,
)
from attnbook.checks.ch02 import in_scores_dtype
from attnbook.checks.core import (
    CheckFailed,
    call_student,
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


def _query_keys_matrix(B=None, S=None, Dq=None, Dk=None):
    def make(generator: torch.Generator):
        b, s, dq, dk = _shape(generator, (B, S, Dq, Dk), ((1, 4), (1, 7), (1, 6), (1, 6)))
        return (torch.randn(b, dq, generator=generator), torch.randn(b, s, dk, generator=generator),
                torch.randn(dq, dk, generator=generator))
    return make


def check_general_score(student_fn) -> None:
    """Exercise 3.1: the bilinear form q^T W k for every key.

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
                           name="Exercise 3.1 (general_score)", trials=len(makers),
                           arg_names=("query", "keys", "W"))


# Exercise 3.3


def _local_case(generator: torch.Generator, B: int, S: int, half_width: int,
                beyond: bool = False):
    """Scores, centres, a padding mask and the half-width w. Centres lie inside each row's real
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
    cases = [("a window that reaches past both ends (w = 3, S = 5)",
              _local_case(generator, 3, 5, 3)),
             ("w = 1 in a long input", _local_case(generator, 4, 12, 1)),
             ("w = 2, padding inside the windows", _local_case(generator, 4, 9, 2)),
             ("a row whose window holds only padding (w = 1)",
              _local_case(generator, 3, 10, 1, beyond=True)),
             ("a batch of one (w = 2)", _local_case(generator, 1, 7, 2)),
             ("w = 4, wider than most inputs", _local_case(generator, 3, 6, 4))]
    for _ in range(2):
        B, S = random_size(generator, 2, 4), random_size(generator, 3, 12)
        w = random_size(generator, 1, 3)
        cases.append((f"random sizes, w = {w}", _local_case(generator, B, S, w)))
    return [(f"with scores of shape {tuple(inputs[0].shape)}, {description}", inputs)
            for description, inputs in cases]


def reference_local_p_weights(scores, centers, mask, half_width):
    return local_attention_weights(scores, centers, mask, half_width, gaussian=True)


def check_local_p_weights(student_fn) -> None:
    """Exercise 3.3: softmax inside the window [p - w, p + w], times the Gaussian bump.

    Cases: windows that reach past the ends of the input or into its padding, a row
    whose window holds only padding (all-zero weights, not NaN), w = `half_width` from
    1 to 4 (an answer that fixes w or uses sigma = w fails), a batch of one, random
    sizes. Centres are never half-integers, so every way of rounding agrees. The
    weights must have the scores' dtype; they and their gradients with respect to
    `scores` and `centers` (the Gaussian is how local-p learns p) are compared with
    atol 1e-5 + rtol 1e-4.
    """
    name = "Exercise 3.3 (local_p_weights)"
    cases = _local_cases(torch.Generator().manual_seed(1234))
    student = in_scores_dtype(student_fn, name)
    arg_names = ("scores", "centers", "mask", "half_width")
    compare_cases(student, reference_local_p_weights, cases, name=name, arg_names=arg_names)
    for description, inputs in cases:
        compare_gradients(student, reference_local_p_weights, inputs, wrt=(0, 1), name=name,
                          case=description, arg_names=arg_names)
    print(f"✅ {name}: the gradients with respect to the scores and the centres are right too.")


# Exercise 3.2

# (S, T, d_q, d_k): the chapter's sizes with 30 steps, query and key sizes that differ
# both ways (swapping d_q and d_k then gives another number), one key, one step, and
# as many steps as keys (the two orders then cost the same when d_q = d_k).
COST_CASES = [(80, 30, 128, 128), (80, 30, 128, 256), (40, 21, 96, 64), (1, 1, 3, 5),
              (7, 1, 4, 4), (12, 12, 16, 16), (55, 21, 128, 128), (5, 100, 2, 9)]


def cost_keys_first(S: int, T: int, d_q: int, d_k: int) -> int:
    """W k_j once for every key (S d_q d_k), then q . (W k_j) at every step (T S d_q)."""
    return S * d_q * d_k + T * S * d_q


def cost_query_first(S: int, T: int, d_q: int, d_k: int) -> int:
    """q^T W at every step (T d_q d_k), then (q^T W) . k_j for every key (T S d_k)."""
    return T * (d_q * d_k + S * d_k)


def check_general_costs(keys_first_fn, query_first_fn) -> None:
    """Exercise 3.2: the multiply-adds of the general score q^T W k for one input of S
    keys over T decoder steps, in both orders. Exact whole numbers (ints), on the fixed
    COST_CASES (d_q != d_k both ways, S = 1, T = 1, T = S), then random sizes."""
    name = "Exercise 3.2 (the general score's two orders)"
    generator = torch.Generator().manual_seed(1234)
    cases = list(COST_CASES) + [tuple(random_size(generator, 1, 300) for _ in range(4))
                                for _ in range(10)]
    for label, fn, reference in (("cost_keys_first", keys_first_fn, cost_keys_first),
                                 ("cost_query_first", query_first_fn, cost_query_first)):
        for sizes in cases:
            case = f"{label}(S={sizes[0]}, T={sizes[1]}, d_q={sizes[2]}, d_k={sizes[3]})"
            got = call_student(fn, sizes, name, case=case)
            if isinstance(got, bool) or not isinstance(got, numbers.Integral):
                raise CheckFailed(f"{name}: {case} returned {got!r}; return a whole number "
                                  "(an int)")
            expected = reference(*sizes)
            if got != expected:
                how = "more" if got > expected else "fewer"
                raise CheckFailed(f"{name}: {case} gives {got:,}, but that order costs "
                                  f"{expected:,} multiply-adds ({abs(got - expected):,} {how})")
    print(f"✅ {name}: both right in all {len(cases)} cases.")


# Exercise 3.4


def _window_cases(generator: torch.Generator) -> list[tuple[str, tuple]]:
    """(description, (centers, length, half_width)). Centres are never half-integers,
    so every way of rounding to the nearest agrees."""
    fixed = [("centres with fractions above and below one half",
              torch.tensor([3.7, 3.2, 6.9, 0.6]), 12, 2),
             ("whole-number centres", torch.tensor([0.0, 5.0, 11.0]), 12, 3),
             ("a window past both ends", torch.tensor([2.8, 1.4]), 5, 4),
             ("half_width 1 and a batch of one", torch.tensor([8.6]), 10, 1),
             ("centres near the last position", torch.tensor([9.8, 9.3]), 10, 2)]
    for _ in range(3):
        B, S = random_size(generator, 1, 5), random_size(generator, 3, 20)
        centers = torch.rand(B, generator=generator) * (S - 1)
        centers = torch.where((centers.frac() - 0.5).abs() < 0.05, centers + 0.2, centers)
        fixed.append(("random centres", centers.clamp(max=S - 1),
                      S, random_size(generator, 1, 5)))
    return [(f"{description} (centers {[round(x, 2) for x in c.tolist()]}, length {n}, "
             f"half_width {w})", (c, n, w)) for description, c, n, w in fixed]


def check_local_window(student_fn) -> None:
    """Exercise 3.4: Luong's local window, a boolean (B, length) mask, True at the
    positions s with |s - round(p)| <= half_width. Exact; centres with fractions above
    and below one half (never exactly one half), whole-number centres, windows past
    both ends, half_width 1 to 5, a batch of one; `centers` must be unchanged."""
    name = "Exercise 3.4 (local_window)"
    cases = _window_cases(torch.Generator().manual_seed(1234))

    def boolean(centers, length, half_width):
        result = student_fn(centers, length, half_width)
        if torch.is_tensor(result) and result.dtype != torch.bool:
            raise CheckFailed(f"{name}: return a boolean mask (True inside the window), "
                              f"got dtype {result.dtype}")
        return result

    compare_cases(boolean, local_window, cases, name=name,
                  arg_names=("centers", "length", "half_width"))


# Exercise 3.5

MASS_LENGTH, MASS_CENTER, MASS_WIDTHS = 60, 30.0, (2, 16)
MASS_TOLERANCE = 0.02  # a prediction may be off by 0.02 (the integral's estimate passes)


def local_p_mass(half_width: int) -> float:
    """The sum of local-p's weights for equal scores over MASS_LENGTH real positions,
    centred on MASS_CENTER."""
    weights = local_attention_weights(torch.zeros(1, MASS_LENGTH), torch.tensor([MASS_CENTER]),
                                      torch.ones(1, MASS_LENGTH, dtype=torch.bool),
                                      half_width, gaussian=True)
    return float(weights.sum())


def _read_masses(answer, label: str, name: str) -> dict[int, float]:
    if answer is ...:
        raise CheckFailed(f"{name}: replace the ... in your {label} with a dict")
    if not isinstance(answer, dict) or set(answer) != set(MASS_WIDTHS):
        raise CheckFailed(f"{name}: your {label} must be a dict with the keys "
                          f"{list(MASS_WIDTHS)} (the half-widths), got {answer!r:.60}")
    read = {}
    for w in MASS_WIDTHS:
        value = answer[w]
        if torch.is_tensor(value) and value.numel() == 1:
            value = value.item()
        elif hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise CheckFailed(f"{name}: {label}[{w}] must be a number, got {value!r:.40}")
        read[w] = float(value)
    return read


def check_local_p_mass_recorded(predicted) -> None:
    """Exercise 3.5, first step: a prediction for both half-widths is written down. Says
    nothing about whether it is right: that comes after the measurement."""
    name = "Exercise 3.5 (prediction)"
    masses = _read_masses(predicted, "prediction", name)
    shown = ", ".join(f"{masses[w]:.3g} for w = {w}" for w in MASS_WIDTHS)
    print(f"✅ {name}: recorded {shown}. Now measure.")


def check_local_p_mass(predicted, measured) -> None:
    """Exercise 3.5: the sum of local-p's weights with equal scores (MASS_LENGTH real
    positions, centre MASS_CENTER) for w = 2 and w = 16. A prediction may be off by
    MASS_TOLERANCE; a measurement must match `local_attention_weights` within 1e-5.
    Every number that is off is named, with the amount."""
    name = "Exercise 3.5 (how much weight local-p keeps)"
    answers = {"predicted": _read_masses(predicted, "prediction", name),
               "measured": _read_masses(measured, "measurement", name)}
    problems = []
    for label, tolerance in (("predicted", MASS_TOLERANCE), ("measured", 1e-5)):
        for w in MASS_WIDTHS:
            truth, got = local_p_mass(w), answers[label][w]
            if abs(got - truth) > tolerance:
                problems.append(f"the {label} sum for w = {w} is {got:.4g}, off by "
                                f"{got - truth:+.3f}")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems))
    kept = ", ".join(f"{local_p_mass(w):.3f} for w = {w}" for w in MASS_WIDTHS)
    print(f"✅ {name}: prediction and measurement both right (the weights sum to {kept}).")


__all__ = ["check_general_score", "check_general_costs", "check_local_p_weights",
           "check_local_window", "check_local_p_mass_recorded", "check_local_p_mass",
           "cost_keys_first", "cost_query_first", "local_p_mass"]
