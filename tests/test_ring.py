"""Ring attention (attnbook.ring) against single-process attention, in real processes.

Starting processes is what costs here, so every case of one world size runs inside ONE
run_ring (results come back to this process and are compared here): four spawns for
world sizes 1-4, and one more for a rank that fails.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.distributed as dist

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.cost import H100_SXM, H200_SXM
from attnbook.flash.reference import flash_forward
from attnbook.ring import (
    INFINIBAND_NDR,
    NVLINK_H100,
    RingRankError,
    join_sequence,
    merge_partials,
    ring_attention,
    ring_block_plan,
    ring_run_split,
    ring_step_cost,
    ring_traffic_bytes,
    run_ring,
    split_sequence,
    visible_pairs,
    work_per_rank,
    work_ratio,
)

WORLD_SIZES = (1, 2, 3, 4)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 5e-2}
# (name, dtype, causal, layout, heads, kv_heads, n_local, d, dv)
CASES = [
    ("float64 full", torch.float64, False, "contiguous", 2, 2, 6, 8, 8),
    ("float64 causal", torch.float64, True, "contiguous", 2, 2, 6, 8, 8),
    ("float64 causal zigzag GQA", torch.float64, True, "zigzag", 4, 2, 6, 8, 8),
    ("float64 full GQA dv", torch.float64, False, "zigzag", 4, 1, 4, 8, 5),
    ("float32 full", torch.float32, False, "contiguous", 2, 2, 8, 16, 16),
    ("float32 causal", torch.float32, True, "contiguous", 2, 2, 8, 16, 16),
    ("float32 causal zigzag", torch.float32, True, "zigzag", 2, 2, 8, 16, 16),
    # half precision: merged in float32, gradients travel in float32
    ("bfloat16 causal zigzag", torch.bfloat16, True, "zigzag", 2, 2, 8, 16, 16),
]
WORK_N_LOCAL = 16  # the causal work case: B = H = 1, per rank 16 positions


def _inputs(case, world_size, seed):
    _, dtype, causal, layout, heads, kv_heads, n_local, d, dv = case
    g = torch.Generator().manual_seed(seed)
    n = n_local * world_size

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return randn(2, heads, n, d), randn(2, kv_heads, n, d), randn(2, kv_heads, n, dv), \
        randn(2, heads, n, dv)


def _all_cases(rank, world_size):
    """Runs in every process of one ring: each case, the work count, and the error for
    shapes that differ across ranks."""
    results = {}
    for number, case in enumerate(CASES):
        q, k, v, grad_out = _inputs(case, world_size, seed=100 * world_size + number)
        results[case[0]] = ring_run_split(rank, world_size, q, k, v, grad_out, causal=case[2],
                                          layout=case[3])
    for layout in ("contiguous", "zigzag"):
        x = torch.zeros(1, 1, WORK_N_LOCAL * world_size, 4)
        results[f"work {layout}"] = ring_run_split(rank, world_size, x, x, x, causal=True,
                                                   layout=layout)["stats"]
    try:  # zigzag needs two equal chunks per rank
        x = torch.zeros(1, 1, 3, 2)
        ring_attention(x, x, x, causal=True, layout="zigzag")
        results["odd zigzag"] = "no error"
    except ValueError as error:
        results["odd zigzag"] = str(error)
    if world_size > 1:  # the last rank holds a longer block than the others
        n_local = 6 if rank == world_size - 1 else 4
        q = torch.zeros(1, 2, n_local, 8)
        try:
            ring_attention(q, q, q)
            results["mismatch"] = "no error"
        except ValueError as error:
            results["mismatch"] = str(error)
    return results


_RESULTS: dict[int, dict] = {}
_SECONDS: dict[int, float] = {}


def results_of(world_size: int) -> dict:
    if world_size not in _RESULTS:
        start = time.perf_counter()
        ranks = run_ring(world_size, _all_cases, timeout=60.0)
        _SECONDS[world_size] = time.perf_counter() - start
        _RESULTS[world_size] = {name: [r[name] for r in ranks] for name in ranks[0]}
    return _RESULTS[world_size]


def reference(q, k, v, grad_out, causal):
    """Single-process attention (the package's, autograd for the gradients), and the
    log-sum-exp of its scaled, masked scores."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    keys, values = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    mask = causal_mask(q.shape[2], k.shape[2]) if causal else None
    out, _ = scaled_dot_product_attention(q, keys, values, mask)
    out.backward(grad_out)
    scores = (q.detach() / math.sqrt(q.shape[-1])) @ keys.detach().transpose(-2, -1)
    if causal:
        scores = scores.masked_fill(~mask, float("-inf"))
    return {"out": out.detach(), "lse": torch.logsumexp(scores, dim=-1), "dq": q.grad,
            "dk": k.grad, "dv": v.grad}


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("number", range(len(CASES)), ids=[c[0] for c in CASES])
def test_ring_equals_single_process_attention(world_size, number):
    case = CASES[number]
    name, dtype, causal, layout = case[:4]
    q, k, v, grad_out = _inputs(case, world_size, seed=100 * world_size + number)
    # bfloat16 against float64 attention of the same (rounded) inputs
    exact = [x.double() if dtype == torch.bfloat16 else x for x in (q, k, v, grad_out)]
    expected = reference(*exact, causal)
    ranks = results_of(world_size)[name]
    tol = TOLERANCE[dtype]
    for what, want in expected.items():
        got = join_sequence([r[what] for r in ranks], layout)
        wanted_dtype = torch.float32 if (what == "lse" and dtype == torch.bfloat16) else dtype
        assert got.dtype == wanted_dtype and got.shape == want.shape, (what, got.dtype)
        error = (got.double() - want.double()).abs().max().item()
        assert error <= tol * max(1.0, want.abs().max().item()), (name, what, error)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_messages_and_bytes_per_step_follow_the_formula(world_size):
    for case in CASES:
        name, dtype, _, _, _, kv_heads, n_local, d, dv = case
        per_step = ring_traffic_bytes(2, kv_heads, n_local, d, dv, dtype)
        with_grads = ring_traffic_bytes(2, kv_heads, n_local, d, dv, dtype, with_grads=True)
        for r, result in enumerate(results_of(world_size)[name]):
            stats = result["stats"]
            assert (stats.rank, stats.world_size) == (r, world_size)
            assert len(stats.forward) == len(stats.backward) == world_size
            for step in stats.forward:  # K and V leave at every step but the last
                sends = step.step < world_size - 1
                assert step.messages == (2 if sends else 0), (name, r, step)
                assert step.bytes == (per_step if sends else 0), (name, r, step)
            for step in stats.backward:  # dK and dV travel on, and home after W steps
                if world_size == 1:
                    assert step.messages == 0
                elif step.step < world_size - 1:
                    assert (step.messages, step.bytes) == (4, with_grads), (name, r, step)
                else:
                    assert (step.messages, step.bytes) == (2, with_grads - per_step)
            assert stats.bytes_sent == (world_size - 1) * per_step


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_work_per_rank_measured_equals_predicted_and_zigzag_balances(world_size):
    n = WORK_N_LOCAL * world_size
    measured = {}
    for layout in ("contiguous", "zigzag"):
        measured[layout] = [stats.pairs for stats in results_of(world_size)[f"work {layout}"]]
        assert measured[layout] == work_per_rank(n, world_size, layout, causal=True)
        assert sum(measured[layout]) == n * (n + 1) // 2  # every visible pair once
    assert work_ratio(measured["zigzag"]) <= 1.1
    assert work_ratio(measured["zigzag"]) == 1.0  # exactly balanced
    if world_size > 1:
        plain = work_ratio(measured["contiguous"])
        # r L^2 + L (L + 1) / 2 against L (L + 1) / 2: 1 + 2 (W - 1) L / (L + 1)
        assert plain == pytest.approx(1 + 2 * (world_size - 1) * 16 / 17)
        assert plain > 1.8 * (world_size - 1)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_shapes_that_differ_across_ranks_raise_on_every_rank(world_size):
    messages = results_of(world_size)["mismatch"]
    for message in messages:
        assert message.startswith("every rank must pass q, k and v of the same shapes")
        assert f"ranks [{world_size - 1}] differ from rank 0" in message
        assert f"rank {world_size - 1}: q (1, 2, 6, 8)" in message
        assert "rank 0: q (1, 2, 4, 8)" in message


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_zigzag_with_an_odd_block_is_refused(world_size):
    for message in results_of(world_size)["odd zigzag"]:
        assert message.startswith("the zigzag layout gives each rank two chunks of equal "
                                  "length, so N_local must be even, got q (1, 1, 3, 2)")


def test_the_distributed_tests_take_little_time():
    for world_size in WORLD_SIZES:
        results_of(world_size)
    print({w: round(s, 1) for w, s in _SECONDS.items()})
    assert sum(_SECONDS.values()) < 240  # generous: the machine is shared


def _fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise ValueError("rank one fails on purpose")
    dist.all_reduce(torch.zeros(1))  # waits for rank 1, which never comes
    return "rank 0 should not get here"


def test_a_failing_rank_ends_the_run_promptly():
    start = time.perf_counter()
    with pytest.raises(RingRankError, match="rank 1 failed: ValueError: rank one fails on "
                                            "purpose") as caught:
        run_ring(2, _fail_on_rank_one, timeout=20.0)
    assert caught.value.rank == 1
    assert time.perf_counter() - start < 60  # start-up included; the group timeout is 20 s


def test_uninitialised_process_group_is_named():
    assert not dist.is_initialized()
    x = torch.zeros(1, 1, 4, 2)
    with pytest.raises(RuntimeError, match="needs an initialised process group: call "
                                           "torch.distributed.init_process_group"):
        ring_attention(x, x, x)


# ---------------------------------------------------------------- no processes needed

def test_merge_equals_attention_over_both_parts_and_is_finite_for_huge_logits():
    g = torch.Generator().manual_seed(0)
    for size in (1.0, 1e4):
        q = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
        k = torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64)
        v = torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64)
        scale = size / 2  # logits of about +-1e4 with size 1e4
        out_a, lse_a = flash_forward(q, k[:, :, :4], v[:, :, :4], scale=scale)
        out_b, lse_b = flash_forward(q, k[:, :, 4:], v[:, :, 4:], scale=scale)
        out, lse = merge_partials(out_a, lse_a, out_b, lse_b)
        want, want_lse = flash_forward(q, k, v, scale=scale)
        assert torch.isfinite(out).all() and torch.isfinite(lse).all()
        assert lse.abs().max() > 0.5 * size
        torch.testing.assert_close(out, want, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(lse, want_lse, atol=1e-10, rtol=1e-12)


def test_merge_with_an_empty_part_gives_the_other_and_no_nan():
    g = torch.Generator().manual_seed(1)
    out_a = torch.randn(3, 4, 2, generator=g)
    lse_a = torch.randn(3, 4, generator=g) * 1e4
    empty_out, empty_lse = torch.zeros(3, 4, 2), torch.full((3, 4), float("-inf"))
    for out, lse in (merge_partials(out_a, lse_a, empty_out, empty_lse),
                     merge_partials(empty_out, empty_lse, out_a, lse_a)):
        assert torch.equal(out, out_a) and torch.equal(lse, lse_a)
    out, lse = merge_partials(empty_out, empty_lse, empty_out, empty_lse)
    assert torch.equal(out, empty_out) and torch.equal(lse, empty_lse)  # no NaN


def test_merge_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"out_a \(2, 3, 4\), lse_a \(2, 4\)"):
        merge_partials(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 3, 4),
                       torch.zeros(2, 4))


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_split_and_join_are_inverse(layout):
    x = torch.arange(2 * 3 * 24 * 2).reshape(2, 3, 24, 2)
    for world_size in (1, 2, 3, 4):
        parts = [split_sequence(x, world_size, r, layout) for r in range(world_size)]
        assert all(p.shape == (2, 3, 24 // world_size, 2) for p in parts)
        assert torch.equal(join_sequence(parts, layout), x)
    lse = torch.arange(24.0).reshape(1, 1, 24)
    assert torch.equal(join_sequence([split_sequence(lse, 3, r, layout) for r in range(3)],
                                     layout), lse)


def test_zigzag_gives_rank_r_chunks_r_and_2w_minus_1_minus_r():
    x = torch.arange(8).reshape(1, 1, 8)
    assert split_sequence(x, 4, 0, "zigzag").flatten().tolist() == [0, 7]
    assert split_sequence(x, 4, 2, "zigzag").flatten().tolist() == [2, 5]
    assert split_sequence(x, 2, 1, "contiguous").flatten().tolist() == [4, 5, 6, 7]


def test_a_length_that_does_not_divide_is_named():
    x = torch.zeros(1, 1, 10, 2)
    with pytest.raises(ValueError, match=r"N = 10 does not divide among the ranks.*world "
                                         r"size 4.*contiguous"):
        split_sequence(x, 4, 0)
    with pytest.raises(ValueError, match=r"N = 10 .*2 x world size = 6 chunks.*'zigzag'"):
        split_sequence(x, 3, 0, "zigzag")
    with pytest.raises(ValueError, match="layout must be one of"):
        split_sequence(x, 2, 0, "striped")
    with pytest.raises(ValueError, match="rank must be an int in"):
        split_sequence(x, 2, 2)


def test_block_plan_covers_every_visible_pair_once():
    for world_size in (1, 2, 3, 5):
        for layout in ("contiguous", "zigzag"):
            n_local, n = 6, 6 * world_size
            seen = torch.zeros(n, n, dtype=torch.int64)
            positions = [split_sequence(torch.arange(n).view(1, 1, n), world_size, r,
                                        layout).flatten() for r in range(world_size)]
            for rank in range(world_size):
                for step in range(world_size):
                    src = (rank - step) % world_size
                    for q0, q1, k0, k1, masked in ring_block_plan(rank, step, world_size,
                                                                  n_local, layout, True):
                        rows = positions[rank][q0:q1, None]
                        cols = positions[src][None, k0:k1]
                        visible = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool)
                        if masked:
                            visible = causal_mask(q1 - q0, k1 - k0)
                        # a block computed without a mask must hold no future key
                        assert masked or (cols <= rows).all()
                        seen[rows.expand(-1, k1 - k0)[visible],
                             cols.expand(q1 - q0, -1)[visible]] += 1
            assert torch.equal(seen, causal_mask(n).long()), (world_size, layout)


def test_visible_pairs_and_predicted_work():
    assert visible_pairs(4, 4, True) == 10 and visible_pairs(3, 5, True) == 12
    assert visible_pairs(3, 5, False) == 15
    assert work_per_rank(8, 2, "contiguous", causal=False) == [32, 32]
    assert work_per_rank(8, 2, "contiguous") == [10, 26]
    assert work_per_rank(8, 2, "zigzag") == [18, 18]
    # the plain split tends to 2W - 1 : 1 for long blocks
    assert work_ratio(work_per_rank(4 * 4096, 4)) == pytest.approx(7, rel=1e-3)


def test_step_cost_and_where_the_ring_stops_paying():
    nvlink = ring_step_cost(4096, 128, heads=8, dtype=torch.bfloat16)
    assert nvlink.flops == 4 * 8 * 4096 * 4096 * 128
    assert nvlink.bytes == ring_traffic_bytes(1, 8, 4096, 128, dtype=torch.bfloat16)
    assert nvlink.bytes == 2 * 8 * 4096 * 128 * 2
    # bf16, H = H_kv, not causal: compute hides the transfer once N_local >= peak / bw
    assert nvlink.min_block_length == math.ceil(H100_SXM.peak_flops / NVLINK_H100) == 2199
    assert nvlink.hidden
    for link, causal, length in [(NVLINK_H100, True, 4398), (INFINIBAND_NDR, False, 19788),
                                 (INFINIBAND_NDR, True, 39576)]:
        cost = ring_step_cost(1024, 128, heads=8, causal=causal, link_bandwidth=link)
        assert cost.min_block_length == length
        assert ring_step_cost(length, 128, heads=8, causal=causal, link_bandwidth=link).hidden
        assert not ring_step_cost(length - 1, 128, heads=8, causal=causal,
                                  link_bandwidth=link).hidden
    # grouped-query heads send 4x fewer bytes per FLOP; the H200 computes as fast
    assert ring_step_cost(1024, 128, heads=32, kv_heads=8).min_block_length == 550
    assert ring_step_cost(1024, 128, gpu=H200_SXM).min_block_length == 2199
    # at half the peak, blocks must be half as long
    assert ring_step_cost(1024, 128, efficiency=0.5).min_block_length == 1100
    with pytest.raises(ValueError, match="efficiency"):
        ring_step_cost(1024, 128, efficiency=0)
