"""Checks for the exercises of chapter 6, "Position"."""

from __future__ import annotations

import math

import torch

from attnbook.checks.core import (
    CheckFailed,
    _describe,
    as_number,
    call_student,
    compare_prediction,
    compare_with_reference,
    in_turn,
    random_size,
    recorded,
    without_calls,
)
from attnbook.positional import alibi_bias, apply_rope


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
    Calling the package's apply_rope (the answer) is a verdict.
    """
    name = "Exercise 6.2 (rope)"
    student_fn = without_calls(student_fn, name, [(apply_rope, "apply_rope")],
                               "rotate the pairs yourself")
    cases = in_turn(_rope_inputs((3,), torch.float32), _rope_inputs((2, 3), torch.float64),
                    _rope_inputs((), torch.float32), _rope_inputs((3,), torch.float64))
    compare_with_reference(student_fn, apply_rope, cases, trials=6, name=name,
                           arg_names=("x", "positions"))


def _bias_sizes(extra_keys: tuple[int, int], n_queries: tuple[int, int] = (2, 8)):
    def make(generator: torch.Generator):
        lq = random_size(generator, *n_queries)
        return random_size(generator, 2, 8), lq, lq + random_size(generator, *extra_keys)
    return make


def check_alibi_bias(student_fn) -> None:
    """Exercise 6.4: the fixed ALiBi bias, float32 (H, Lq, Lk) -slope_h * |i - j|, with the
    queries at the last positions.

    As many keys as queries and more keys than queries (a cache), a single query,
    2 to 8 heads; within 1e-5 + 1e-4 * |expected|. Calling the package's alibi_bias (the
    answer) is a verdict.
    """
    name = "Exercise 6.4 (alibi)"
    student_fn = without_calls(student_fn, name, [(alibi_bias, "alibi_bias")],
                               "fix the function as given")
    cases = in_turn(_bias_sizes((1, 4)), _bias_sizes((0, 0)), _bias_sizes((1, 4), (1, 1)),
                    _bias_sizes((0, 4)))
    compare_with_reference(student_fn, alibi_bias, cases, trials=6, name=name,
                           arg_names=("n_heads", "n_queries", "n_keys"))


# --- Exercise 6.1 ---------------------------------------------------------------------------

ALIBI_HEADS, ALIBI_SHARE = 8, 0.01


def alibi_reach(head: int) -> int:
    """The smallest distance at which ALiBi alone (equal raw scores) gives a key less than
    1% of the weight of the query's own position, for head `head` of 8."""
    bias = alibi_bias(ALIBI_HEADS, 1, 2000, dtype=torch.float64)[head, 0].flip(0)  # distance 0..
    return int((torch.exp(bias) < ALIBI_SHARE).nonzero()[0])


def check_reach_prediction_recorded(predicted_reach_2, predicted_reach_7) -> None:
    """Exercise 6.1, first step: both predictions are whole numbers. Says nothing about
    whether they are right: that comes after the measurement."""
    name = "Exercise 6.1 (prediction)"
    values = recorded(name, {"predicted_reach_2": predicted_reach_2,
                             "predicted_reach_7": predicted_reach_7})
    print(f"✅ {name}: recorded distances {values['predicted_reach_2']} and "
          f"{values['predicted_reach_7']}. Now measure.")


def check_reach_prediction(predicted_reach_2, predicted_reach_7, measured_reach_2,
                           measured_reach_7) -> None:
    """Exercise 6.1: for heads 2 and 7 of 8 ALiBi heads (slopes 2^-3 and 2^-8), the smallest
    distance between query and key at which the bias alone leaves the key less than 1% of
    the weight of the query's own position. Whole numbers (ints, NumPy integers or
    integer 0-d tensors), compared exactly; predictions and measurements alike."""
    name = "Exercise 6.1 (how far ALiBi looks)"
    values = recorded(name, {"predicted_reach_2": predicted_reach_2,
                             "predicted_reach_7": predicted_reach_7,
                             "measured_reach_2": measured_reach_2,
                             "measured_reach_7": measured_reach_7})
    truth = {head: alibi_reach(head) for head in (2, 7)}
    compare_prediction(name, {
        f"distance for head {head}": (values[f"predicted_reach_{head}"],
                                      values[f"measured_reach_{head}"], truth[head])
        for head in (2, 7)})
    print(f"✅ {name}: prediction and measurement both right (distance {truth[2]} for head "
          f"2, {truth[7]} for head 7).")


# --- Exercise 6.3 ---------------------------------------------------------------------------

def reference_rope_score(q: torch.Tensor, k: torch.Tensor, offset: int) -> torch.Tensor:
    """q . k after rotating q to position m and k to position n, for m - n = offset
    (here m = offset + 7 and n = 7; any pair gives the same score)."""
    n = 7
    q_m = apply_rope(q[None], torch.tensor([offset + n]))[0]
    k_n = apply_rope(k[None], torch.tensor([n]))[0]
    return q_m @ k_n


def _score_cases() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(63)
    shapes = [(2, 3), (4, 0), (8, 1), (8, -1), (16, 5), (16, -37), (64, 1000), (6, -2)]
    cases = []
    for d, offset in shapes:
        q = torch.randn(d, generator=generator, dtype=torch.float64)
        k = torch.randn(d, generator=generator, dtype=torch.float64)
        cases.append((q, k, offset))
    for _ in range(12):
        d = 2 * random_size(generator, 1, 16)
        q = torch.randn(d, generator=generator, dtype=torch.float64)
        k = torch.randn(d, generator=generator, dtype=torch.float64)
        cases.append((q, k, random_size(generator, -200, 200)))
    return cases


def check_rope_score(student_fn) -> None:
    """Exercise 6.3: q_m . k_n under RoPE as a function of q, k and the offset m - n alone.

    float64 q and k of widths 2 to 64, offsets 0, +-1, small, negative and 1,000, then 12
    random ones; a number (float, 0-d tensor or NumPy scalar) within 1e-6 + 1e-4 *
    |expected| of the score of the rotated vectors (loose enough for angles computed in
    float32; a sign error or a missing sine term misses by far more). The caller's q and k
    must come back unchanged. Calling the package's apply_rope is a verdict, as the
    exercise asks.
    """
    name = "Exercise 6.3 (rope_score)"
    student_fn = without_calls(student_fn, name, [(apply_rope, "apply_rope")],
                               "work on the pairs of q and k directly")
    cases = _score_cases()
    for q, k, offset in cases:
        case = f"with d = {q.shape[0]} and offset m - n = {offset}"
        before = (q.clone(), k.clone())
        got = call_student(student_fn, (q, k, offset), name, case=case)
        if not (torch.equal(before[0], q) and torch.equal(before[1], k)):
            changed = "`q`" if not torch.equal(before[0], q) else "`k`"
            raise CheckFailed(f"{name}: {case}, your function changed its {changed} in place; "
                              "the caller's tensors must be left as they were (work on a copy)")
        if torch.is_tensor(got) and got.numel() == 1 and got.dim() > 0:
            raise CheckFailed(f"{name}: {case}, return one number (a 0-d tensor or a float), "
                              f"got a tensor of shape {tuple(got.shape)}")
        score = as_number(got, whole=False)
        if score is None:
            raise CheckFailed(f"{name}: {case}, return one number, got {_describe(got)}")
        truth = float(reference_rope_score(q, k, offset))
        if not math.isfinite(score) or abs(score - truth) > 1e-6 + 1e-4 * abs(truth):
            raise CheckFailed(f"{name}: {case}: expected {truth:.10g}, got {score:.10g} "
                              f"(off by {score - truth:+.3g})")
    print(f"✅ {name}: right in all {len(cases)} cases.")


# --- Exercise 6.5 ---------------------------------------------------------------------------

ROPE_BASES, ROPE_WIDTH = (100, 10_000, 1_000_000), 64


def rope_half_distance(base: float) -> int:
    """The smallest offset at which the RoPE score of q = k = ones(64) falls below half its
    value at offset 0."""
    length = 2000
    ones = torch.ones(length, ROPE_WIDTH, dtype=torch.float64)
    rotated = apply_rope(ones, torch.arange(length), base=float(base))  # (L, d), k at 0..L-1
    scores = rotated @ torch.ones(ROPE_WIDTH, dtype=torch.float64)      # q at position 0
    return int((scores < scores[0] / 2).nonzero()[0])


def _as_bool(value) -> bool | None:
    """A Python bool from a bool, a NumPy bool or a 0-d boolean tensor; None otherwise."""
    if isinstance(value, bool):
        return value
    if torch.is_tensor(value):
        return bool(value) if value.dim() == 0 and value.dtype == torch.bool else None
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "kind", None) == "b" and getattr(value, "shape", None) == ():
        return bool(value)  # np.True_, np.False_
    return None


def check_rope_base_experiment(half_distance, slower_with_larger_base) -> None:
    """Exercise 6.5: for RoPE bases 100, 10,000 and 1,000,000, the smallest offset at which
    the score of q = k = ones(64) falls below half its value at offset 0
    (`half_distance`, a dict {base: whole number}, compared exactly), and the conclusion
    `slower_with_larger_base` (a bool, a NumPy bool or a 0-d boolean tensor), compared
    with what those numbers show."""
    name = "Exercise 6.5 (RoPE's base)"
    if half_distance is ... or slower_with_larger_base is ...:
        raise CheckFailed(f"{name}: replace the ... with your measurements and your conclusion")
    if not isinstance(half_distance, dict) or set(half_distance) != set(ROPE_BASES):
        raise CheckFailed(f"{name}: half_distance must be a dict with the keys "
                          f"{list(ROPE_BASES)} and nothing else")
    problems = []
    measured = {}
    for base in ROPE_BASES:
        value = as_number(half_distance[base], whole=True)
        if value is None:
            raise CheckFailed(f"{name}: half_distance[{base}] must be a whole number, got "
                              f"{half_distance[base]!r}")
        truth = rope_half_distance(base)
        measured[base] = value
        if value != truth:
            problems.append(f"half_distance[{base}] is {value}, off by {value - truth:+d}")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems) + " (the first offset at which "
                          "the score is below half of the score at offset 0)")
    conclusion = _as_bool(slower_with_larger_base)
    if conclusion is None:
        raise CheckFailed(f"{name}: slower_with_larger_base must be True or False, got "
                          f"{slower_with_larger_base!r}")
    slower_with_larger_base = conclusion
    values = [measured[base] for base in ROPE_BASES]
    shows = all(a < b for a, b in zip(values, values[1:]))
    if slower_with_larger_base != shows:
        raise CheckFailed(f"{name}: your measurements are right, but your conclusion "
                          f"({slower_with_larger_base}) is not what they show: the half "
                          f"distances are {values} for bases {list(ROPE_BASES)}")
    print(f"✅ {name}: measurements and conclusion right (half distances {values}).")


__all__ = ["check_reach_prediction_recorded", "check_reach_prediction", "check_rope",
           "check_rope_score", "check_alibi_bias", "check_rope_base_experiment",
           "alibi_reach", "reference_rope_score", "rope_half_distance"]
