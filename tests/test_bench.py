"""Tests of attnbook.bench (no timed assertions: only that timing runs and path lengths are exact)."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.bench import max_path_length, time_callable


def band(n: int, back: int, ahead: int) -> torch.Tensor:
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # i - j
    return (offset <= back) & (-offset <= ahead)


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_path_lengths_of_attention_recurrence_and_convolution(n):
    assert max_path_length(torch.ones(n, n, dtype=torch.bool)) == (1 if n > 1 else 0)
    assert max_path_length(band(n, 1, 0)) == n - 1
    assert max_path_length(band(n, 2, 2)) == math.ceil((n - 1) / 2)


def test_max_path_length_refuses_bad_input():
    with pytest.raises(ValueError, match=r"square \(n, n\).*\(2, 3\)"):
        max_path_length(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="True diagonal"):
        max_path_length(torch.zeros(3, 3, dtype=torch.bool))


def test_time_callable_counts_calls_and_checks_arguments():
    calls = []
    seconds = time_callable(lambda: calls.append(1), repeats=3, warmup=2, statistic="min")
    assert len(calls) == 5 and seconds >= 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_callable(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="statistic must be"):
        time_callable(lambda: None, statistic="mean")
