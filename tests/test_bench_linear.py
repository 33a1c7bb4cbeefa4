"""The linear-attention benchmark (attnbook.bench.linear) and its command line."""

import json

import pytest
import torch

from attnbook.bench.__main__ import main
from attnbook.bench.linear import BASELINE, format_rows, lean_recurrence, linear_benchmark
from attnbook.linear_attention import (
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
)

TIMES = {BASELINE: 2.0, "recurrent": 4.0, "chunked": 0.1, "chunked C/2": 0.2,
         "chunked 2C": 0.25, "parallel": 0.5}


def fake_timer(fn, repeats):
    fn()  # runs once: the rows must come from real calls
    return TIMES[fake_timer.order.pop(0)]


def test_rows_and_ratios_against_the_lean_recurrence():
    fake_timer.order = list(TIMES) * 2
    rows = linear_benchmark([8, 12], heads=[1], head_dim=4, chunk_size=4, timer=fake_timer)
    assert [(r["N"], r["impl"]) for r in rows] == [(n, name) for n in (8, 12) for name in TIMES]
    assert [r["speedup"] for r in rows[:6]] == [1.0, 0.5, 20.0, 10.0, 8.0, 4.0]
    assert all(r["baseline"] == "lean recurrent" for r in rows)
    table = format_rows(rows)
    assert "speed-up vs lean recurrent" in table and "20.0x" in table


@pytest.mark.parametrize("shape,dtype,tol", [((2, 3, 13, 8), torch.float64, 1e-12),
                                             ((5, 7, 4), torch.float64, 1e-12),
                                             ((1, 4, 64, 16), torch.float32, 1e-5)])
def test_lean_recurrence_equals_the_package(shape, dtype, tol):
    g = torch.Generator().manual_seed(len(shape))
    q, k = (torch.randn(*shape, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(*shape[:-1], 5, generator=g, dtype=dtype)
    lean = lean_recurrence(q, k, v)
    assert lean.shape == v.shape and lean.dtype == dtype
    assert (lean - causal_linear_attention_parallel(q, k, v)).abs().max() < tol
    assert (lean - causal_linear_attention_recurrent(q, k, v)).abs().max() < tol


def test_command_line_writes_rows_with_machine(tmp_path, capsys):
    out = tmp_path / "linear.jsonl"
    assert main(["linear", "--lengths", "16", "--heads", "1", "--head-dim", "4", "--chunk", "4",
                 "--repeats", "1", "--warmup", "0", "--only", "chunked", "--out",
                 str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["impl"] for r in rows] == ["lean recurrent", "chunked"]
    assert rows[0]["machine"]["device"] == "cpu" and rows[0]["settings"]["threads"] == 1
    assert rows[0]["baseline"] == "lean recurrent"
    assert "speed-up" in capsys.readouterr().out
