"""Tests of attnbook.lm: causality, the KV cache, grouped-query attention, sampling, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import causal_mask
from attnbook.lm import (
    CausalLM,
    KVCache,
    bigram_loss,
    evaluate_loss,
    generate,
    grouped_query_attention,
    kv_cache_bytes,
    random_windows,
    repeat_kv,
    sample_next,
    top_k_filter,
    top_p_filter,
    train_lm,
    work_per_generation,
)

VARIANTS = {"MHA": 4, "GQA-2": 2, "GQA-4": 4, "MQA": 1}


def small_model(n_kv_heads=None, n_heads=4, max_len=40, seed=0):
    torch.manual_seed(seed)
    return CausalLM(17, d_model=8 * n_heads, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
                    max_len=max_len).eval()


# --- causality ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_changing_a_future_token_never_changes_earlier_logits(n_kv_heads):
    model = small_model(n_kv_heads)
    ids = torch.randint(0, 17, (2, 15), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids)
        for t in range(15):
            changed = ids.clone()
            changed[:, t] = (changed[:, t] + 5) % 17
            after = model(changed)
            assert torch.equal(after[:, :t], before[:, :t]) or torch.allclose(
                after[:, :t], before[:, :t], atol=1e-6, rtol=0)
            assert not torch.allclose(after[:, t:], before[:, t:])


def test_cached_logits_are_causal_too():
    model = small_model(2)
    ids = torch.randint(0, 17, (1, 12), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 3) % 17
    with torch.no_grad():
        runs = []
        for x in (ids, changed):
            cache = KVCache.for_model(model, 1)
            runs.append(torch.cat([model(x[:, :5], cache)] +
                                  [model(x[:, t:t + 1], cache) for t in range(5, 12)], dim=1))
    assert torch.allclose(runs[0][:, :8], runs[1][:, :8], atol=1e-6, rtol=0)


# --- the KV cache -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_and_uncached_logits_agree_for_every_variant(variant):
    n_heads = 8 if variant == "GQA-4" else 4
    model = small_model(VARIANTS[variant] if variant != "GQA-4" else 4, n_heads=n_heads)
    ids = torch.randint(0, 17, (3, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.for_model(model, 3)
        pieces = [model(ids[:, :11], cache), model(ids[:, 11:12], cache), model(ids[:, 12:], cache)]
    assert cache.length == 30
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("sampling", [dict(greedy=True), dict(temperature=0.7), dict(top_k=3),
                                      dict(top_p=0.8), dict(temperature=1.3, top_k=5, top_p=0.9)])
@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (4, 1), (8, 4)])
def test_generation_with_and_without_cache_agree_token_for_token(sampling, n_heads, n_kv_heads):
    model = small_model(n_kv_heads, n_heads=n_heads)
    prompt = torch.randint(0, 17, (2, 4), generator=torch.Generator().manual_seed(3))
    runs = [generate(model, prompt, 30, use_cache=use_cache, return_logits=True,
                     generator=torch.Generator().manual_seed(7), **sampling)
            for use_cache in (True, False)]
    assert torch.equal(runs[0][0], runs[1][0])
    assert (runs[0][1] - runs[1][1]).abs().max() < 1e-5
    assert runs[0][0].shape == (2, 34) and torch.equal(runs[0][0][:, :4], prompt)


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (8, 4), (4, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cache_memory_measured_equals_the_formula(n_heads, n_kv_heads, dtype):
    model = small_model(n_kv_heads, n_heads=n_heads).to(dtype)
    cache = KVCache.for_model(model, batch=3, max_len=25)
    assert cache.keys[0].dtype == dtype
    measured = sum(t.untyped_storage().nbytes() for t in cache.keys + cache.values)
    expected = kv_cache_bytes(2, 3, n_kv_heads, 25, 8, dtype)
    assert cache.nbytes() == measured == expected
    assert expected == 2 * 2 * 3 * n_kv_heads * 25 * 8 * torch.finfo(dtype).bits // 8


# --- grouped-query attention --------------------------------------------------------------

@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (8, 4), (8, 2), (4, 1), (6, 3)])
@pytest.mark.parametrize("n_queries, n_keys", [(7, 7), (1, 9), (3, 10)])
def test_grouped_query_attention_equals_torch_enable_gqa(n_heads, n_kv_heads, n_queries, n_keys):
    g = torch.Generator().manual_seed(n_heads * 100 + n_keys)
    q = torch.randn(2, n_heads, n_queries, 6, generator=g)
    k, v = (torch.randn(2, n_kv_heads, n_keys, 6, generator=g) for _ in range(2))
    mask = causal_mask(n_queries, n_keys)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    ours = grouped_query_attention(q, k, v)
    assert (ours - theirs).abs().max() < 1e-5
    repeated = F.scaled_dot_product_attention(q, repeat_kv(k, n_heads), repeat_kv(v, n_heads),
                                              attn_mask=mask)
    assert (ours - repeated).abs().max() < 1e-5


def test_gqa_with_as_many_groups_as_heads_is_multi_head_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 6, generator=g) for _ in range(3))
    mha = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(5))
    assert (grouped_query_attention(q, k, v) - mha).abs().max() < 1e-6
    assert torch.equal(repeat_kv(k, 4), k)


def test_grouped_query_attention_rejects_heads_that_do_not_divide():
    q, k = torch.randn(1, 4, 3, 6), torch.randn(1, 3, 3, 6)
    with pytest.raises(ValueError, match="divide"):
        grouped_query_attention(q, k, k)
    with pytest.raises(ValueError, match="n_kv_heads=3 must divide n_heads=4"):
        CausalLM(17, 32, 1, 4, 3)


# --- sampling -----------------------------------------------------------------------------

def test_greedy_takes_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_next(logits, greedy=True).tolist() == [1, 0]


def test_top_k_never_emits_a_token_outside_the_k_largest():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g)
    allowed = logits.topk(5, dim=-1).indices
    for _ in range(200):
        token = sample_next(logits, g, top_k=5, temperature=3.0)
        assert (allowed == token[:, None]).any(dim=-1).all()
    filtered = top_k_filter(logits, 5)
    assert (torch.isfinite(filtered).sum(dim=-1) == 5).all()


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_top_p_keeps_at_least_p_and_is_minimal(p):
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(6, 40, generator=g, dtype=torch.float64)
    probs = logits.softmax(-1)
    kept = torch.isfinite(top_p_filter(logits, p))
    mass = (probs * kept).sum(-1)
    assert (mass >= p - 1e-12).all()
    smallest_kept = probs.masked_fill(~kept, float("inf")).min(-1).values
    assert (mass - smallest_kept < p).all()  # dropping any kept token falls below p
    largest_dropped = probs.masked_fill(kept, 0).max(-1).values
    assert (largest_dropped <= smallest_kept).all()  # the kept ones are the most likely


def test_top_p_samples_only_inside_the_nucleus():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 30, generator=g)
    kept = torch.isfinite(top_p_filter(logits, 0.6))
    for _ in range(100):
        token = sample_next(logits, g, top_p=0.6)
        assert kept.gather(1, token[:, None]).all()


def test_sampling_is_reproducible_under_a_seed_and_temperature_sharpens():
    logits = torch.randn(1, 10, generator=torch.Generator().manual_seed(3)).expand(2000, 10)
    draws = [sample_next(logits, torch.Generator().manual_seed(5), temperature=0.5)
             for _ in range(2)]
    assert torch.equal(*draws)
    cold = sample_next(logits, torch.Generator().manual_seed(5), temperature=0.1)
    hot = sample_next(logits, torch.Generator().manual_seed(5), temperature=10.0)
    best = logits[0].argmax()
    assert (cold == best).float().mean() > (hot == best).float().mean()


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0, -0.1, 1.5, float("nan"), True])
def test_top_p_outside_the_interval_is_refused(p):
    with pytest.raises(ValueError, match="top_p must lie in"):
        sample_next(torch.randn(2, 5), top_p=p)


@pytest.mark.parametrize("setting, name", [(dict(top_p=1.5), "top_p"), (dict(top_k=0), "top_k"),
                                           (dict(temperature=-1), "temperature")])
def test_settings_are_checked_even_when_greedy(setting, name):
    with pytest.raises(ValueError, match=name):
        sample_next(torch.randn(2, 5), greedy=True, **setting)


def test_the_cache_stores_keys_after_rope_each_rotated_once_at_its_position():
    from attnbook.multihead import split_heads
    from attnbook.positional import apply_rope
    model = small_model(2)
    ids = torch.randint(0, 17, (1, 9), generator=torch.Generator().manual_seed(1))
    cache = KVCache.for_model(model, batch=1)
    with torch.no_grad():
        model(ids[:, :5], cache)
        model(ids[:, 5:], cache)
        block = model.blocks[0]
        k = split_heads(block.attention.k_proj(block.norm1(model.embed(ids))), 2)
        expected = apply_rope(k, torch.arange(9))
    assert (cache.keys[0][:, :, :9] - expected).abs().max() < 1e-6


def test_bad_generation_requests_name_the_argument():
    model = small_model(max_len=20)
    prompt = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="maximum context max_len=20"):
        generate(model, prompt, 16)
    with pytest.raises(ValueError, match="prompt must be .* at least one token"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="maximum context max_len=20"):
        model(torch.zeros(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, vocab_size=17\)"):
        model(torch.tensor([[3, 17]]))
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.randn(1, 5), temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(torch.randn(1, 5), top_k=6)


def test_a_cache_for_another_batch_size_is_refused():
    model = small_model()
    cache = KVCache.for_model(model, batch=2)
    with pytest.raises(ValueError, match="cache was built for batch size 2.*batch size 3"):
        model(torch.zeros(3, 4, dtype=torch.long), cache)
    other = KVCache(2, 2, 1, 40, 8)
    with pytest.raises(ValueError, match="cache holds"):
        model(torch.zeros(2, 4, dtype=torch.long), other)
    short = KVCache.for_model(model, batch=1, max_len=5)
    model(torch.zeros(1, 4, dtype=torch.long), short)
    with pytest.raises(ValueError, match="cache holds 4 of at most max_len=5"):
        model(torch.zeros(1, 2, dtype=torch.long), short)


# --- training, baselines, benchmark -------------------------------------------------------

def test_bigram_loss_of_a_deterministic_cycle_is_near_zero_and_uniform_is_log_v():
    cycle = torch.arange(5).repeat(50)
    assert bigram_loss(cycle, cycle, 5, alpha=1e-6) < 1e-4
    assert abs(bigram_loss(cycle[:1], cycle, 5) - torch.log(torch.tensor(5.0)).item()) < 1e-6


def test_a_few_training_steps_lower_the_loss_on_a_cycle():
    ids = torch.arange(10).repeat(40)
    model = small_model(2, max_len=16)
    before = evaluate_loss(model, ids, 16)
    train_lm(model, ids, 40, torch.Generator().manual_seed(0), batch=8, context=16, lr=1e-2)
    assert evaluate_loss(model, ids, 16) < before / 2
    x, y = random_windows(ids, 3, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_work_per_generation_counts_positions():
    assert work_per_generation(1, 4, use_cache=False) == 1 + 2 + 3 + 4
    assert work_per_generation(1, 4, use_cache=True) == 4
    assert work_per_generation(3, 2, use_cache=False) == 3 + 4
