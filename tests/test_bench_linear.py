"""The linear-attention benchmark (attnbook.bench.linear) and its command line."""

import json

from attnbook.bench.__main__ import main
from attnbook.bench.linear import format_rows, linear_benchmark


def fake_timer(fn, repeats):
    fn()  # runs once: the rows must come from real calls
    return {"recurrent": 2.0, "chunked": 0.1, "parallel": 0.5}[fake_timer.order.pop(0)]


def test_rows_and_ratios_against_the_recurrent_baseline():
    fake_timer.order = ["recurrent", "chunked", "parallel"] * 2
    rows = linear_benchmark([8, 12], heads=[1], head_dim=4, chunk_size=4, timer=fake_timer)
    assert [(r["N"], r["impl"]) for r in rows] == [
        (8, "recurrent"), (8, "chunked"), (8, "parallel"),
        (12, "recurrent"), (12, "chunked"), (12, "parallel")]
    assert [r["speedup"] for r in rows[:3]] == [1.0, 20.0, 4.0]
    table = format_rows(rows)
    assert "speed-up vs recurrent" in table and "20.0x" in table


def test_command_line_writes_rows_with_machine(tmp_path, capsys):
    out = tmp_path / "linear.jsonl"
    assert main(["linear", "--lengths", "16", "--heads", "1", "--head-dim", "4", "--chunk", "4",
                 "--repeats", "1", "--warmup", "0", "--only", "chunked", "--out",
                 str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["impl"] for r in rows] == ["recurrent", "chunked"]
    assert rows[0]["machine"]["device"] == "cpu" and rows[0]["settings"]["threads"] == 1
    assert rows[0]["settings"]["baseline"] == "recurrent"
    assert "speed-up" in capsys.readouterr().out
