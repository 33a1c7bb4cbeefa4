"""Checks for the exercises of chapter 11, "FlashAttention"."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from attnbook.bench.memory import _quiet_native_stderr
from attnbook.checks.core import (
    CheckFailed,
    call_student,
    compare_cases,
    verdict,
)
from attnbook.flash.reference import (
    flash_backward,
    flash_forward,
    forward_tile_step,
    tile_schedule,
)
from attnbook.ring import merge_partials

INF = float("-inf")


# ---------------------------------------------------------------- Exercise 11.1: one tile step

LOG2E, LN2 = math.log2(math.e), math.log(2.0)


def reference_tile_step(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None):
    """The package's step (flash.reference.forward_tile_step), in the kernel's base 2:
    scores t = qk_scale q kᵀ, row_max the running maximum of t, row_sum the sum of
    2^(t - row_max). Since 2^(t - m) = e^((t - m) ln 2), it is the natural step on the
    scores t ln 2, with the maximum converted back."""
    scores = (q_tile * (qk_scale * LN2)) @ k_tile.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, INF)
    new_acc, new_max, new_sum = forward_tile_step(acc.clone(), row_max * LN2, row_sum.clone(),
                                                  scores, v_tile)
    return new_acc, new_max * LOG2E, new_sum


def _state_after(q, k, v, qk_scale):
    """The running state (acc, row_max, row_sum), base 2, after an earlier tile k, v."""
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    row_max = torch.full(q.shape[:-1], INF, dtype=q.dtype)
    row_sum = torch.zeros(q.shape[:-1], dtype=q.dtype)
    return reference_tile_step(q, k, v, acc, row_max, row_sum, qk_scale)


def _tile_cases() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(1101)

    def randn(*shape, size=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * size

    cases = []
    # the first tile of a row: nothing seen yet
    q, k, v = randn(5, 4), randn(6, 4), randn(6, 3)
    start = (torch.zeros(5, 3, dtype=torch.float64), torch.full((5,), INF, dtype=torch.float64),
             torch.zeros(5, dtype=torch.float64))
    cases.append(("on the first tile of 5 rows (row_max -inf, row_sum 0, acc 0), 6 keys, "
                  "2-D tiles", (q, k, v, *start, 0.5, None)))
    # a later tile whose scores are larger than everything before: the old state shrinks
    old = _state_after(q, randn(7, 4, size=0.1), randn(7, 3), 0.5)
    cases.append(("on a second tile whose scores exceed the first tile's (the running "
                  "maximum grows)", (q * 3, k, v, *old, 0.5, None)))
    # a later tile whose scores are smaller: the old maximum stays
    old = _state_after(q * 3, randn(7, 4), randn(7, 3), 0.5)
    cases.append(("on a second tile whose scores are below the first tile's (the running "
                  "maximum stays)", (q, k * 0.1, v, *old, 0.5, None)))
    # 4-D tiles on the diagonal of a causal problem, with an explicit scale
    q4, k4, v4 = randn(2, 3, 4, 8), randn(2, 3, 4, 8), randn(2, 3, 4, 5)
    diagonal = torch.ones(4, 4, dtype=torch.bool).tril()
    start4 = (torch.zeros(2, 3, 4, 5, dtype=torch.float64),
              torch.full((2, 3, 4), INF, dtype=torch.float64),
              torch.zeros(2, 3, 4, dtype=torch.float64))
    cases.append(("on a first 4-D tile (2, 3, 4, 8) on the causal diagonal (mask (4, 4), "
                  "True = visible), qk_scale 0.2", (q4, k4, v4, *start4, 0.2, diagonal)))
    kernel_scale = LOG2E / math.sqrt(8)  # what the kernel passes: log2(e) / sqrt(d)
    old4 = _state_after(q4, randn(2, 3, 6, 8), randn(2, 3, 6, 5), kernel_scale)
    cases.append(("on a second 4-D tile on the diagonal after a full tile, qk_scale = "
                  "log2(e) / sqrt(8)", (q4, k4, v4, *old4, kernel_scale, diagonal)))
    # rows that see no key of this tile: one fresh (stays empty, no NaN), one seen before
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0] = False
    mask[2] = False
    q3, k3, v3 = randn(3, 4), randn(4, 4), randn(4, 2)
    acc3 = torch.zeros(3, 2, dtype=torch.float64)
    acc3[2] = randn(2)
    max3 = torch.tensor([INF, INF, 0.7], dtype=torch.float64)
    sum3 = torch.tensor([0.0, 0.0, 1.6], dtype=torch.float64)
    cases.append(("with a mask hiding every key of this tile from row 0 (which has seen "
                  "nothing yet: it must stay row_max -inf, row_sum 0, acc 0, no NaN) and "
                  "from row 2 (which has: its state must not change)",
                  (q3, k3, v3, acc3, max3, sum3, 0.5, mask)))
    # large logits: 2^t without subtracting the maximum overflows
    fresh = (torch.zeros(4, 3, dtype=torch.float64), torch.full((4,), INF, dtype=torch.float64),
             torch.zeros(4, dtype=torch.float64))
    cases.append(("with scores in the thousands on a first tile (2^t overflows even float64 "
                  "unless the maximum is subtracted first)",
                  (randn(4, 2, size=40), randn(5, 2, size=40), randn(5, 3), *fresh, 1.0, None)))
    return cases


def check_tile_step(student_fn) -> None:
    """Exercise 11.1: one step of the tiled forward pass, in base 2 as the kernel does it.

    `tile_step(q_tile, k_tile, v_tile, acc, row_max, row_sum, qk_scale, mask=None)` returns
    the new (acc, row_max, row_sum), where the scores are t = qk_scale q kᵀ (qk_scale =
    scale log2 e), row_max is the running maximum of t and row_sum the sum of
    2^(t - row_max). Fixed cases: a first tile (row_max -inf), a second tile whose maximum
    is above / below the old one, 2-D and 4-D tiles, dv != d, qk_scale of 1/sqrt(d) and
    others, a boolean diagonal mask, rows with no visible key (fresh and not), scores
    around 1000; then folding tiles of a random problem one after another must give plain
    attention (acc / row_sum) and its natural log-sum-exp ((row_max + log2 row_sum) ln 2).
    float64, within 1e-9 + 1e-7 * |expected|; -inf compares equal to -inf. The caller's
    tensors must not change.
    """
    name = "Exercise 11.1 (tile_step)"
    arg_names = ("q_tile", "k_tile", "v_tile", "acc", "row_max", "row_sum", "qk_scale",
                 "mask")
    items = ("acc", "row_max", "row_sum")

    def returns_three(*args):
        result = student_fn(*args)
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise CheckFailed(f"{name}: return the tuple (acc, row_max, row_sum), got "
                              f"{type(result).__name__}")
        return tuple(result)

    cases = _tile_cases()
    compare_cases(returns_three, reference_tile_step, cases, name, atol=1e-9, rtol=1e-7,
                  arg_names=arg_names, item_names=items, announce=False)
    # Folding: three tiles of keys, then acc / row_sum is attention.
    g = torch.Generator().manual_seed(1102)
    q, k, v = (torch.randn(2, 9, 4, generator=g, dtype=torch.float64) for _ in range(3))
    acc = torch.zeros(2, 9, 4, dtype=torch.float64)
    row_max = torch.full((2, 9), INF, dtype=torch.float64)
    row_sum = torch.zeros(2, 9, dtype=torch.float64)
    for start in (0, 4, 8):  # tiles of 4, 4 and 1 keys
        acc, row_max, row_sum = call_student(
            returns_three, (q, k[:, start:start + 4], v[:, start:start + 4], acc, row_max,
                            row_sum, 0.5 * LOG2E), name, "folding three tiles of keys in turn")
    scores = 0.5 * q @ k.transpose(-2, -1)
    problem = verdict(acc / row_sum[..., None], torch.softmax(scores, dim=-1) @ v, 1e-9, 1e-7)
    if problem:
        raise CheckFailed(f"{name}: after folding three tiles of keys (4, 4 and 1) into the "
                          f"state with qk_scale = 0.5 log2(e), acc / row_sum is not "
                          f"attention's output with scale 0.5: {problem}")
    lse = (row_max + torch.log2(row_sum)) * LN2
    problem = verdict(lse, torch.logsumexp(scores, dim=-1), 1e-9, 1e-7)
    if problem:
        raise CheckFailed(f"{name}: after folding three tiles, (row_max + log2(row_sum)) ln 2 "
                          f"is not the natural log-sum-exp of the scores: {problem}")
    print(f"✅ {name}: correct in all {len(cases)} cases, and folding three tiles gives "
          "attention's output and its log-sum-exp.")


# ---------------------------------------------------------------- Exercise 11.2: merge two parts

def _merge_cases() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(1103)
    q = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 3, 19, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 19, 5, generator=g, dtype=torch.float64)
    out_a, lse_a = flash_forward(q, k[:, :, :12], v[:, :, :12])
    out_b, lse_b = flash_forward(q, k[:, :, 12:], v[:, :, 12:])
    cases = [("with the two parts of one attention (4-D, keys 0-11 and 12-18)",
              (out_a, lse_a, out_b, lse_b))]
    x = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    la = torch.randn(4, 6, generator=g, dtype=torch.float64)
    cases.append(("with 3-D outputs (4, 6, 3) and log-sum-exps of either sign",
                  (x, la, y, la.flip(-1) - 1)))
    cases.append(("with log-sum-exps near 1000 in one part and 0 in the other (exp(1000) "
                  "overflows)", (x, la + 1000, y, la)))
    empty_b = torch.full((4, 6), INF, dtype=torch.float64)
    cases.append(("when part b is empty for every row (lse_b = -inf, out_b = 0): the result "
                  "is part a", (x, la, torch.zeros_like(y), empty_b)))
    lse_a2, lse_b2 = la.clone(), la.clone() - 2
    lse_a2[1], lse_b2[1] = INF, INF  # row 1: neither part holds a key
    out_a2, out_b2 = x.clone(), y.clone()
    out_a2[1], out_b2[1] = 0.0, 0.0
    cases.append(("when both parts are empty for row 1 (both lse -inf, outputs 0): its "
                  "output is 0 and its lse -inf, with no NaN", (out_a2, lse_a2, out_b2, lse_b2)))
    return cases


def check_merge_partials(student_fn) -> None:
    """Exercise 11.2: merge_partials(out_a, lse_a, out_b, lse_b) -> (out, lse), attention
    over the keys of both parts. out (..., N, dv), lse (..., N); 3-D and 4-D, two real
    halves of one attention, log-sum-exps near 1000, an empty part (lse -inf, output 0),
    rows where both parts are empty (output 0, lse -inf, no NaN). float64, within
    1e-9 + 1e-7 * |expected|. The caller's tensors must not change.
    """
    name = "Exercise 11.2 (merge_partials)"

    def returns_two(*args):
        result = student_fn(*args)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise CheckFailed(f"{name}: return the tuple (out, lse), got "
                              f"{type(result).__name__}")
        return tuple(result)

    compare_cases(returns_two, merge_partials, _merge_cases(), name, atol=1e-9, rtol=1e-7,
                  arg_names=("out_a", "lse_a", "out_b", "lse_b"), item_names=("out", "lse"))


# ---------------------------------------------------------------- Exercise 11.3: causal backward

def reference_tiled_backward(q, k, v, out, lse, grad_out, causal=False, block=16):
    return flash_backward(q, k, v, out, lse, grad_out, causal, block_q=block, block_k=block)


def _backward_case(seed: int, n_q: int, n_k: int, causal: bool, block: int, heads: int = 2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, n_q, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, heads, n_k, 8, generator=g, dtype=torch.float64)
    v = torch.randn(1, heads, n_k, 8, generator=g, dtype=torch.float64)
    grad_out = torch.randn(1, heads, n_q, 8, generator=g, dtype=torch.float64)
    out, lse = flash_forward(q, k, v, causal)
    kind = "causal" if causal else "not causal"
    return (f"with Nq = {n_q}, Nk = {n_k}, {kind}, block = {block}",
            (q, k, v, out, lse, grad_out, causal, block))


def check_tiled_backward(student_fn) -> None:
    """Exercise 11.3: the tiled backward pass with a working causal flag.

    q (B, H, Nq, d), k and v (B, H, Nk, d); causal is bottom-right aligned (query i sees
    key j <= i + Nk - Nq). Cases: not causal; causal with the tiles' diagonal inside a
    block; an odd length; fewer queries than keys; one block larger than the sequence;
    Nk - Nq = 17, one more than a multiple of the block (a tile whose only visible key is
    its first, for its last query: a skip bound off by one drops it).
    (dq, dk, dv) in float64 within 1e-8 + 1e-6 * |expected|, against the package's
    flash_backward. The caller's tensors must not change.
    """
    name = "Exercise 11.3 (tiled_backward)"
    cases = [_backward_case(1, 32, 32, False, 16), _backward_case(2, 48, 48, True, 16),
             _backward_case(3, 37, 37, True, 8), _backward_case(4, 20, 45, True, 16),
             _backward_case(5, 10, 10, True, 64), _backward_case(6, 20, 37, True, 16)]
    compare_cases(student_fn, reference_tiled_backward, cases, name, atol=1e-8, rtol=1e-6,
                  arg_names=("q", "k", "v", "out", "lse", "grad_out", "causal", "block"),
                  item_names=("dq", "dk", "dv"))


# ---------------------------------------------------------------- Exercise 11.4: count the tiles

TILE_PROBLEM = {"n_queries": 1000, "n_keys": 1300, "block_q": 128, "block_k": 128,
                "causal": True}


def _tile_truth() -> tuple[int, int]:
    tiles = tile_schedule(**TILE_PROBLEM)
    return len(tiles), sum(masked for *_, masked in tiles)


def _count(value, name: str, what: str) -> int:
    if value is ...:
        raise CheckFailed(f"{name}: replace the ... with {what}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise CheckFailed(f"{name}: {what} must be a whole number of tiles (an int), got "
                          f"{value!r}")
    return int(value)


def check_tiles_predicted(predicted_tiles, predicted_masked) -> None:
    """Exercise 11.4, first step: two whole numbers written down; not yet judged."""
    name = "Exercise 11.4 (prediction)"
    tiles = _count(predicted_tiles, name, "your prediction of the tiles computed")
    masked = _count(predicted_masked, name, "your prediction of the tiles masked")
    if masked > tiles:
        raise CheckFailed(f"{name}: {masked} masked tiles cannot be more than the {tiles} "
                          "computed")
    print(f"✅ {name}: recorded {tiles} tiles computed, {masked} of them masked. Now measure.")


def count_ops(fn: Callable[[], object]) -> dict[str, int]:
    """How many times `fn()` calls each PyTorch operator (profiled on the CPU), by name
    ("aten::bmm": 12, ...)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    with _quiet_native_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_native_stderr():
            prof.stop()
    return {event.key: event.count for event in prof.key_averages()}


def check_tile_count(predicted_tiles, predicted_masked, measured_tiles, measured_masked) -> None:
    """Exercise 11.4: the tiles the causal forward pass computes for Nq = 1000, Nk = 1300,
    blocks of 128 x 128, and how many of them need a mask; the prediction and the
    measurement are each compared with tile_schedule (exact whole numbers)."""
    name = "Exercise 11.4"
    tiles, masked = _tile_truth()
    got = {"tiles computed": (_count(measured_tiles, name, "your measurement of the tiles"),
                              tiles),
           "masked tiles": (_count(measured_masked, name, "your measurement of the masked "
                                                          "tiles"), masked)}
    for what, (value, truth) in got.items():
        if value != truth:
            raise CheckFailed(f"{name}: your measurement of the {what}, {value}, is off by "
                              f"{value - truth:+d}: count the products per tile in "
                              "forward_tile_step and flash_forward (Q Kᵀ and P V), and the "
                              "masked_fill_ calls per masked tile")
    hints = {"tiles computed": "a query block ending at row r visits the key blocks up to key "
                               "r + (Nk - Nq), and the last key block is short",
             "masked tiles": "the diagonal, shifted by Nk - Nq = 300, is not aligned with the "
                             "blocks: it crosses two key blocks in most query blocks"}
    for what, value, truth in [("tiles computed", predicted_tiles, tiles),
                               ("masked tiles", predicted_masked, masked)]:
        value = _count(value, name, f"your prediction of the {what}")
        if value != truth:
            raise CheckFailed(f"{name}: the measurement is right, but your prediction of the "
                              f"{what}, {value}, is off by {value - truth:+d} "
                              f"({abs(value - truth) / truth:.0%}); {hints[what]}")
    print(f"✅ {name}: prediction and measurement agree: {tiles} tiles of "
          f"{len(tile_schedule(1000, 1300, 128, 128))} computed, {masked} of them masked.")


__all__ = ["check_tile_step", "check_merge_partials", "check_tiled_backward",
           "check_tiles_predicted", "check_tile_count", "count_ops", "TILE_PROBLEM"]
