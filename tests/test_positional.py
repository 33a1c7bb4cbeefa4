"""Tests of attnbook.positional: the tables and the property each encoding promises."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.positional import (
    LearnedPositions,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    query_key_positions,
    rope_frequencies,
    sinusoidal_encoding,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


# --- Sinusoidal -----------------------------------------------------------------------------

def test_sinusoidal_matches_the_formula():
    table = sinusoidal_encoding(50, 16, dtype=torch.float64)
    assert table.shape == (50, 16)
    for p in [0, 1, 7, 49]:
        for i in range(8):
            angle = p / 10_000 ** (2 * i / 16)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


@SETTINGS
@given(d_half=st.integers(1, 32), start=st.integers(0, 200), offset=st.integers(-50, 50))
def test_sinusoidal_dot_product_depends_only_on_the_offset(d_half, start, offset):
    d = 2 * d_half
    table = sinusoidal_encoding(300, d, dtype=torch.float64)
    a, b = start + 50, start + 50 + offset
    dot = table[a] @ table[b]
    expected = torch.cos(offset * 10_000 ** (-2 * torch.arange(d_half, dtype=torch.float64) / d)).sum()
    assert torch.allclose(dot, expected, atol=1e-10)
    assert torch.allclose(table[50] @ table[50 + offset], dot, atol=1e-10)


def test_sinusoidal_offset_is_a_rotation():
    d, k = 8, 5
    table = sinusoidal_encoding(40, d, dtype=torch.float64)
    freqs = rope_frequencies(d)
    rotation = torch.zeros(d, d, dtype=torch.float64)
    for i, w in enumerate(freqs):  # (sin, cos)(p + k) = R_k (sin, cos)(p)
        c, s = torch.cos(k * w), torch.sin(k * w)
        rotation[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[c, s], [-s, c]])
    assert torch.allclose(table[:-k] @ rotation.T, table[k:], atol=1e-10)


def test_sinusoidal_module_adds_the_table():
    x = torch.randn(2, 9, 6)
    assert torch.allclose(SinusoidalPositions(6)(x) - x, sinusoidal_encoding(9, 6), atol=1e-6)


@pytest.mark.parametrize("args, words", [((10, 7), "d_model must be even"),
                                         ((0, 8), "n_positions must be a positive"),
                                         ((4, -2), "d_model must be a positive")])
def test_sinusoidal_rejects_bad_sizes(args, words):
    with pytest.raises(ValueError, match=words):
        sinusoidal_encoding(*args)


# --- Learned --------------------------------------------------------------------------------

def test_learned_positions_add_one_row_per_position():
    module = LearnedPositions(max_len=8, d_model=4)
    x = torch.zeros(3, 5, 4)
    assert torch.equal(module(x), module.table.weight[:5].expand(3, 5, 4))


def test_learned_positions_do_not_exist_past_max_len():
    module = LearnedPositions(max_len=8, d_model=4)
    with pytest.raises(ValueError, match=r"shape \(2, 9, 4\).*max_len=8"):
        module(torch.zeros(2, 9, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., length, 4\), got \(2, 3, 5\)"):
        module(torch.zeros(2, 3, 5))


# --- RoPE -----------------------------------------------------------------------------------

@SETTINGS
@given(d_half=st.integers(1, 16), m=st.integers(0, 500), n=st.integers(0, 500),
       shift=st.integers(-400, 400), seed=st.integers(0, 2**16))
def test_rope_dot_product_depends_only_on_relative_position(d_half, m, n, shift, seed):
    d = 2 * d_half
    generator = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, d, generator=generator)  # each (1, d)

    def score(i, j):
        return (apply_rope(q, torch.tensor([i])) @ apply_rope(k, torch.tensor([j])).T).item()

    shift = max(shift, -min(m, n))
    assert abs(score(m, n) - score(m + shift, n + shift)) < 1e-5 * max(1.0, abs(score(m, n)))


@SETTINGS
@given(batch=st.integers(1, 3), length=st.integers(1, 9), d_half=st.integers(1, 8))
def test_rope_rotates_pairs_keeping_norms(batch, length, d_half):
    x = torch.randn(batch, length, 2 * d_half, dtype=torch.float64)
    y = apply_rope(x)
    assert y.shape == x.shape
    pair_norms = x.unflatten(-1, (d_half, 2)).norm(dim=-1)
    assert torch.allclose(y.unflatten(-1, (d_half, 2)).norm(dim=-1), pair_norms, atol=1e-12)
    assert torch.equal(y[:, 0], x[:, 0])  # position 0 is not rotated


def test_rope_first_pair_turns_by_one_radian_per_position():
    x = torch.tensor([[1.0, 0.0]]).repeat(4, 1)  # (L=4, d=2)
    y = apply_rope(x, torch.arange(4))  # integer positions
    angles = torch.arange(4.0)
    assert torch.allclose(y, torch.stack([angles.cos(), angles.sin()], dim=-1), atol=1e-6)


def test_rope_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(2, 5, 3\) must have an even last dimension"):
        apply_rope(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"positions of shape \(4,\).*\(5,\).*\(2, 5, 4\)"):
        apply_rope(torch.randn(2, 5, 4), torch.arange(4))
    with pytest.raises(ValueError, match="floating-point"):
        apply_rope(torch.ones(2, 5, 4, dtype=torch.long))


def test_query_key_positions_put_queries_last():
    q, k = query_key_positions(2, 5)
    assert q.tolist() == [3, 4] and k.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="n_keys"):
        query_key_positions(5, 2)


# --- ALiBi ----------------------------------------------------------------------------------

def _paper_slopes(n):  # the reference code of Press et al. (2022)
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _paper_slopes(2 * closest)[0::2][:n - closest]


@pytest.mark.parametrize("n_heads", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20])
def test_alibi_slopes_match_the_paper(n_heads):
    assert torch.allclose(alibi_slopes(n_heads), torch.tensor(_paper_slopes(n_heads), dtype=torch.float64))


def test_alibi_slopes_of_eight_heads():
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]


@SETTINGS
@given(n_heads=st.integers(1, 12), n_queries=st.integers(1, 12), extra=st.integers(0, 6))
def test_alibi_bias_is_linear_in_distance_per_head(n_heads, n_queries, extra):
    n_keys = n_queries + extra
    bias = alibi_bias(n_heads, n_queries, n_keys, dtype=torch.float64)
    assert bias.shape == (n_heads, n_queries, n_keys)
    slopes = alibi_slopes(n_heads)
    for i in range(n_queries):
        position = i + extra
        for j in range(n_keys):
            assert torch.allclose(bias[:, i, j], -slopes * abs(position - j), atol=1e-12)
    # along a causal row, each step back costs one slope more
    row = bias[:, -1, :]
    assert torch.allclose(row[:, 1:] - row[:, :-1], slopes[:, None].expand(-1, n_keys - 1))


def test_alibi_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_heads"):
        alibi_slopes(0)
    with pytest.raises(ValueError, match="n_keys"):
        alibi_bias(2, 5, 3)
