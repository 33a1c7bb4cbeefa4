"""The FlashAttention benchmark: `python -m attnbook.bench flash --device cpu|cuda`.

Every row times one implementation on one shape, causal or not, forward or
forward+backward, and is written as one JSON object per line to a results file
under benchmarks/ that names the machine. On the GPU it compares the book's Triton
kernel with plain attention and with `scaled_dot_product_attention` pinned to each
of its backends; on the CPU, the tiled PyTorch algorithm with plain attention and
`scaled_dot_product_attention`.

Timing: a few warm-up calls, then at least 20 timed runs; the device is synchronised
before every clock read, and the median is reported. A run holds enough calls to
last about a millisecond, so the clock's and the launch's overheads stay small.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

GPU_SHAPES = [(8, 16, 2048, 128), (2, 16, 8192, 128), (4, 32, 4096, 64), (32, 16, 512, 128),
              (1, 16, 16384, 64)]
CPU_SHAPES = [(1, 1, 1024, 64), (1, 1, 4096, 64)]
SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION",
                 "sdpa-efficient": "EFFICIENT_ATTENTION"}


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device, repeats: int = 20, warmup: int = 3,
            min_run_seconds: float = 1e-3, clock: Callable[[], float] = time.perf_counter,
            sync: Callable[[], None] | None = None) -> float:
    """Median seconds per call of fn over `repeats` runs, synchronising before every clock read."""
    sync = sync or (lambda: synchronize(device))
    for _ in range(warmup):
        fn()
    sync()
    start = clock()
    fn()
    sync()
    calls = max(1, math.ceil(min_run_seconds / max(clock() - start, 1e-9)))
    per_call = []
    for _ in range(repeats):
        sync()
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        per_call.append((clock() - start) / calls)
    return statistics.median(per_call)


def attention_flops(batch: int, heads: int, n: int, head_dim: int, causal: bool, backward: bool) -> float:
    """4·B·H·N²·d for the forward (two matmuls), halved when causal; the backward costs 2.5 forwards."""
    forward = 4.0 * batch * heads * n * n * head_dim / (2 if causal else 1)
    return forward * 3.5 if backward else forward


def machine_description(device: str) -> dict:
    """What the numbers were measured on: the device, its driver and the software versions."""
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "host": platform.node()}
    try:  # the version without importing triton (attnbook.flash must set it up first)
        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, cuda=torch.version.cuda, multiprocessors=props.multi_processor_count,
                    memory_gb=round(props.total_memory / 1e9, 1))
        try:
            import subprocess
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info["cpu_count"] = torch.get_num_threads()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return info


def plain_attention(q, k, v, causal: bool):
    """softmax(q kᵀ/√d) v with the N x N matrix in memory: the baseline every tiled kernel removes."""
    from attnbook.attention import causal_mask, scaled_dot_product_attention
    mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None
    return scaled_dot_product_attention(q, k, v, mask=mask)[0]


def implementations(device: str, autotune: bool | None) -> dict[str, Callable]:
    """name -> fn(q, k, v, causal) for the implementations measured on this device."""
    import torch.nn.functional as F
    impls = {"plain": plain_attention}
    if device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from attnbook.flash import flash_attention
        impls["triton"] = lambda q, k, v, causal: flash_attention(q, k, v, causal=causal, autotune=autotune)
        for name, backend_name in SDPA_BACKENDS.items():
            impls[name] = _pinned_sdpa(getattr(SDPBackend, backend_name), sdpa_kernel)
    else:
        from attnbook.flash.reference import tiled_attention
        impls["tiled"] = tiled_attention
        impls["sdpa"] = lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return impls


def _pinned_sdpa(backend, sdpa_kernel) -> Callable:
    """scaled_dot_product_attention forced onto one backend (an error if it cannot run the input)."""
    import torch.nn.functional as F

    def pinned(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return pinned


def uses_process_time(device: str) -> bool:
    """On a CPU with one thread, time by the process's own CPU time: other programs on a
    shared machine do not count, and it equals the wall time of an idle machine. With
    more threads (their times add up) and on a GPU, the wall clock."""
    return device == "cpu" and torch.get_num_threads() == 1


def time_row(fn, shape, causal: bool, backward: bool, device: str, dtype: torch.dtype, repeats: int) -> float:
    batch, heads, n, head_dim = shape
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype, generator=generator,
                           requires_grad=backward) for _ in range(3))
    if backward:
        grad = torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype, generator=generator)

        def step():
            out = fn(q, k, v, causal)
            torch.autograd.grad(out, (q, k, v), grad)
    else:
        def step():
            with torch.no_grad():
                fn(q, k, v, causal)
    clock = time.process_time if uses_process_time(device) else time.perf_counter
    return measure(step, device, repeats=repeats, clock=clock)


def add_ratios(rows: list[dict], ours: str, baselines: list[str]) -> None:
    """ratio = our TFLOP/s over the fastest baseline's on the same row (shape, causal, pass)."""
    def key(row):
        return row["B"], row["H"], row["N"], row["d"], row["causal"], row["pass"]
    best = {}
    for row in rows:
        if row["impl"] in baselines and row.get("tflops"):
            best[key(row)] = max(best.get(key(row), 0.0), row["tflops"])
    for row in rows:
        if row["impl"] == ours and row.get("tflops") and best.get(key(row)):
            row["ratio"] = row["tflops"] / best[key(row)]


def run_time_rows(device: str, dtype: torch.dtype, shapes, impls: dict, repeats: int, machine: dict):
    rows = []
    for shape in shapes:
        for causal in (False, True):
            for backward in (False, True):
                for name, fn in impls.items():
                    batch, heads, n, head_dim = shape
                    row = {"kind": "time", "impl": name, "B": batch, "H": heads, "N": n, "d": head_dim,
                           "causal": causal, "pass": "forward+backward" if backward else "forward",
                           "dtype": str(dtype).removeprefix("torch."), "machine": machine}
                    try:
                        seconds = time_row(fn, shape, causal, backward, device, dtype, repeats)
                        flops = attention_flops(batch, heads, n, head_dim, causal, backward)
                        row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12)
                    except (RuntimeError, ValueError, torch.OutOfMemoryError) as error:
                        row["error"] = str(error).splitlines()[0][:300]
                    if device == "cuda":
                        torch.cuda.empty_cache()
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


def peak_memory_rows(device: str, dtype: torch.dtype, shape, impls: dict, machine: dict) -> list[dict]:
    """Peak memory each implementation allocates beyond its inputs, forward+backward on CUDA,
    forward on the CPU."""
    from attnbook.bench.memory import peak_memory_bytes
    rows = []
    batch, heads, n, head_dim = shape
    backward = device == "cuda"
    for causal in (False, True):
        for name, fn in impls.items():
            generator = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(*shape, device=device, dtype=dtype, generator=generator,
                                   requires_grad=backward) for _ in range(3))

            def step(fn=fn, q=q, k=k, v=v, causal=causal):
                if backward:
                    out = fn(q, k, v, causal)
                    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
                else:
                    with torch.no_grad():
                        fn(q, k, v, causal)
            row = {"kind": "memory", "impl": name, "B": batch, "H": heads, "N": n, "d": head_dim,
                   "causal": causal, "pass": "forward+backward" if backward else "forward",
                   "dtype": str(dtype).removeprefix("torch."), "machine": machine}
            try:
                row["peak_bytes"] = peak_memory_bytes(step, device=device)
            except (RuntimeError, torch.OutOfMemoryError) as error:
                row["error"] = str(error).splitlines()[0][:300]
            rows.append(row)
            print(format_row(row), flush=True)
            del q, k, v
    return rows


def format_row(row: dict) -> str:
    head = (f"{row['impl']:<15} B={row['B']:<3} H={row['H']:<3} N={row['N']:<6} d={row['d']:<4} "
            f"{'causal' if row['causal'] else 'full':<6} {row['pass']:<17}")
    if "error" in row:
        return f"{head} error: {row['error']}"
    if row["kind"] == "memory":
        return f"{head} peak {row['peak_bytes'] / 2**20:10.1f} MiB"
    ratio = f"  ratio {row['ratio']:.2f}" if "ratio" in row else ""
    return f"{head} {row['ms']:9.3f} ms {row['tflops']:10.4f} TFLOP/s{ratio}"


def load_results(path: str | Path) -> list[dict]:
    """The rows of a results file (one JSON object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
