"""What attention costs: FLOPs, bytes moved, peak memory, arithmetic intensity, roofline.

Formulas only (no measurement: that is `attnbook.bench.memory`). Conventions:
one "FLOP" is one multiplication or one addition, so a multiply-add counts 2;
`batch_heads` is B * H, the number of independent (N x N) attention problems;
`n_queries` / `n_keys` are Lq / Lk (self-attention: both N); d is the head
dimension of queries and keys, dv that of values (d unless given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PASSES = ("forward", "forward+backward")


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


# FLOPs


def attention_flops(n_queries: int, d: int, n_keys: int | None = None, dv: int | None = None,
                    batch_heads: int = 1, causal: bool = False, passes: str = "forward") -> int:
    """FLOPs of attention's two matrix products, softmax(Q K^T) V, for B * H heads.

    Q K^T: Lq * Lk dot products of length d, 2 d FLOPs each; P V: Lq * dv dot products
    of length Lk, 2 Lk FLOPs each. Forward: 2 Lq Lk (d + dv). The softmax (a few FLOPs
    per score) is left out, as in FlashAttention's benchmarks; so is the work a causal
    mask saves, counted there as half of it (`causal=True` halves the count). The
    backward pass counts 2.5 times the forward (its four products plus the forward's
    Q K^T recomputed), so "forward+backward" is 3.5 times "forward".
    """
    n_keys = n_queries if n_keys is None else n_keys
    dv = d if dv is None else dv
    _check_sizes(n_queries=n_queries, n_keys=n_keys, d=d, dv=dv, batch_heads=batch_heads)
    if passes not in PASSES:
        raise ValueError(f"passes must be one of {PASSES}, got {passes!r}")
    forward = 2 * batch_heads * n_queries * n_keys * (d + dv)
    if causal:
        forward //= 2
    return forward if passes == "forward" else forward * 7 // 2


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of an (m, k) @ (k, n) product: m n dot products of length k, 2 k FLOPs each."""
    _check_sizes(m=m, n=n, k=k)
    return 2 * m * n * k


# Bytes moved between the GPU's memory (HBM) and its chip


def plain_attention_hbm_bytes(n: int, d: int, batch_heads: int = 1,
                              bytes_per_element: int = 2) -> int:
    """Bytes plain attention moves to and from HBM in the forward pass, as three kernels:

    S = Q K^T reads Q and K (2 N d) and writes S (N^2); the softmax reads S and writes
    P (2 N^2); O = P V reads P and V (N^2 + N d) and writes O (N d). In all
    4 N^2 + 4 N d elements per head: the N x N matrix crosses the memory bus four times.
    """
    _check_sizes(n=n, d=d, batch_heads=batch_heads, bytes_per_element=bytes_per_element)
    return bytes_per_element * batch_heads * (4 * n * n + 4 * n * d)


def tiled_attention_hbm_bytes(n: int, d: int, batch_heads: int = 1, bytes_per_element: int = 2,
                              block_q: int | None = None) -> int:
    """Bytes the tiled algorithm (FlashAttention) moves to and from HBM in the forward pass.

    Scores never leave the chip. Each block of `block_q` queries is read once and its
    output written once (2 N d in all), and every block reads all of K and V (2 N d per
    block, ceil(N / block_q) blocks). With `block_q=None` K and V are counted once, as
    if they stayed in a cache: 4 N d, the least any algorithm moves.
    """
    _check_sizes(n=n, d=d, batch_heads=batch_heads, bytes_per_element=bytes_per_element)
    if block_q is None:
        kv_reads = 1
    else:
        _check_sizes(block_q=block_q)
        kv_reads = math.ceil(n / block_q)
    return bytes_per_element * batch_heads * (2 * n * d + 2 * n * d * kv_reads)


def package_attention_hbm_bytes(n: int, d: int, batch_heads: int = 1,
                                dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the package's `scaled_dot_product_attention` moves to and from HBM in the
    forward pass without a mask, as PyTorch runs it on a GPU: one kernel per operation,
    each reading its inputs from HBM and writing its result back.

    Per score in half precision: Q K^T writes S (2 bytes); `.float()` reads S and writes
    a float32 copy (2 + 4); the row maximum reads it (4); `x - row_max` reads and
    writes (4 + 4); `exp` reads and writes (4 + 4); the row sum reads (4); the division
    reads and writes (4 + 4); the cast back reads and writes (4 + 2); P V reads P (2):
    48 bytes, 24 elements' worth. In float32 the copy and the cast do nothing: 40 bytes,
    10 elements. Per head and row of Q: `q * scale` reads and writes Q, Q K^T reads the
    scaled Q and K, P V reads V and writes O: 6 N d elements. The per-row maxima and
    sums (a few N numbers) are left out.
    """
    _check_sizes(n=n, d=d, batch_heads=batch_heads)
    size = _element_size(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        per_score = size + (size + 4) + 4 + 8 + 8 + 4 + 8 + (4 + size) + size
    else:
        per_score = size * (1 + 1 + 2 + 2 + 1 + 2 + 1)
    return batch_heads * (per_score * n * n + 6 * n * d * size)


def matmul_hbm_bytes(m: int, n: int, k: int, bytes_per_element: int = 2) -> int:
    """Bytes an (m, k) @ (k, n) product moves at the least: both inputs read, the output
    written once each."""
    _check_sizes(m=m, n=n, k=k, bytes_per_element=bytes_per_element)
    return bytes_per_element * (m * k + k * n + m * n)


def arithmetic_intensity(flops: float, bytes_moved: float) -> float:
    """FLOPs per byte moved: how much arithmetic a kernel does with each byte it fetches."""
    if not (flops >= 0 and bytes_moved > 0):
        raise ValueError(f"need flops >= 0 and bytes_moved > 0, got {flops!r} and {bytes_moved!r}")
    return flops / bytes_moved


# The roofline


@dataclass(frozen=True)
class GPU:
    """A GPU's ceilings: dense bf16 tensor-core FLOP/s, HBM bytes/s and HBM bytes."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s (datasheets quote twice as much "with sparsity")
    bandwidth: float  # HBM bytes/s
    memory_bytes: float  # HBM capacity in bytes
    source: str  # citation key of the datasheet

    @property
    def ridge(self) -> float:
        """The arithmetic intensity (FLOP/byte) above which a kernel can be compute-bound."""
        return self.peak_flops / self.bandwidth


# NVIDIA's datasheets: 1,979 bf16 TFLOP/s "with sparsity", so 989.4 dense (the H100
# whitepaper's table), and the same chip in the H200, with more and faster memory.
# Memory: the H100's "80GB" counts binary units, 80 GiB = 80 * 2**30 bytes;
# the H200's "141GB" is kept as the datasheet writes it, 141e9 bytes (the H200 of
# benchmarks/ reports 150.1e9 bytes, about 140 GiB, to PyTorch).
H100_SXM = GPU("NVIDIA H100 SXM", 989.4e12, 3.35e12, 80 * 2**30, "nvidia2022h100")
H200_SXM = GPU("NVIDIA H200 SXM", 989.4e12, 4.8e12, 141e9, "nvidia2024h200")


def attainable_flops(intensity: float, gpu: GPU) -> float:
    """The roofline: FLOP/s a kernel of this arithmetic intensity can reach at best,
    min(peak FLOP/s, intensity * bandwidth)."""
    if not intensity > 0:
        raise ValueError(f"intensity must be > 0, got {intensity!r}")
    return min(gpu.peak_flops, intensity * gpu.bandwidth)


# Peak memory of the package's plain attention


def _element_size(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return torch.empty((), dtype=dtype).element_size()


def plain_attention_peak_bytes(n_queries: int, n_keys: int | None = None, batch_heads: int = 1,
                               dtype: torch.dtype = torch.float32) -> int:
    """Predicted extra memory at the peak of one forward call of
    `attnbook.attention.scaled_dot_product_attention` without a mask or autograd.

    At its worst moment three (Lq x Lk) matrices are alive per head: the scores, the
    exponentials and either exp(scores - max) (while the exponential is taken) or the
    normalised weights (while they are divided). Half-precision scores are upcast to
    float32 for the softmax, so there it is the scores (2 bytes), their float32 copy,
    the exponentials and the weights (4 bytes each), and the weights cast back (2
    bytes): 16 bytes per score instead of 3 * 2. Per query row a maximum and a sum
    stay alive too (float32 for half precision). Q, K and V exist before the call and
    do not count; the output is allocated after the peak.
    """
    n_keys = n_queries if n_keys is None else n_keys
    _check_sizes(n_queries=n_queries, n_keys=n_keys, batch_heads=batch_heads)
    size = _element_size(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        per_score, per_row = size + 3 * 4 + size, 2 * 4
    else:
        per_score, per_row = 3 * size, 2 * size
    return batch_heads * (per_score * n_queries * n_keys + per_row * n_queries)


def max_length_for_memory(memory_bytes: float, batch_heads: int = 1,
                          dtype: torch.dtype = torch.float32) -> int:
    """The longest self-attention sequence N whose predicted peak memory
    (`plain_attention_peak_bytes(N, N, batch_heads, dtype)`) fits in `memory_bytes`
    (0 if not even N = 1 fits)."""
    _check_sizes(batch_heads=batch_heads)
    if not memory_bytes > 0:
        raise ValueError(f"memory_bytes must be > 0, got {memory_bytes!r}")
    # The peak is a N^2 + b N: solve a N^2 + b N = memory_bytes, then settle the rounding.
    a = plain_attention_peak_bytes(1, 2, batch_heads, dtype) - plain_attention_peak_bytes(
        1, 1, batch_heads, dtype)
    b = plain_attention_peak_bytes(1, 1, batch_heads, dtype) - a
    n = int((-b + math.sqrt(b * b + 4 * a * memory_bytes)) / (2 * a))

    def fits(length: int) -> bool:
        return length == 0 or plain_attention_peak_bytes(length, length, batch_heads,
                                                          dtype) <= memory_bytes
    while not fits(n):
        n -= 1
    while fits(n + 1):
        n += 1
    return n
