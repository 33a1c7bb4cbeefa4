"""Tests of attnbook.cost: the formulas against direct counts, and the predicted peak
memory of plain attention against the measured one."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention import scaled_dot_product_attention
from attnbook.bench.memory import peak_memory_bytes
from attnbook.cost import (
    H100_SXM,
    H200_SXM,
    arithmetic_intensity,
    attainable_flops,
    attention_flops,
    matmul_flops,
    matmul_hbm_bytes,
    max_length_for_memory,
    package_attention_hbm_bytes,
    plain_attention_hbm_bytes,
    plain_attention_peak_bytes,
    tiled_attention_hbm_bytes,
)


def test_attention_flops_count_the_two_products():
    # Q K^T: (5, 3) @ (3, 7) = 2*5*7*3; P V: (5, 7) @ (7, 4) = 2*5*4*7
    assert attention_flops(5, 3, n_keys=7, dv=4) == 2 * 5 * 7 * 3 + 2 * 5 * 4 * 7
    assert attention_flops(5, 3, n_keys=7, dv=4) == matmul_flops(5, 7, 3) + matmul_flops(5, 4, 7)
    assert attention_flops(1024, 64) == 4 * 1024**2 * 64
    assert attention_flops(1024, 64, batch_heads=6) == 6 * attention_flops(1024, 64)
    assert attention_flops(1024, 64, causal=True) == attention_flops(1024, 64) // 2
    assert attention_flops(1024, 64, passes="forward+backward") == 3.5 * attention_flops(1024, 64)


def test_bytes_moved():
    n, d = 1000, 64
    assert plain_attention_hbm_bytes(n, d, bytes_per_element=1) == 4 * n * n + 4 * n * d
    assert plain_attention_hbm_bytes(n, d, batch_heads=3) == 3 * 2 * (4 * n * n + 4 * n * d)
    assert tiled_attention_hbm_bytes(n, d, bytes_per_element=1) == 4 * n * d
    # 8 blocks of 128 queries (the last one short), each reading K and V
    assert tiled_attention_hbm_bytes(n, d, bytes_per_element=1, block_q=128) == 2 * n * d + 8 * 2 * n * d
    assert matmul_hbm_bytes(2, 3, 4, bytes_per_element=1) == 2 * 4 + 4 * 3 + 2 * 3


def test_package_attention_hbm_bytes_count_every_pass_of_the_softmax():
    n, d = 1000, 64
    # bf16: S written (2), upcast (2 + 4), max (4), subtract (8), exp (8), sum (4),
    # divide (8), cast back (4 + 2), P read by P V (2): 48 bytes per score
    assert package_attention_hbm_bytes(n, d) == 48 * n * n + 6 * n * d * 2
    assert package_attention_hbm_bytes(n, d, 3, torch.float16) == 3 * (
        48 * n * n + 12 * n * d)
    # float32: no copy, no cast: 4 + 4 + 8 + 8 + 4 + 8 + 4 = 40 bytes per score
    assert package_attention_hbm_bytes(n, d, dtype=torch.float32) == 40 * n * n + 24 * n * d
    # its intensity tends to d / 12 in bf16: 5.3 FLOP/byte at d = 64
    intensity = arithmetic_intensity(attention_flops(16384, 64),
                                     package_attention_hbm_bytes(16384, 64))
    assert intensity == pytest.approx(64 / 12, rel=0.01)
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        package_attention_hbm_bytes(8, 4, dtype=torch.int32)


def test_gpu_memory_in_bytes():
    assert H100_SXM.memory_bytes == 80 * 2**30  # 80 GiB, about 8.59e10 bytes
    assert H200_SXM.memory_bytes == 141e9


def test_intensities_and_the_roofline():
    n, d = 16384, 64
    plain = arithmetic_intensity(attention_flops(n, d), plain_attention_hbm_bytes(n, d))
    tiled = arithmetic_intensity(attention_flops(n, d),
                                 tiled_attention_hbm_bytes(n, d, block_q=128))
    square = arithmetic_intensity(matmul_flops(n, n, n), matmul_hbm_bytes(n, n, n))
    assert plain == pytest.approx(n * d / (2 * (n + d)))  # -> d / 2 in bf16
    assert tiled == pytest.approx(128, rel=0.01)  # -> block_q in bf16
    assert square == pytest.approx(2 * n / 6)
    assert plain < H100_SXM.ridge < square
    assert H100_SXM.ridge == pytest.approx(295.3, abs=0.1)
    assert H200_SXM.ridge == pytest.approx(206.1, abs=0.1)
    assert attainable_flops(plain, H100_SXM) == pytest.approx(plain * 3.35e12)
    assert attainable_flops(square, H100_SXM) == H100_SXM.peak_flops


def test_peak_prediction_formula():
    assert plain_attention_peak_bytes(1024) == 12 * 1024**2 + 8 * 1024
    assert plain_attention_peak_bytes(10, 20, batch_heads=3, dtype=torch.float64) == 3 * (
        24 * 200 + 16 * 10)
    assert plain_attention_peak_bytes(10, dtype=torch.bfloat16) == 16 * 100 + 8 * 10


@pytest.mark.parametrize("shape, n_keys, dtype", [
    ((1, 300), 300, torch.float32),
    ((2, 3, 100), 70, torch.float32),
    ((4, 64), 200, torch.bfloat16),
    ((2, 50), 50, torch.float64),
])
def test_predicted_peak_memory_is_the_measured_one(shape, n_keys, dtype):
    q = torch.randn(*shape, 16, dtype=dtype)
    k, v = (torch.randn(*shape[:-1], n_keys, 16, dtype=dtype) for _ in range(2))
    measured = peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v))
    predicted = plain_attention_peak_bytes(shape[-1], n_keys, math.prod(shape[:-1]), dtype)
    assert measured == predicted, (measured, predicted)


def test_max_length_for_memory():
    for memory, heads, dtype in [(80e9, 1, torch.float32), (80e9, 256, torch.float32),
                                 (141e9, 32, torch.bfloat16), (1e6, 1, torch.float64)]:
        n = max_length_for_memory(memory, heads, dtype)
        assert plain_attention_peak_bytes(n, n, heads, dtype) <= memory
        assert plain_attention_peak_bytes(n + 1, n + 1, heads, dtype) > memory
    assert max_length_for_memory(80e9) == 81649  # sqrt(80e9 / 12), just under
    assert max_length_for_memory(10) == 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_queries must be a positive int"):
        attention_flops(0, 64)
    with pytest.raises(ValueError, match="passes must be one of"):
        attention_flops(8, 64, passes="backward")
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        plain_attention_peak_bytes(8, dtype=torch.int64)
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        tiled_attention_hbm_bytes(8, 4, block_q=0)
    with pytest.raises(ValueError, match="bytes_moved > 0"):
        arithmetic_intensity(1.0, 0)
