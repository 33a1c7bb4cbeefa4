"""The KV-cache benchmark (attnbook.bench.kvcache)."""

import torch

from attnbook.bench.kvcache import format_rows, kv_cache_benchmark
from attnbook.lm import CausalLM


def small_model(n_kv_heads=None, n_heads=4, max_len=40, seed=0):
    torch.manual_seed(seed)
    return CausalLM(17, d_model=8 * n_heads, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
                    max_len=max_len).eval()


def test_benchmark_rows_and_table():
    model = small_model(max_len=40)
    rows = kv_cache_benchmark(model, [4, 8], repeats=1)
    assert [r["new_tokens"] for r in rows] == [4, 8]
    assert all(r["cached_tok_s"] > 0 and r["recompute_tok_s"] > 0 for r in rows)
    assert abs(rows[0]["speedup"] - rows[0]["cached_tok_s"] / rows[0]["recompute_tok_s"]) < 1e-9
    assert "speed-up" in format_rows(rows) and len(format_rows(rows).splitlines()) == 3
