"""Tests of attnbook.bench.memory: exact byte counts of known allocations."""

from __future__ import annotations

import pytest
import torch

from attnbook.bench.memory import memory_timeline, peak_memory_bytes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_one_allocation_is_counted_exactly(device):
    # CUDA's allocator rounds every block up to a multiple of 512 bytes; 4096 is one.
    assert peak_memory_bytes(lambda: torch.empty(1024, device=device), device) == 4096
    assert peak_memory_bytes(lambda: None, device) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_the_peak_is_the_most_alive_at_once_not_the_sum_of_allocations(device):
    def fn():
        a = torch.empty(1024, device=device)  # 4 KiB
        b = torch.empty(2048, device=device)  # 8 KiB: 12 KiB alive
        del a
        c = torch.empty(1536, device=device)  # 6 KiB: 14 KiB alive, the peak
        del b, c
        return torch.empty(512, device=device)  # 2 KiB: returned, alive to the end

    assert peak_memory_bytes(fn, device) == 14 * 1024


@pytest.mark.parametrize("device", DEVICES)
def test_memory_allocated_before_the_call_does_not_count(device):
    held = torch.empty(1 << 20, device=device)  # 4 MiB, alive throughout
    assert peak_memory_bytes(held.clone, device) == 4 << 20  # only the copy
    assert peak_memory_bytes(lambda: held.view(-1, 2), device) == 0  # a view: no new memory


def test_the_profiler_prints_nothing(capfd):
    peak_memory_bytes(lambda: torch.empty(10))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "", captured


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="fn must be a callable"):
        peak_memory_bytes(42)
    with pytest.raises(ValueError, match="device must be 'cpu' or a CUDA device"):
        peak_memory_bytes(lambda: None, "not a device")
    with pytest.raises(ValueError, match="device must be 'cpu' or a CUDA device"):
        peak_memory_bytes(lambda: None, "meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_raises():
    with pytest.raises(ValueError, match="CUDA is not available"):
        peak_memory_bytes(lambda: None, "cuda")


def test_the_timeline_lists_what_is_alive_after_each_event():
    def fn():
        a = torch.empty(1024)
        b = torch.empty(2048)
        del a, b

    seconds, alive = memory_timeline(fn)
    assert alive == [4096, 4096 + 8192, 8192, 0]
    assert seconds[0] == 0 and seconds == sorted(seconds)
    assert memory_timeline(lambda: None) == ([], [])
