"""`python -m attnbook.bench flash --device cpu|cuda`: the benchmarks of the book's later chapters.

    flash    FlashAttention against plain attention and scaled_dot_product_attention
             (chapter 11); writes benchmarks/flash-<device>-<tag>.jsonl
    kvcache  generation with the KV cache against recomputing every step (chapter 9):
             tokens per second and the speed-up, per number of new tokens
    linear   causal linear attention, chunked and quadratic, against the token-by-token
             recurrence (chapter 12): seconds and the speed-up over "lean recurrent"
    window   one decoding step with a cache capped at the window against a full cache
             (chapter 12): milliseconds per token, per context length
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch


def flash_main(args: argparse.Namespace) -> int:
    from attnbook.bench import flash
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available here")
        return 2
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    machine = flash.machine_description(device)
    machine["date"] = datetime.date.today().isoformat()
    machine["autotune"] = not args.untuned
    if args.threads:
        torch.set_num_threads(args.threads)
        machine["threads"] = args.threads
    machine["clock"] = "process CPU time" if flash.uses_process_time(device) else "wall clock"
    shapes = flash.GPU_SHAPES if device == "cuda" else flash.CPU_SHAPES
    if args.shapes:
        shapes = [shapes[i] for i in args.shapes]
    impls = flash.implementations(device, autotune=not args.untuned)
    if args.only:
        impls = {name: fn for name, fn in impls.items() if name in args.only}
    print(f"machine: {json.dumps(machine)}", flush=True)
    rows = [] if args.no_time else flash.run_time_rows(device, dtype, shapes, impls, args.repeats, machine)
    ours, baselines = ("triton", list(flash.SDPA_BACKENDS)) if device == "cuda" else ("tiled", ["sdpa"])
    flash.add_ratios(rows, ours, baselines)
    if args.memory_n:
        head_dim = 64
        shape = (1, 16, args.memory_n, head_dim) if device == "cuda" else (1, 1, args.memory_n, head_dim)
        rows += flash.peak_memory_rows(device, dtype, shape, impls, machine)
    print("\nratios of", ours, "to the fastest of", baselines)
    for row in rows:
        if "ratio" in row:
            print(flash.format_row(row))
    out = Path(args.out or f"benchmarks/flash-{device}-{args.tag}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {out}")
    return 0


def kvcache_main(args: argparse.Namespace) -> int:
    from attnbook.bench import flash, time_callable
    from attnbook.bench.kvcache import format_rows, kv_cache_benchmark
    from attnbook.lm import CausalLM
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the weights do not matter to the speed; the sizes do
    model = CausalLM(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                     n_heads=args.heads, max_len=max(args.lengths) + 1)
    settings = {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "vocab": args.vocab,
                "prompt": 1, "repeats": args.repeats, "warmup": args.warmup,
                "threads": torch.get_num_threads()}
    print(f"model and timing: {json.dumps(settings)}; greedy generation, fastest of the repeats")
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    settings["clock"] = "process CPU time" if clock is time.process_time else "wall clock"

    def timer(fn, repeats):
        return time_callable(fn, repeats=repeats, warmup=args.warmup, statistic="min", clock=clock)
    rows = kv_cache_benchmark(model, args.lengths, repeats=args.repeats, timer=timer)
    print(format_rows(rows))
    if args.out:
        machine = flash.machine_description("cpu")
        machine["date"] = datetime.date.today().isoformat()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({**row, "settings": settings, "machine": machine}) + "\n"
                               for row in rows))
        print(f"wrote {len(rows)} rows to {out}")
    return 0


def _write_rows(rows: list[dict], settings: dict, out: str | None) -> None:
    from attnbook.bench import flash
    if not out:
        return
    machine = flash.machine_description("cpu")
    machine["date"] = datetime.date.today().isoformat()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**row, "settings": settings, "machine": machine}) + "\n"
                            for row in rows))
    print(f"wrote {len(rows)} rows to {path}")


def _clock():
    """Process CPU time on one thread (other programs do not count), else the wall clock."""
    if torch.get_num_threads() == 1:
        return time.process_time, "process CPU time"
    return time.perf_counter, "wall clock"


def linear_main(args: argparse.Namespace) -> int:
    from attnbook.bench import time_callable
    from attnbook.bench.linear import BASELINE, format_rows, linear_benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    clock, clock_name = _clock()
    settings = {"dtype": "float32", "chunk": args.chunk, "repeats": args.repeats,
                "warmup": args.warmup, "threads": torch.get_num_threads(),
                "clock": clock_name, "statistic": "fastest of the repeats",
                "baseline": BASELINE}
    print(f"settings: {json.dumps(settings)}")

    def timer(fn, repeats):
        return time_callable(fn, repeats=repeats, warmup=args.warmup, statistic="min",
                             clock=clock)
    rows = linear_benchmark(args.lengths, args.heads, args.head_dim, args.chunk,
                            args.repeats, timer=timer, only=args.only)
    print(format_rows(rows))
    _write_rows(rows, settings, args.out)
    return 0


def window_main(args: argparse.Namespace) -> int:
    from attnbook.bench import time_callable
    from attnbook.bench.window import format_rows, window_benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    clock, clock_name = _clock()
    settings = {"dtype": "float32", "batch": 1, "layers": 1, "repeats": args.repeats,
                "warmup": args.warmup, "threads": torch.get_num_threads(),
                "clock": clock_name, "statistic": "fastest of the repeats"}
    print(f"settings: {json.dumps(settings)}")

    def timer(fn, repeats):
        return time_callable(fn, repeats=repeats, warmup=args.warmup, statistic="min",
                             clock=clock)
    rows = window_benchmark(args.contexts, args.window, args.heads, args.head_dim,
                            args.steps, args.repeats, timer=timer)
    print(format_rows(rows))
    _write_rows(rows, settings, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbook.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    flash = commands.add_parser("flash", help="FlashAttention against PyTorch's attention")
    flash.add_argument("--device", choices=["cpu", "cuda"],
                       default="cuda" if torch.cuda.is_available() else "cpu")
    flash.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                       help="default: bfloat16 on cuda, float32 on cpu")
    flash.add_argument("--repeats", type=int, default=20, help="timed runs per row (median reported; >= 20)")
    flash.add_argument("--shapes", type=int, nargs="*", help="indices into the shape list (default: all)")
    flash.add_argument("--only", nargs="*", help="implementations to run (default: all)")
    flash.add_argument("--untuned", action="store_true", help="the Triton kernel with one fixed tile setting")
    flash.add_argument("--memory-n", type=int, default=None,
                       help="also measure peak memory at this length (16384 on the GPU, 32768 on the CPU)")
    flash.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    flash.add_argument("--no-time", action="store_true", help="only the peak-memory rows")
    flash.add_argument("--tag", default="results", help="results file: benchmarks/flash-<device>-<tag>.jsonl")
    flash.add_argument("--out", default=None, help="results file (overrides --tag)")
    kvcache = commands.add_parser("kvcache", help="generation with and without the KV cache")
    kvcache.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    kvcache.add_argument("--d-model", type=int, default=128)
    kvcache.add_argument("--layers", type=int, default=4)
    kvcache.add_argument("--heads", type=int, default=4)
    kvcache.add_argument("--vocab", type=int, default=96, help="chapter 9's character vocabulary")
    kvcache.add_argument("--repeats", type=int, default=3)
    kvcache.add_argument("--warmup", type=int, default=1)
    kvcache.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    kvcache.add_argument("--out", default=None, help="results file, e.g. benchmarks/kvcache-cpu.jsonl")
    linear = commands.add_parser("linear", help="chunked against the lean recurrence of linear attention")
    linear.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    linear.add_argument("--heads", type=int, nargs="+", default=[1, 4],
                        help="numbers of heads to measure, each a separate set of rows")
    linear.add_argument("--head-dim", type=int, default=64)
    linear.add_argument("--chunk", type=int, default=64, help="chunk size of the chunked form")
    linear.add_argument("--only", nargs="*", help="besides lean recurrent: recurrent, chunked, "
                        "chunked C/2, chunked 2C, parallel")
    linear.add_argument("--repeats", type=int, default=3)
    linear.add_argument("--warmup", type=int, default=1)
    linear.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    linear.add_argument("--out", default=None, help="results file, e.g. benchmarks/linear-cpu.jsonl")
    window = commands.add_parser("window", help="decoding with a sliding-window cache")
    window.add_argument("--contexts", type=int, nargs="+",
                        default=[1024, 2048, 4096, 8192, 16384, 32768])
    window.add_argument("--window", type=int, default=1024)
    window.add_argument("--heads", type=int, default=4)
    window.add_argument("--head-dim", type=int, default=64)
    window.add_argument("--steps", type=int, default=16, help="decoding steps per timed run")
    window.add_argument("--repeats", type=int, default=5)
    window.add_argument("--warmup", type=int, default=1)
    window.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    window.add_argument("--out", default=None, help="results file, e.g. benchmarks/window-cpu.jsonl")
    args = parser.parse_args(argv)
    if args.command == "linear":
        return linear_main(args)
    if args.command == "window":
        return window_main(args)
    if args.command == "kvcache":
        return kvcache_main(args)
    if args.command == "flash":
        if args.repeats < 20:
            parser.error("--repeats must be at least 20")
        return flash_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
