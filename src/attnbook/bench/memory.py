"""Peak memory: how many bytes a callable allocates at its worst moment.

`peak_memory_bytes(fn, device)` runs `fn()` once and returns the largest amount of
memory that was allocated during the call *on top of* what existed before it:
the extra memory `fn` needs, whatever it frees again before returning.

- On CUDA it reads PyTorch's caching allocator: `torch.cuda.reset_peak_memory_stats`
  before the call, `torch.cuda.max_memory_allocated` after it, minus
  `torch.cuda.memory_allocated` before it. Memory the allocator has cached but not
  handed out does not count; bytes a tensor asks for are counted as the allocator
  rounds them (to multiples of 512 bytes).
- On the CPU PyTorch keeps no such counter, so it records the call with
  `torch.profiler.profile(profile_memory=True)`: the profiler logs every allocation
  and every free of a CPU tensor with its size and time; the running sum of those
  sizes, in time order, is the extra memory alive at each moment, and its maximum
  is the peak. Only memory allocated through PyTorch's allocator counts (NumPy
  arrays and Python objects do not); what a tensor asks for is counted exactly.

One difference: if `fn` frees a tensor that existed before the call, CUDA's counter
goes down, while the CPU profiler, which never saw that block allocated, does not
know its size and ignores the free (PyTorch prints a warning). Functions measured in
the book allocate and free only their own tensors, where both agree.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

import torch


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 (the profiler's library
    logs a line at every start and stop, which a notebook would show)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to redirect: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def memory_timeline(fn: Callable[[], object]) -> tuple[list[float], list[int]]:
    """Run `fn()` once on the CPU and return (seconds, alive): after each allocation or
    free of a CPU tensor during the call, the seconds since the first one and the bytes
    allocated during the call that are still alive. `max(alive)` is the peak that
    `peak_memory_bytes(fn)` returns (0 when nothing was allocated: ([], []))."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_native_stderr():
        prof.start()
    try:
        result = fn()
        del result  # what fn returns was allocated during the call and counts
    finally:
        with _quiet_native_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())  # stable: simultaneous events keep their order
    seconds, alive, total = [], [], 0
    for e in events:
        total += e.nbytes()  # positive when allocated, negative when freed
        seconds.append((e.start_ns() - events[0].start_ns()) / 1e9)
        alive.append(total)
    return seconds, alive


def _cpu_peak(fn: Callable[[], object]) -> int:
    return max([0, *memory_timeline(fn)[1]])


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    del result
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def peak_memory_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Bytes of extra memory `fn()` has allocated at its peak, on `device`.

    Runs `fn()` once (with no arguments: wrap a call in a lambda) and returns the
    maximum, over the duration of the call, of the memory allocated on `device`
    minus the memory allocated there just before the call. What `fn` returns is
    allocated during the call and counts; it is dropped afterwards. `device` is
    "cpu" or a CUDA device ("cuda", "cuda:1", a torch.device).
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable taking no arguments, got a {type(fn).__name__}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}") from error
    if device.type == "cpu":
        return _cpu_peak(fn)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} was asked for, but CUDA is not available")
        return _cuda_peak(fn, device)
    raise ValueError(f"device must be 'cpu' or a CUDA device, got {device}")
