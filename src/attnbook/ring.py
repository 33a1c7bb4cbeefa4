"""Ring attention over `torch.distributed`: attention over a sequence split among processes.

Each of W ranks (processes, or GPUs) holds one block of the sequence: its queries,
keys and values, (B, H, N_local, d). The key/value blocks travel around a ring, rank
r sending to r + 1 and receiving from r - 1, so that after W - 1 steps every rank
has seen every block while holding only two at a time. At each step a rank runs the
tiled forward pass of chapter 11 (`flash.reference.flash_forward`) on its queries and
the visible part of the block it holds, and folds the partial result into its
running one with the log-sum-exp merge (`merge_partials`): the same rule as the
online softmax, one block of keys at a time (Liu et al., 2024, Ring Attention with
Blockwise Transformers). The backward pass is a second ring in which the key/value
blocks travel with their gradient accumulators dK, dV, which come home after W
steps; each step is `flash.reference.flash_backward` with the GLOBAL output and
log-sum-exp (FlashAttention-2's backward, Dao 2023).

Causal attention with a contiguous split gives rank W - 1 about 2W - 1 times the work
of rank 0 (it sees every earlier block); the zigzag split cuts the sequence into 2W
chunks and gives rank r chunks r and 2W - 1 - r, one early and one late, so every
rank scores the same number of query-key pairs.

The code takes its device from its inputs and names no backend: it runs with gloo on
CPU processes (`run_ring`, the tests, the chapter) and unchanged with NCCL on GPUs.
"""

from __future__ import annotations

import math
import os
import pickle
import queue as queue_module
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from attnbook.attention import check_scale
from attnbook.cost import GPU, H100_SXM, attention_flops
from attnbook.flash.reference import check_flash_inputs, flash_backward, flash_forward

LAYOUTS = ("contiguous", "zigzag")
_HALF = (torch.float16, torch.bfloat16)

# Link bandwidths, bytes per second in ONE direction (a ring sends one way per link).
# NVLink 4 on an H100 SXM: 900 GB/s in total, both directions together (the H100
# datasheet), so 450e9 per direction. InfiniBand NDR: 400 Gb/s per port (ConnectX-7),
# 50e9 bytes/s, the usual link between GPUs of different machines.
NVLINK_H100 = 450e9
INFINIBAND_NDR = 50e9


# ---------------------------------------------------------------- the merge

def merge_partials(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                   lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the keys of two parts, from each part's output (..., N, dv) and
    log-sum-exp (..., N): lse = log(e^lse_a + e^lse_b) and
    out = e^(lse_a - lse) out_a + e^(lse_b - lse) out_b.

    Each part's output is its softmax-weighted average of values; the weights of the
    whole row are the part's weights times e^(lse_part - lse). Finite for log-sum-exps
    in the thousands (only differences are exponentiated); a part that saw no key has
    lse = -inf and weight 0; a row where both are empty keeps out 0, lse -inf, no NaN.
    """
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape \
            or tuple(out_a.shape[:-1]) != tuple(lse_a.shape):
        raise ValueError(f"out_a and out_b (..., N, dv) must have one shape and lse_a, lse_b "
                         f"its first dimensions (..., N): out_a {tuple(out_a.shape)}, lse_a "
                         f"{tuple(lse_a.shape)}, out_b {tuple(out_b.shape)}, lse_b "
                         f"{tuple(lse_b.shape)}")
    lse = torch.logaddexp(lse_a, lse_b)  # -inf only where both parts are empty
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    weight_a = torch.exp(lse_a - safe)[..., None]  # exp(-inf) = 0 for an empty part
    weight_b = torch.exp(lse_b - safe)[..., None]
    return weight_a * out_a + weight_b * out_b, lse


# ---------------------------------------------------------------- splitting the sequence

def _check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _check_world(world_size, rank=0) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")


def chunks_of_rank(rank: int, world_size: int, layout: str = "contiguous") -> list[int]:
    """Which chunks of the sequence rank r holds: contiguous, [r] of W chunks; zigzag,
    [r, 2W - 1 - r] of 2W chunks."""
    _check_world(world_size, rank)
    _check_layout(layout)
    return [rank] if layout == "contiguous" else [rank, 2 * world_size - 1 - rank]


def _chunk_length(n: int, world_size: int, layout: str) -> int:
    pieces = world_size if layout == "contiguous" else 2 * world_size
    if n % pieces:
        what = (f"world size {world_size}" if layout == "contiguous"
                else f"2 x world size = {pieces} chunks")
        raise ValueError(f"the sequence length N = {n} does not divide among the ranks: the "
                         f"{layout} layout needs N to be a multiple of the {what} (world "
                         f"size {world_size}, layout {layout!r})")
    return n // pieces


def split_sequence(x: torch.Tensor, world_size: int, rank: int, layout: str = "contiguous",
                   dim: int = 2) -> torch.Tensor:
    """The part of the whole sequence x that rank `rank` holds, along `dim` (2 for
    (B, H, N, d) and for a log-sum-exp (B, H, N)): contiguous, the r-th of W equal
    blocks; zigzag, chunks r and 2W - 1 - r of 2W, joined."""
    _check_world(world_size, rank)
    _check_layout(layout)
    length = _chunk_length(x.shape[dim], world_size, layout)
    parts = [x.narrow(dim, c * length, length) for c in chunks_of_rank(rank, world_size, layout)]
    return torch.cat(parts, dim=dim)


def join_sequence(parts: list[torch.Tensor], layout: str = "contiguous",
                  dim: int = 2) -> torch.Tensor:
    """The inverse of split_sequence: the whole sequence from every rank's part
    (parts[r] is rank r's)."""
    _check_layout(layout)
    world_size = len(parts)
    if world_size == 0:
        raise ValueError("parts must hold one tensor per rank, got an empty list")
    if layout == "contiguous":
        return torch.cat(list(parts), dim=dim)
    chunks: list = [None] * (2 * world_size)
    for rank, part in enumerate(parts):
        length = _chunk_length(part.shape[dim], 1, "zigzag")  # a rank holds 2 chunks
        first, second = chunks_of_rank(rank, world_size, layout)
        chunks[first] = part.narrow(dim, 0, length)
        chunks[second] = part.narrow(dim, length, length)
    return torch.cat(chunks, dim=dim)


# ---------------------------------------------------------------- which blocks a step computes

def ring_block_plan(rank: int, step: int, world_size: int, n_local: int,
                    layout: str = "contiguous", causal: bool = False
                    ) -> list[tuple[int, int, int, int, bool]]:
    """What rank r computes at ring step s, when it holds the key/value block of rank
    src = (r - s) mod W: a list of (q_start, q_stop, k_start, k_stop, causal) in local
    positions, one flash_forward call each.

    Not causal: everything, unmasked. Causal, contiguous: src < r full, src = r (step 0)
    with the causal mask, src > r nothing (the block lies wholly in the future).
    Causal, zigzag (chunks of c = n_local / 2; rank r holds chunks r and 2W-1-r): step 0,
    the local block with the causal mask (chunk 2W-1-r sees all of chunk r); src < r,
    both query chunks see the first key chunk (src) and not the second (2W-1-src, later
    than both); src > r, only the late query chunk (2W-1-r) sees, both key chunks.
    """
    _check_world(world_size, rank)
    _check_layout(layout)
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


def visible_pairs(n_queries: int, n_keys: int, causal: bool) -> int:
    """Query-key pairs of one (n_queries x n_keys) block that are scored: all of them, or,
    causal and bottom-right aligned, those with key j <= i + n_keys - n_queries."""
    if not causal:
        return n_queries * n_keys
    offset = n_keys - n_queries
    return sum(min(n_keys, i + offset + 1) for i in range(n_queries))


def work_per_rank(n: int, world_size: int, layout: str = "contiguous",
                  causal: bool = True) -> list[int]:
    """Predicted query-key pairs each rank scores for one (batch, head), by formula.

    Not causal: N / W queries times N keys each. Causal, contiguous (blocks of L = N / W):
    rank r sees r whole earlier blocks and the lower triangle of its own,
    r L^2 + L (L + 1) / 2, so the last rank does about 2W - 1 times the first's work.
    Causal, zigzag (chunks of c = N / 2W): chunk i sees i c^2 + c (c + 1) / 2 pairs, and
    rank r's chunks r and 2W - 1 - r add up to (2W - 1) c^2 + c (c + 1), the same for
    every rank.
    """
    _check_world(world_size)
    _check_layout(layout)
    if not causal:
        _chunk_length(n, world_size, layout)  # the ValueError when N does not divide
        return [n // world_size * n] * world_size
    if layout == "contiguous":
        size = _chunk_length(n, world_size, layout)
        return [r * size * size + size * (size + 1) // 2 for r in range(world_size)]
    c = _chunk_length(n, world_size, layout)
    return [(2 * world_size - 1) * c * c + c * (c + 1) for _ in range(world_size)]


def work_ratio(work: list[int]) -> float:
    """The most work of any rank over the least: 1.0 is a perfect balance."""
    return max(work) / min(work)


# ---------------------------------------------------------------- counting

@dataclass
class StepCount:
    """What one rank did at one ring step: messages sent (and each one's bytes), the
    flash calls it ran and the query-key pairs it scored (per batch and head)."""

    step: int
    message_bytes: list[int] = field(default_factory=list)
    blocks: int = 0
    pairs: int = 0

    @property
    def messages(self) -> int:
        return len(self.message_bytes)

    @property
    def bytes(self) -> int:
        return sum(self.message_bytes)


@dataclass
class RingStats:
    """Filled by ring_attention(..., stats=RingStats()): one StepCount per ring step of
    the forward pass and of the backward pass, on this rank."""

    rank: int = -1
    world_size: int = 0
    forward: list[StepCount] = field(default_factory=list)
    backward: list[StepCount] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        """Query-key pairs this rank scored in the forward pass (per batch and head)."""
        return sum(s.pairs for s in self.forward)

    @property
    def bytes_sent(self) -> int:
        """Bytes this rank sent in the forward pass."""
        return sum(s.bytes for s in self.forward)


def ring_traffic_bytes(batch: int, kv_heads: int, n_local: int, d: int, dv: int | None = None,
                       dtype: torch.dtype = torch.float32, with_grads: bool = False) -> int:
    """Bytes one rank sends in one ring step: its key and value block,
    B H_kv N_local (d + dv) x itemsize (2 B H_kv N_local d itemsize when dv = d). In the
    backward ring the gradients dK and dV travel with them (`with_grads`): twice that
    (for float32 and float64; half-precision gradients travel in float32)."""
    dv = d if dv is None else dv
    for name, value in [("batch", batch), ("kv_heads", kv_heads), ("n_local", n_local),
                        ("d", d), ("dv", dv)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    size = torch.empty((), dtype=dtype).element_size()
    kv = batch * kv_heads * n_local * (d + dv) * size
    if not with_grads:
        return kv
    grad_size = 4 if dtype in _HALF else size
    return kv + batch * kv_heads * n_local * (d + dv) * grad_size


# ---------------------------------------------------------------- the ring

def _group_info(group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "ring_attention needs an initialised process group: call "
            "torch.distributed.init_process_group(backend, init_method=..., rank=..., "
            "world_size=...) in every process first (gloo for CPU tensors, nccl for CUDA), "
            "or run the function through attnbook.ring.run_ring")
    return dist.get_world_size(group), dist.get_rank(group)


def _peer(group, rank_in_group: int) -> int:
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


def _send_around(tensors: list[torch.Tensor], group, rank: int, world_size: int,
                 count: StepCount | None, first_tag: int = 0):
    """Start sending `tensors` to rank + 1 and receiving their like from rank - 1; returns
    (received buffers, requests to wait on)."""
    to_rank = _peer(group, (rank + 1) % world_size)
    from_rank = _peer(group, (rank - 1) % world_size)
    received = [torch.empty_like(t) for t in tensors]
    ops = []
    for tag, (t, buffer) in enumerate(zip(tensors, received), start=first_tag):
        ops.append(dist.P2POp(dist.isend, t, to_rank, group, tag))
        ops.append(dist.P2POp(dist.irecv, buffer, from_rank, group, tag))
        if count is not None:
            count.message_bytes.append(t.numel() * t.element_size())
    return received, dist.batch_isend_irecv(ops)


def _check_across_ranks(q, k, v, causal, layout, group, world_size) -> None:
    """Gather every rank's shapes and options once; the same ValueError on every rank
    when they differ (so no rank waits for a block that will not come)."""
    codes = {dtype: i for i, dtype in enumerate((torch.float16, torch.bfloat16, torch.float32,
                                                 torch.float64))}
    mine = torch.tensor([*q.shape, *k.shape, *v.shape, codes.get(q.dtype, -1),
                         codes.get(k.dtype, -1), codes.get(v.dtype, -1), int(bool(causal)),
                         LAYOUTS.index(layout)], dtype=torch.int64, device=q.device)
    gathered = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(gathered, mine, group=group)
    rows = [g.tolist() for g in gathered]
    if all(row == rows[0] for row in rows):
        return
    names = {i: str(dtype).replace("torch.", "") for dtype, i in codes.items()}

    def describe(rank, row):
        return (f"rank {rank}: q {tuple(row[0:4])}, k {tuple(row[4:8])}, v {tuple(row[8:12])}"
                f", {names.get(row[12], '?')}, causal={bool(row[15])}, "
                f"layout={LAYOUTS[row[16]]!r}")
    different = [r for r, row in enumerate(rows) if row != rows[0]]
    raise ValueError(f"every rank must pass q, k and v of the same shapes and dtype, and the "
                     f"same causal and layout: ranks {different} differ from rank 0 ("
                     + "; ".join(describe(r, row) for r, row in enumerate(rows)) + ")")


def _ring_forward(q, k, v, causal, layout, scale, group, stats):
    world_size, rank = _group_info(group)
    n_local = q.shape[2]
    acc_dtype = torch.float32 if q.dtype in _HALF else q.dtype
    out = torch.zeros(*q.shape[:3], v.shape[3], dtype=acc_dtype, device=q.device)
    lse = torch.full(q.shape[:3], float("-inf"), dtype=acc_dtype, device=q.device)
    k_cur, v_cur = k.contiguous(), v.contiguous()
    for step in range(world_size):
        count = StepCount(step) if stats is not None else None
        pending = None
        if step < world_size - 1:  # send this block on while computing with it
            pending = _send_around([k_cur, v_cur], group, rank, world_size, count)
        for q0, q1, k0, k1, masked in ring_block_plan(rank, step, world_size, n_local,
                                                      layout, causal):
            part_out, part_lse = flash_forward(q[:, :, q0:q1], k_cur[:, :, k0:k1],
                                               v_cur[:, :, k0:k1], masked, scale)
            out[:, :, q0:q1], lse[:, :, q0:q1] = merge_partials(
                out[:, :, q0:q1], lse[:, :, q0:q1], part_out.to(acc_dtype),
                part_lse.to(acc_dtype))
            if count is not None:
                count.blocks += 1
                count.pairs += visible_pairs(q1 - q0, k1 - k0, masked)
        if pending is not None:
            (k_cur, v_cur), requests = pending
            for request in requests:
                request.wait()
        if stats is not None:
            stats.forward.append(count)
    return out.to(q.dtype), lse


def _ring_backward(q, k, v, out, lse, grad_out, causal, layout, scale, group, stats):
    """The backward ring. The key/value block travels as in the forward ring, and its
    gradient accumulator (dK, dV) follows it one step behind: at each step a rank
    computes its share into fresh buffers while the accumulator is still on its way,
    then waits for it, adds, and sends the sum on without waiting. So the compute of
    a step overlaps both transfers: the next key/value block and this block's dK, dV.
    After W steps each accumulator arrives home."""
    world_size, rank = _group_info(group)
    n_local = q.shape[2]
    acc_dtype = torch.float32 if q.dtype in _HALF else q.dtype
    dq = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
    k_cur, v_cur = k.contiguous(), v.contiguous()
    arriving = None  # (dK, dV) of the block now held, and the requests to wait on
    for step in range(world_size):
        count = StepCount(step) if stats is not None else None
        pending = None
        if step < world_size - 1:  # the block moves on while its gradient is computed
            pending = _send_around([k_cur, v_cur], group, rank, world_size, count)
        dk = torch.zeros(k.shape, dtype=acc_dtype, device=q.device)  # this rank's share
        dv = torch.zeros(v.shape, dtype=acc_dtype, device=q.device)
        for q0, q1, k0, k1, masked in ring_block_plan(rank, step, world_size, n_local,
                                                      layout, causal):
            part_dq, part_dk, part_dv = flash_backward(
                q[:, :, q0:q1], k_cur[:, :, k0:k1], v_cur[:, :, k0:k1], out[:, :, q0:q1],
                lse[:, :, q0:q1], grad_out[:, :, q0:q1], masked, scale)
            dq[:, :, q0:q1] += part_dq
            dk[:, :, k0:k1] += part_dk
            dv[:, :, k0:k1] += part_dv
            if count is not None:
                count.blocks += 1
                count.pairs += visible_pairs(q1 - q0, k1 - k0, masked)
        if arriving is not None:  # the shares of the ranks before, sent last step
            (dk_in, dv_in), requests = arriving
            for request in requests:
                request.wait()
            dk, dv = dk + dk_in, dv + dv_in
        if world_size > 1:  # on to the next rank, waited for after the next compute
            arriving = _send_around([dk, dv], group, rank, world_size, count, first_tag=2)
        if pending is not None:
            (k_cur, v_cur), requests = pending
            for request in requests:
                request.wait()
        if stats is not None:
            stats.backward.append(count)
    if arriving is not None:  # after W steps: this rank's own block, complete
        (dk, dv), requests = arriving
        for request in requests:
            request.wait()
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class RingAttention(torch.autograd.Function):
    """Ring attention as one differentiable operation: the forward ring saves q, k, v,
    the output and the log-sum-exp; the backward ring recomputes the rest."""

    @staticmethod
    def forward(ctx, q, k, v, causal, layout, scale, group, stats):
        out, lse = _ring_forward(q, k, v, causal, layout, scale, group, stats)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, layout, scale, group, stats)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _ring_backward(q, k, v, out, lse, grad_out.contiguous(), *ctx.options)
        return dq, dk, dv, None, None, None, None, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                   layout: str = "contiguous", scale: float | None = None, group=None,
                   return_lse: bool = False, stats: RingStats | None = None):
    """Attention over a sequence split among the ranks of `group` (default: the world).

    Each rank passes its own block: q (B, H, N_local, d), k (B, H_kv, N_local, d),
    v (B, H_kv, N_local, dv), cut from the whole sequence by split_sequence(..., layout)
    (H a multiple of H_kv: grouped-query heads). Returns this rank's block of the output
    (B, H, N_local, dv), and with `return_lse` also its log-sum-exp (B, H, N_local).
    Differentiable in q, k and v (the backward pass is a second ring). `causal` masks
    the future of the WHOLE sequence; `layout` says how it was split ("zigzag" needs an
    even N_local). A `stats` object (RingStats) is filled with the messages, bytes and
    scored pairs of every step. Every rank must call it with the same shapes, dtype,
    causal and layout (checked once across the ranks, a ValueError otherwise).
    """
    world_size, rank = _group_info(group)
    _check_layout(layout)
    check_scale(scale)
    for name, t in [("q", q), ("k", k), ("v", v)]:
        if not torch.is_tensor(t) or t.dim() != 4:
            got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, N_local, dim), "
                             f"got {got}")
    _check_across_ranks(q, k, v, causal, layout, group, world_size)
    check_flash_inputs(q, k, v)
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"ring attention is self-attention over one split sequence: q and k "
                         f"must hold the same number of positions per rank, got q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}")
    if layout == "zigzag" and q.shape[2] % 2:
        raise ValueError(f"the zigzag layout gives each rank two chunks of equal length, so "
                         f"N_local must be even, got q {tuple(q.shape)} (world size "
                         f"{world_size})")
    if stats is not None:
        stats.rank, stats.world_size = rank, world_size
        stats.forward.clear()
        stats.backward.clear()
    out, lse = RingAttention.apply(q, k, v, bool(causal), layout, scale, group, stats)
    return (out, lse) if return_lse else out


# ---------------------------------------------------------------- running a ring of processes

class RingRankError(RuntimeError):
    """A rank of run_ring raised; `rank` and `message` say which and what."""

    def __init__(self, rank: int, message: str):
        super().__init__(f"rank {rank} failed: {message}")
        self.rank, self.message = rank, message


def _ring_worker(rank, world_size, init_method, timeout, threads, fn, args, results):
    try:
        torch.set_num_threads(threads)
        dist.init_process_group("gloo", init_method=init_method, rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout))
        value = fn(rank, world_size, *args)
    except BaseException as error:  # every failure goes back to the parent as text,
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        results.put((rank, False, last))  # before the group closes and upsets the others
        return
    dist.destroy_process_group()
    results.put((rank, True, pickle.dumps(value)))


def run_ring(world_size: int, fn, *args, timeout: float = 30.0, threads: int = 1) -> list:
    """Run fn(rank, world_size, *args) in `world_size` new CPU processes joined into one
    gloo process group, and return their results, [rank 0's, rank 1's, ...].

    The processes are started with the spawn method (so `fn` and `args` must be
    picklable: a function of a module, not one defined in a notebook), meet through a
    file:// store in a temporary folder, and each uses `threads` threads. Every
    collective and transfer of the group gives up after `timeout` seconds, so a rank
    that fails cannot leave the others waiting for ever; the first rank that raises
    makes run_ring stop the others and raise RingRankError with that rank's message.
    """
    _check_world(world_size)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    values: dict[int, object] = {}
    with tempfile.TemporaryDirectory(prefix="ring-") as folder:
        init_method = "file://" + os.path.join(folder, "store")
        processes = [context.Process(target=_ring_worker, daemon=True,
                                     args=(rank, world_size, init_method, timeout, threads,
                                           fn, args, results))
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        try:
            while len(values) < world_size:
                try:
                    rank, ok, payload = results.get(timeout=0.2)
                except queue_module.Empty:
                    dead = [r for r, p in enumerate(processes)
                            if r not in values and p.exitcode not in (None, 0)]
                    if dead:
                        time.sleep(0.5)  # its message may still be on its way
                        if results.empty():
                            code = processes[dead[0]].exitcode
                            raise RingRankError(dead[0], f"the process exited with code "
                                                         f"{code}") from None
                    continue
                if not ok:
                    raise RingRankError(rank, payload)
                values[rank] = pickle.loads(payload)
        finally:  # after a failure the others may be waiting for it: stop them now
            for process in processes:
                process.join(timeout=5 if len(values) == world_size else 0.1)
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=5)
    return [values[rank] for rank in range(world_size)]


def ring_run_split(rank: int, world_size: int, q: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, grad_out: torch.Tensor | None = None, causal: bool = False,
                   layout: str = "contiguous", scale: float | None = None) -> dict:
    """For run_ring: cut this rank's blocks out of the WHOLE q, k, v (and grad_out), run
    ring_attention forward (and backward when grad_out is given) with a RingStats, and
    return this rank's {"out", "lse", "dq", "dk", "dv", "stats"} (join_sequence puts the
    blocks of every rank back together)."""
    def mine(x, grad):
        part = split_sequence(x, world_size, rank, layout).clone()
        return part.requires_grad_(grad)
    grad = grad_out is not None
    q_r, k_r, v_r = mine(q, grad), mine(k, grad), mine(v, grad)
    stats = RingStats()
    out, lse = ring_attention(q_r, k_r, v_r, causal, layout, scale, return_lse=True,
                              stats=stats)
    result = {"out": out.detach(), "lse": lse.detach(), "stats": stats}
    if grad:
        out.backward(split_sequence(grad_out, world_size, rank, layout))
        result.update(dq=q_r.grad, dk=k_r.grad, dv=v_r.grad)
    return result


def ring_work(rank: int, world_size: int, n: int,
              layouts: tuple[str, ...] = LAYOUTS) -> dict[str, RingStats]:
    """For run_ring: a causal forward ring over a sequence of n positions (B = H = 1,
    d = 4, zeros: only the counting matters) in each layout; this rank's RingStats per
    layout (stats.pairs is the query-key pairs it scored)."""
    x = torch.zeros(1, 1, n, 4)
    return {layout: ring_run_split(rank, world_size, x, x, x, causal=True,
                                   layout=layout)["stats"] for layout in layouts}


def ring_jobs(rank: int, world_size: int, jobs: list) -> list:
    """For run_ring: several jobs in one group of processes (starting processes is what
    costs): jobs is a list of (fn, args), and each rank returns [fn(rank, world_size,
    *args) for each job], in order."""
    return [fn(rank, world_size, *args) for fn, args in jobs]


# ---------------------------------------------------------------- when the ring pays

@dataclass(frozen=True)
class RingStepCost:
    """One ring step on one rank: the FLOPs of its block, the bytes it sends, the time
    each takes at the GPU's peak and the link's bandwidth, and the shortest block
    (N_local) whose compute lasts at least as long as its transfer."""

    flops: int
    bytes: int
    compute_s: float
    transfer_s: float
    min_block_length: int

    @property
    def hidden(self) -> bool:
        """Whether the transfer fits inside the compute (they overlap)."""
        return self.compute_s >= self.transfer_s


def ring_step_cost(n_local: int, d: int, batch: int = 1, heads: int = 1,
                   kv_heads: int | None = None, dv: int | None = None,
                   dtype: torch.dtype = torch.bfloat16, causal: bool = False,
                   gpu: GPU = H100_SXM, link_bandwidth: float = NVLINK_H100,
                   efficiency: float = 1.0) -> RingStepCost:
    """Compute against communication for one forward ring step of blocks of n_local
    positions: FLOPs = attention_flops(n_local, d, batch_heads = B H, causal) (a causal
    zigzag step scores half the block's pairs), bytes = ring_traffic_bytes(B, H_kv,
    n_local, d, dv, dtype). Compute runs at `efficiency` x the GPU's peak, the transfer
    at `link_bandwidth` bytes/s. FLOPs grow as n_local^2 and bytes as n_local, so above
    min_block_length = ceil(bytes_per_position x peak / (flops_per_position^2 x bw))
    the transfer hides behind the compute; below, the ring waits on the link.
    """
    kv_heads = heads if kv_heads is None else kv_heads
    dv = d if dv is None else dv
    if not (0 < efficiency <= 1):
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
    if not link_bandwidth > 0:
        raise ValueError(f"link_bandwidth must be > 0 bytes/s, got {link_bandwidth!r}")
    flops = attention_flops(n_local, d, dv=dv, batch_heads=batch * heads, causal=causal)
    sent = ring_traffic_bytes(batch, kv_heads, n_local, d, dv, dtype)
    speed = gpu.peak_flops * efficiency
    # compute a n^2 / speed >= transfer b n / bw  <=>  n >= b speed / (a bw)
    per_square = attention_flops(1, d, dv=dv, batch_heads=batch * heads) / (2 if causal else 1)
    per_position = ring_traffic_bytes(batch, kv_heads, 1, d, dv, dtype)
    length = max(1, math.ceil(per_position * speed / (per_square * link_bandwidth) - 1e-9))
    return RingStepCost(flops, sent, flops / speed, sent / link_bandwidth, length)


__all__ = ["merge_partials", "split_sequence", "join_sequence", "chunks_of_rank",
           "ring_block_plan", "visible_pairs", "work_per_rank", "work_ratio", "StepCount",
           "RingStats", "ring_traffic_bytes", "ring_attention", "RingAttention",
           "RingRankError", "run_ring", "ring_run_split", "ring_work", "ring_jobs", "RingStepCost",
           "ring_step_cost", "NVLINK_H100", "INFINIBAND_NDR", "LAYOUTS"]
