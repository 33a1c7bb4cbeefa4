"""Mutation tests of the chapter 12 checks (12.1-12.6): realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.checks.ch12 import (
    WORK_PROBLEM,
    check_block_plan,
    check_causal_linear_recurrent,
    check_chunked_linear,
    check_ring_simulation,
    check_window_pairs,
    check_work_per_rank,
    check_work_predicted,
)
from attnbook.checks.core import CheckFailed
from attnbook.flash.reference import flash_forward
from attnbook.linear_attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
    elu_feature_map,
)
from attnbook.ring import merge_partials, ring_block_plan, work_per_rank

# --- 12.1 scored pairs of a sliding window --------------------------------------------------


def pairs_closed_form(n, window):
    w = min(n, window)
    return n * w - w * (w - 1) // 2


def pairs_by_counting(n, window):
    """Correct, written differently: row by row."""
    return sum(min(i + 1, window) for i in range(n))


@pytest.mark.parametrize("student", [pairs_closed_form, pairs_by_counting])
def test_12_1_passes_correct_answers(student, capsys):
    check_window_pairs(student)
    assert "✅ Exercise 12.1" in capsys.readouterr().out


def pairs_ignores_long_window(n, window):
    return n * window - window * (window - 1) // 2  # forgets window > n


def pairs_n_times_w(n, window):
    return n * min(n, window)  # forgets the first rows see fewer keys


def pairs_float(n, window):
    w = min(n, window)
    return n * w - w * (w - 1) / 2


def pairs_off_by_one(n, window):
    w = min(n, window)
    return n * w - w * (w + 1) // 2  # counts i - window <= j < i


@pytest.mark.parametrize("student,verdict", [
    (pairs_ignores_long_window, "with n = 1, window = 5: expected 1, got -5 (a window longer"),
    (pairs_n_times_w, "with n = 5, window = 2: expected 9, got 10"),
    (pairs_float, "the value is right but a float"),
    (pairs_off_by_one, "with n = 1, window = 1: expected 1, got 0"),
])
def test_12_1_catches_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match="Exercise 12.1") as error:
        check_window_pairs(student)
    assert verdict in str(error.value)


# --- 12.2 the recurrence ----------------------------------------------------------------------


def recurrent_solution(q, k, v):
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], q.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], q.shape[-1], dtype=q.dtype)
    outs = []
    for t in range(q.shape[-2]):
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]
        z = z + phi_k[..., t, :]
        num = torch.einsum("...i,...ij->...j", phi_q[..., t, :], state)
        outs.append(num / (phi_q[..., t, :] * z).sum(-1, keepdim=True))
    return torch.stack(outs, dim=-2)


def recurrent_by_cumsum(q, k, v):
    """Correct, written differently: the running sums as cumulative sums over tokens."""
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    states = torch.cumsum(phi_k[..., :, None] * v[..., None, :], dim=-3)  # (..., N, d, dv)
    zs = torch.cumsum(phi_k, dim=-2)
    num = (phi_q[..., None] * states).sum(-2)
    return num / (phi_q * zs).sum(-1, keepdim=True)


@pytest.mark.parametrize("student", [recurrent_solution, recurrent_by_cumsum])
def test_12_2_passes_correct_answers(student, capsys):
    check_causal_linear_recurrent(student)
    assert capsys.readouterr().out.count("✅ Exercise 12.2") == 1  # one line


def recurrent_state_in_float64(q, k, v):
    """Right values, but the state is hard-coded float64: float32 inputs give float64."""
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], q.shape[-1], v.shape[-1], dtype=torch.float64)
    z = torch.zeros(*q.shape[:-2], q.shape[-1], dtype=torch.float64)
    outs = []
    for t in range(q.shape[-2]):
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]
        z = z + phi_k[..., t, :]
        num = torch.einsum("...i,...ij->...j", phi_q[..., t, :].double(), state)
        outs.append(num / (phi_q[..., t, :] * z).sum(-1, keepdim=True))
    return torch.stack(outs, dim=-2)


def recurrent_by_the_package(q, k, v):
    return causal_linear_attention_recurrent(q, k, v)


def recurrent_by_the_parallel_form(q, k, v):
    return causal_linear_attention_parallel(q, k, v)


def recurrent_reads_before_adding(q, k, v):
    """Reads the state before token t joins it: query t misses its own key."""
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], q.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], q.shape[-1], dtype=q.dtype)
    outs = []
    for t in range(q.shape[-2]):
        num = torch.einsum("...i,...ij->...j", phi_q[..., t, :], state)
        den = (phi_q[..., t, :] * z).sum(-1, keepdim=True)
        outs.append(num / den)
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]
        z = z + phi_k[..., t, :]
    return torch.stack(outs, dim=-2)


def recurrent_without_normaliser(q, k, v):
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], q.shape[-1], v.shape[-1], dtype=q.dtype)
    outs = []
    for t in range(q.shape[-2]):
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]
        outs.append(torch.einsum("...i,...ij->...j", phi_q[..., t, :], state))
    return torch.stack(outs, dim=-2)


def recurrent_in_place(q, k, v):
    q.mul_(1.0)  # harmless, but then:
    k.copy_(elu_feature_map(k))  # features computed into the caller's tensor
    return recurrent_solution(q, torch.log(k).clamp(max=0) + torch.relu(k - 1), v)


def recurrent_one_head(q, k, v):
    """Works only for (N, d) per batch: uses q.shape[1] as the length."""
    out = recurrent_solution(q, k, v)
    return out if q.dim() == 3 else out[..., :1, :, :].expand_as(out).clone()


@pytest.mark.parametrize("student,verdict", [
    (recurrent_reads_before_adding, "NaN"),
    (recurrent_without_normaliser, "with one head, 3-D inputs (1, 7, 4), d = dv: 28 of 28"),
    (recurrent_in_place, "changed its `k` in place"),
    (recurrent_one_head, "with 4-D inputs (2, 3, 9, 4)"),
    (recurrent_state_in_float64, "in float32, (1, 2, 9, 4) (the state must be float32 too)"),
    (recurrent_by_the_package, "your function calls attnbook.linear_attention."
                               "causal_linear_attention_recurrent, which the exercise asks"),
    (recurrent_by_the_parallel_form, "calls attnbook.linear_attention."
                                     "causal_linear_attention_parallel"),
])
def test_12_2_catches_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match="Exercise 12.2") as error:
        check_causal_linear_recurrent(student)
    assert verdict in str(error.value)


# --- 12.3 the chunked form --------------------------------------------------------------------


def chunked_as_given(q, k, v, chunk_size):
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], 1, phi_k.shape[-1], dtype=q.dtype)
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        q_c = phi_q[..., start:start + chunk_size, :]
        k_c = phi_k[..., start:start + chunk_size, :]
        v_c = v[..., start:start + chunk_size, :]
        state = state + k_c.transpose(-2, -1) @ v_c
        z = z + k_c.sum(dim=-2, keepdim=True)
        inside = (q_c @ k_c.transpose(-2, -1)).tril()
        numerator = q_c @ state + inside @ v_c
        denominator = (q_c * z).sum(dim=-1) + inside.sum(dim=-1)
        outputs.append(numerator / denominator[..., None])
    return torch.cat(outputs, dim=-2)


def chunked_fixed(q, k, v, chunk_size):
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], 1, phi_k.shape[-1], dtype=q.dtype)
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        q_c = phi_q[..., start:start + chunk_size, :]
        k_c = phi_k[..., start:start + chunk_size, :]
        v_c = v[..., start:start + chunk_size, :]
        inside = (q_c @ k_c.transpose(-2, -1)).tril()
        numerator = q_c @ state + inside @ v_c
        denominator = (q_c * z).sum(dim=-1) + inside.sum(dim=-1)
        outputs.append(numerator / denominator[..., None])
        state = state + k_c.transpose(-2, -1) @ v_c
        z = z + k_c.sum(dim=-2, keepdim=True)
    return torch.cat(outputs, dim=-2)


def chunked_by_appended_ones(q, k, v, chunk_size):
    """Correct, written differently: a column of ones appended to v carries the normaliser
    through the same products as the values; intra-chunk mask by masked_fill."""
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    state = torch.zeros(*q.shape[:-2], phi_k.shape[-1], v1.shape[-1], dtype=q.dtype)
    outs = []
    n = q.shape[-2]
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        c = sl.stop - sl.start
        sim = phi_q[..., sl, :] @ phi_k[..., sl, :].transpose(-2, -1)
        sim = sim.masked_fill(~torch.ones(c, c, dtype=torch.bool).tril(), 0.0)
        both = phi_q[..., sl, :] @ state + sim @ v1[..., sl, :]
        outs.append(both[..., :-1] / both[..., -1:])
        state = state + phi_k[..., sl, :].transpose(-2, -1) @ v1[..., sl, :]
    return torch.cat(outs, dim=-2)


@pytest.mark.parametrize("student", [chunked_fixed, chunked_by_appended_ones])
def test_12_3_passes_correct_answers(student, capsys):
    check_chunked_linear(student)
    assert capsys.readouterr().out.count("✅ Exercise 12.3") == 1  # one line


def chunked_without_old_normaliser(q, k, v, chunk_size):
    """Fixes the order but divides by the chunk's own sum only (forgets z)."""
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1], dtype=q.dtype)
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        q_c = phi_q[..., start:start + chunk_size, :]
        k_c = phi_k[..., start:start + chunk_size, :]
        v_c = v[..., start:start + chunk_size, :]
        inside = (q_c @ k_c.transpose(-2, -1)).tril()
        outputs.append((q_c @ state + inside @ v_c) / inside.sum(dim=-1)[..., None])
        state = state + k_c.transpose(-2, -1) @ v_c
    return torch.cat(outputs, dim=-2)


def chunked_without_tril(q, k, v, chunk_size):
    """Fixes the order but forgets the causal mask inside the chunk."""
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    state = torch.zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1], dtype=q.dtype)
    z = torch.zeros(*q.shape[:-2], 1, phi_k.shape[-1], dtype=q.dtype)
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        q_c = phi_q[..., start:start + chunk_size, :]
        k_c = phi_k[..., start:start + chunk_size, :]
        v_c = v[..., start:start + chunk_size, :]
        inside = q_c @ k_c.transpose(-2, -1)
        numerator = q_c @ state + inside @ v_c
        outputs.append(numerator / ((q_c * z).sum(dim=-1) + inside.sum(dim=-1))[..., None])
        state = state + k_c.transpose(-2, -1) @ v_c
        z = z + k_c.sum(dim=-2, keepdim=True)
    return torch.cat(outputs, dim=-2)


def chunked_drops_short_chunk(q, k, v, chunk_size):
    n = q.shape[-2] // chunk_size * chunk_size or q.shape[-2]
    out = chunked_fixed(q[..., :n, :], k[..., :n, :], v[..., :n, :], chunk_size)
    return torch.cat([out, torch.zeros_like(v[..., n:, :])], dim=-2)


@pytest.mark.parametrize("student,verdict", [
    (chunked_as_given, "with N = 12 in chunks of 4 (3 whole chunks)"),
    (chunked_without_old_normaliser, "with N = 12 in chunks of 4"),
    (chunked_without_tril, "with N = 12 in chunks of 4"),
    (chunked_drops_short_chunk, "with N = 13 in chunks of 5 (the last chunk is short)"),
    (lambda q, k, v, c: causal_linear_attention_chunked(q, k, v, c),
     "calls attnbook.linear_attention.causal_linear_attention_chunked"),
    (lambda q, k, v, c: causal_linear_attention_parallel(q, k, v),
     "calls attnbook.linear_attention.causal_linear_attention_parallel"),
])
def test_12_3_catches_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match="Exercise 12.3") as error:
        check_chunked_linear(student)
    assert verdict in str(error.value)


# --- 12.4 the block plan -----------------------------------------------------------------


def plan_solution(rank, step, world_size, n_local, layout, causal):
    """The solution notebook's answer (the same blocks as the package's ring_block_plan)."""
    src = (rank - step) % world_size
    if not causal:
        return [(0, n_local, 0, n_local, False)]
    if src == rank:
        return [(0, n_local, 0, n_local, True)]
    if layout == "contiguous":
        return [(0, n_local, 0, n_local, False)] if src < rank else []
    half = n_local // 2
    if src < rank:
        return [(0, n_local, 0, half, False)]
    return [(half, n_local, 0, n_local, False)]


def plan_per_chunk(rank, step, world_size, n_local, layout, causal):
    """Correct, written differently: one block per pair of chunks, the diagonal ones
    causal, the hidden ones left out."""
    if layout == "contiguous":
        mine, theirs = [rank], [(rank - step) % world_size]
        size = n_local
    else:
        src = (rank - step) % world_size
        mine, theirs = [rank, 2 * world_size - 1 - rank], [src, 2 * world_size - 1 - src]
        size = n_local // 2
    blocks = []
    for i, qc in enumerate(mine):
        for j, kc in enumerate(theirs):
            if causal and kc > qc:
                continue
            blocks.append((i * size, (i + 1) * size, j * size, (j + 1) * size,
                           causal and kc == qc))
    return blocks


@pytest.mark.parametrize("student", [plan_solution, plan_per_chunk])
def test_12_4_passes_correct_answers(student, capsys):
    check_block_plan(student)
    assert "✅ Exercise 12.4" in capsys.readouterr().out


def plan_wrong_direction(rank, step, world_size, n_local, layout, causal):
    """Thinks the block at step s comes from rank r + s (the ring turns the other way)."""
    src = (rank + step) % world_size
    return plan_solution(rank, (rank - src) % world_size, world_size, n_local, layout,
                         causal)


def plan_contiguous_for_zigzag(rank, step, world_size, n_local, layout, causal):
    """Ignores the layout: reasons as if the blocks were contiguous."""
    return plan_solution(rank, step, world_size, n_local, "contiguous", causal)


def plan_zigzag_wrong_half(rank, step, world_size, n_local, layout, causal):
    """When the block comes from a later rank, lets the EARLY query chunk see it."""
    src = (rank - step) % world_size
    if causal and layout == "zigzag" and src > rank:
        return [(0, n_local // 2, 0, n_local, False)]
    return plan_solution(rank, step, world_size, n_local, layout, causal)


def plan_diagonal_unmasked(rank, step, world_size, n_local, layout, causal):
    return [(q0, q1, k0, k1, False) for q0, q1, k0, k1, _ in
            plan_solution(rank, step, world_size, n_local, layout, causal)]


def plan_ranges_inclusive(rank, step, world_size, n_local, layout, causal):
    return [(q0, q1 - 1, k0, k1 - 1, m) for q0, q1, k0, k1, m in
            plan_solution(rank, step, world_size, n_local, layout, causal)]


@pytest.mark.parametrize("student, message", [
    # with W = 2 the two directions agree: the mistake shows from W = 3
    (plan_wrong_direction, "W = 3, contiguous, causal, n_local = 4, rank 1 at step 2 "
                           "(holding the keys of rank 2): the block (0, 4, 0, 4, False) scores "
                           "query 4 against key 8, which lies in its future"),
    (plan_contiguous_for_zigzag, "W = 2, zigzag, causal, n_local = 4, rank 1 at step 1 "
                                 "(holding the keys of rank 0): the block (0, 4, 0, 4, False) "
                                 "scores query 2 against key 6, which lies in its future"),
    (plan_zigzag_wrong_half, "W = 2, zigzag, causal, n_local = 4, rank 0 at step 1 (holding "
                             "the keys of rank 1): the block (0, 2, 0, 4, False) scores "
                             "query 0 against key 2"),
    (plan_diagonal_unmasked, "W = 1, contiguous, causal, n_local = 4, rank 0 at step 0 "
                             "(holding the keys of rank 0): the block (0, 4, 0, 4, False) "
                             "scores query 0 against key 1"),
    (plan_ranges_inclusive, "W = 1, contiguous, not causal, n_local = 4: query 0 never sees "
                            "key 3 (7 visible pairs are missing); rank 0 holds that query and "
                            "should score it at step 0"),
])
def test_12_4_catches_wrong_plans(student, message):
    with pytest.raises(CheckFailed) as caught:
        check_block_plan(student)
    assert str(caught.value).startswith("Exercise 12.4 (block_plan): " + message), \
        str(caught.value)


def test_12_4_catches_twice_counted_pairs_and_bad_types():
    def twice(rank, step, world_size, n_local, layout, causal):
        plan = plan_solution(rank, step, world_size, n_local, layout, causal)
        return plan + plan[:1]
    with pytest.raises(CheckFailed, match="query 0 against key 0 is scored 2 times"):
        check_block_plan(twice)
    with pytest.raises(CheckFailed, match=r"return a list of \(q_start, q_stop, k_start, "
                                          r"k_stop, masked\) tuples"):
        check_block_plan(lambda *args: None)
    with pytest.raises(CheckFailed, match="masked True or False"):
        check_block_plan(lambda *args: [(0, 1, 0, 1, "yes")])
    with pytest.raises(CheckFailed, match="calls attnbook.ring.ring_block_plan"):
        check_block_plan(ring_block_plan)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_block_plan(lambda *args: (_ for _ in ()).throw(NotImplementedError))


# --- 12.5 work per rank ------------------------------------------------------------------

N, W = WORK_PROBLEM["n"], WORK_PROBLEM["world_size"]
PLAIN = work_per_rank(N, W, "contiguous")
ZIGZAG = work_per_rank(N, W, "zigzag")


def test_12_5_records_then_accepts_right_answers(capsys):
    check_work_predicted(6.3, 132)
    check_work_per_rank(6.3, 132, PLAIN, ZIGZAG)  # 228 / 36 = 6.33: 6.3 is within 1%
    check_work_per_rank(228 / 36, torch.tensor(132), PLAIN, ZIGZAG)  # a 0-d tensor too
    out = capsys.readouterr().out
    assert "✅ Exercise 12.5 (prediction): recorded max/min work 6.3 (contiguous) and 132 " \
           "pairs per rank (zigzag)" in out
    assert "✅ Exercise 12.5: prediction and measurement agree: max/min work 6.33 " \
           "contiguous; 132 pairs on every zigzag rank." in out


@pytest.mark.parametrize("args, message", [
    # 2W - 1 is the limit for long blocks; with blocks of 8 the triangles weigh
    ((2 * W - 1, 132, PLAIN, ZIGZAG), "your predicted max/min ratio of the contiguous split, "
                                      "7, is off by +0.67 (11%)"),
    ((W, 132, PLAIN, ZIGZAG), "your predicted max/min ratio of the contiguous split, 4, is "
                              "off by -2.33 (37%)"),
    # the zigzag triangles: c^2 / 2 instead of c (c + 1) / 2
    ((6.33, 7 * 16 + 16, PLAIN, ZIGZAG), "your predicted pairs per rank of the zigzag split, "
                                         "128, are off by -4"),
    # the whole causal count divided evenly, but forgetting the diagonal: N^2 / 2 / W
    ((7, 128, PLAIN, ZIGZAG), "ratio of the contiguous split, 7, is off by +0.67 (11%): "),
    ((6.33, 132, PLAIN[::-1], ZIGZAG), "your measurement for the contiguous split says rank 0 "
                                       f"scored {PLAIN[3]} pairs"),
    ((6.33, 132, PLAIN, [z * 2 for z in ZIGZAG]), "your measurement for the zigzag split says "
                                                  "rank 0"),
    ((6.33, 132, PLAIN, sum(ZIGZAG)), "measured_zigzag must be a list of 4 whole numbers"),
    ((..., 132, PLAIN, ZIGZAG), "replace the ... in `predicted_plain`"),
])
def test_12_5_says_which_number_is_off(args, message):
    with pytest.raises(CheckFailed) as caught:
        check_work_per_rank(*args)
    assert message in str(caught.value), str(caught.value)


def test_12_5_both_wrong_predictions_are_named_in_one_line():
    with pytest.raises(CheckFailed) as caught:
        check_work_per_rank(7, 128, PLAIN, ZIGZAG)
    assert "contiguous split, 7" in str(caught.value) and "zigzag split, 128" in str(caught.value)


def test_12_5_prediction_must_be_a_ratio_and_a_whole_number():
    with pytest.raises(CheckFailed, match="a number >= 1"):
        check_work_predicted(0.5, 132)
    with pytest.raises(CheckFailed, match="replace the ..."):
        check_work_predicted(6.3, ...)
    with pytest.raises(CheckFailed, match="must be a whole number"):
        check_work_predicted(6.3, 1.0 / 3)


# --- 12.6 the merge without rescaling ----------------------------------------------------

def simulated(merge):
    def simulated_ring(q, k, v, world_size, causal=False):
        n_local = q.shape[2] // world_size
        outs, lses = [], []
        for rank in range(world_size):
            rows = slice(rank * n_local, (rank + 1) * n_local)
            out = torch.zeros(*q[:, :, rows].shape[:3], v.shape[-1], dtype=q.dtype)
            lse = torch.full(q[:, :, rows].shape[:3], -math.inf, dtype=q.dtype)
            for step in range(world_size):
                src = (rank - step) % world_size
                if causal and src > rank:
                    continue
                keys = slice(src * n_local, (src + 1) * n_local)
                part_out, part_lse = flash_forward(q[:, :, rows], k[:, :, keys],
                                                   v[:, :, keys], causal and src == rank)
                out, lse = merge(out, lse, part_out, part_lse)
            outs.append(out)
            lses.append(lse)
        return torch.cat(outs, dim=2), torch.cat(lses, dim=2)
    return simulated_ring


def merge_fixed(out, lse, part_out, part_lse):
    """The fix, written out (merge_partials itself is refused by the check)."""
    new_lse = torch.logaddexp(lse, part_lse)
    return (torch.exp(lse - new_lse)[..., None] * out
            + torch.exp(part_lse - new_lse)[..., None] * part_out), new_lse


def merge_as_given(out, lse, part_out, part_lse):
    new_lse = torch.logaddexp(lse, part_lse)
    return out + torch.exp(part_lse - new_lse)[..., None] * part_out, new_lse


def merge_exp_directly(out, lse, part_out, part_lse):
    """Weights e^lse, normalised afterwards: overflows for large scores."""
    total = torch.exp(lse) + torch.exp(part_lse)
    new = (torch.exp(lse)[..., None] * out + torch.exp(part_lse)[..., None] * part_out)
    return new / total[..., None], torch.log(total)


def merge_forgets_new_weight(out, lse, part_out, part_lse):
    new_lse = torch.logaddexp(lse, part_lse)
    return torch.exp(lse - new_lse)[..., None] * out + part_out, new_lse


def merge_average(out, lse, part_out, part_lse):
    first = torch.isinf(lse)[..., None]
    return torch.where(first, part_out, (out + part_out) / 2), torch.logaddexp(lse, part_lse)


def simulated_by_running_max(q, k, v, world_size, causal=False):
    """Correct, written differently: keeps the unnormalised sum and the running maximum
    of the log-sum-exps, divides once at the end."""
    n_local = q.shape[2] // world_size
    outs, lses = [], []
    for rank in range(world_size):
        acc, m, total = 0.0, None, 0.0
        for step in range(world_size):
            src = (rank - step) % world_size
            if causal and src > rank:
                continue
            o, lse = flash_forward(q[:, :, rank * n_local:(rank + 1) * n_local],
                                   k[:, :, src * n_local:(src + 1) * n_local],
                                   v[:, :, src * n_local:(src + 1) * n_local],
                                   causal and src == rank)
            new_m = lse if m is None else torch.maximum(m, lse)
            shrink = 1.0 if m is None else torch.exp(m - new_m)
            acc = acc * (shrink[..., None] if m is not None else 1.0) \
                + torch.exp(lse - new_m)[..., None] * o
            total = total * shrink + torch.exp(lse - new_m)
            m = new_m
        outs.append(acc / total[..., None])
        lses.append(m + torch.log(total))
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


@pytest.mark.parametrize("student", [simulated(merge_fixed), simulated_by_running_max])
def test_12_6_passes_correct_answers(student, capsys):
    check_ring_simulation(student)
    assert "✅ Exercise 12.6" in capsys.readouterr().out


@pytest.mark.parametrize("merge, message", [
    (merge_as_given, "with W = 2, not causal, q (2, 2, 8, 4): the out (item 0): "),
    (merge_forgets_new_weight, "with W = 2, not causal, q (2, 2, 8, 4): the out (item 0): "),
    (merge_average, "with W = 2, not causal, q (2, 2, 8, 4): the out (item 0): "),
    (merge_exp_directly, "with W = 4, causal, scores of about +-1e4 (e^lse overflows "
                         "float64): the out (item 0): the result contains NaN"),
    (merge_partials, "your function calls attnbook.ring.merge_partials, which the exercise "
                     "asks you not to use"),
])
def test_12_6_catches_wrong_merges(merge, message):
    with pytest.raises(CheckFailed) as caught:
        check_ring_simulation(simulated(merge))
    assert str(caught.value).startswith("Exercise 12.6 (simulated_ring): " + message), \
        str(caught.value)


def test_12_6_catches_in_place_changes_and_wrong_returns():
    def in_place(q, k, v, world_size, causal=False):
        result = simulated(merge_fixed)(q, k, v, world_size, causal)
        q.mul_(1.0 + 1e-3)
        return result
    with pytest.raises(CheckFailed, match="changed its `q` in place"):
        check_ring_simulation(in_place)
    with pytest.raises(CheckFailed, match=r"return the tuple \(out, lse\)"):
        check_ring_simulation(lambda *args: simulated(merge_fixed)(*args)[0])
