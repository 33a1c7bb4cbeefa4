"""The sliding-window decoding benchmark (attnbook.bench.window) and its command line."""

import json

from attnbook.bench.__main__ import main
from attnbook.bench.window import format_rows, window_benchmark


def test_rows_and_table():
    calls = []

    def timer(fn, repeats):
        fn()
        calls.append(1)
        return 0.004 * len(calls)
    rows = window_benchmark([8, 40], window=8, heads=2, head_dim=4, steps=4, timer=timer)
    assert [r["context"] for r in rows] == [8, 40] and len(calls) == 4
    assert rows[0]["window_ms"] == 1.0 and rows[0]["full_ms"] == 2.0 and rows[0]["ratio"] == 2
    assert "full/window" in format_rows(rows)


def test_command_line_writes_rows(tmp_path):
    out = tmp_path / "window.jsonl"
    assert main(["window", "--contexts", "16", "64", "--window", "8", "--heads", "1",
                 "--head-dim", "4", "--steps", "2", "--repeats", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["context"] for r in rows] == [16, 64]
    assert all(r["window_ms"] > 0 and r["full_ms"] > 0 for r in rows)
    assert rows[0]["machine"]["device"] == "cpu" and rows[0]["settings"]["clock"]


def test_kvcache_and_flash_commands_still_parse():
    import pytest
    for command in (["kvcache", "--help"], ["flash", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 0
