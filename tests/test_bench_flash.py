"""The FlashAttention benchmark harness (attnbook.bench.flash), without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from attnbook.bench import flash


def test_every_clock_read_follows_a_synchronisation():
    """GPU work is asynchronous: a clock read before the device is synchronised measures
    only the launch. Record the order of calls and check each read has a sync before it
    and after the last call of the timed function."""
    events = []
    ticks = iter(range(10_000))

    def clock():
        events.append("clock")
        return next(ticks) * 1e-4

    seconds = flash.measure(lambda: events.append("fn"), "cuda", repeats=20, warmup=2,
                            clock=clock, sync=lambda: events.append("sync"))
    assert seconds > 0
    reads = [i for i, event in enumerate(events) if event == "clock"]
    assert len(reads) >= 2 * 20
    for i in reads:
        before = [e for e in events[:i] if e != "clock"]
        assert before and before[-1] == "sync", f"clock read {i} without a synchronisation before it"


def test_runs_hold_enough_calls_to_last_a_millisecond():
    calls = []
    ticks = iter(range(100_000))
    seconds = flash.measure(lambda: calls.append(1), "cpu", repeats=20, warmup=0,
                            clock=lambda: next(ticks) * 1e-5, sync=lambda: None)
    # each call advances the fake clock by at least one tick of 10 µs: ~100 calls per run
    assert len(calls) > 20 * 50
    assert seconds < 1e-3


@pytest.mark.parametrize("causal, backward, expected", [
    (False, False, 4 * 2 * 3 * 64 ** 2 * 16), (True, False, 2 * 2 * 3 * 64 ** 2 * 16),
    (False, True, 3.5 * 4 * 2 * 3 * 64 ** 2 * 16)])
def test_flop_count(causal, backward, expected):
    assert flash.attention_flops(2, 3, 64, 16, causal, backward) == expected


def test_ratio_is_to_the_fastest_baseline_of_the_same_row():
    row = {"B": 1, "H": 1, "N": 8, "d": 16, "causal": False, "pass": "forward"}
    rows = [dict(row, impl="ours", tflops=3.0), dict(row, impl="a", tflops=2.0),
            dict(row, impl="b", tflops=6.0), dict(row, impl="b", causal=True, tflops=1.0)]
    flash.add_ratios(rows, "ours", ["a", "b"])
    assert rows[0]["ratio"] == pytest.approx(0.5)


def test_cpu_benchmark_writes_one_json_object_per_row(tmp_path, monkeypatch):
    from attnbook.bench.__main__ import main
    monkeypatch.setattr(flash, "CPU_SHAPES", [(1, 2, 64, 16)])
    out = tmp_path / "results.jsonl"
    assert main(["flash", "--device", "cpu", "--shapes", "0", "--only", "tiled", "sdpa",
                 "--out", str(out)]) == 0
    rows = flash.load_results(out)
    assert len(rows) == 2 * 2 * 2  # causal or not, forward or both, two implementations
    assert all(row["machine"]["device"] == "cpu" and row["ms"] > 0 for row in rows)
    assert {row["impl"] for row in rows if "ratio" in row} == {"tiled"}
    json.dumps(rows)


def test_committed_gpu_results_name_their_machine():
    from pathlib import Path
    for path in Path(__file__).parent.parent.glob("benchmarks/flash-*.jsonl"):
        rows = flash.load_results(path)
        assert rows, path
        for row in rows:
            assert row["machine"]["device"] in ("cpu", "cuda"), path
            if row["machine"]["device"] == "cuda":
                assert row["machine"]["gpu"] and row["machine"]["driver"], path
            assert "error" in row or ("ms" in row if row["kind"] == "time" else "peak_bytes" in row), row


def test_no_gpu_is_refused_clearly(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from attnbook.bench.__main__ import main
    assert main(["flash", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_kvcache_benchmark_prints_a_speedup_per_length(capsys):
    from attnbook.bench.__main__ import main
    assert main(["kvcache", "--lengths", "2", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
                 "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "speed-up" in lines[1] and lines[2].split()[0] == "2" and lines[3].split()[0] == "4"
    assert lines[3].endswith("x")
