"""Checks for the exercises of chapter 9, "Decoder-only language models"."""

from __future__ import annotations

import numbers

import torch

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.checks.core import (
    CheckFailed,
    compare_cases,
    compare_with_reference,
    in_turn,
    random_size,
)
from attnbook.lm import KVCache, grouped_query_attention, top_p_filter, work_per_generation

# --- 9.1 the longest context a memory budget holds ---------------------------------------


def reference_max_context(budget_bytes, n_layers, batch, n_kv_heads, head_dim, dtype):
    """Measured, not derived: the bytes one position of a KVCache takes, from its tensors."""
    per_position = KVCache(n_layers, batch, n_kv_heads, 1, head_dim, dtype).nbytes()
    return budget_bytes // per_position


def check_max_context(student_fn) -> None:
    """Exercise 9.1: the largest max_len whose KV cache fits in budget_bytes; a Python int.

    Cases where each argument changes the answer (layers, batch, heads, head_dim,
    float32, float16, bfloat16 and float64), budgets exactly at a multiple of one
    position's bytes and one byte short of it, and a budget below one position (0).
    The reference measures one position of a real KVCache (its tensors' bytes).
    """
    cases = []
    configs = [(12, 1, 12, 64, torch.float16), (32, 8, 8, 128, torch.bfloat16),
               (2, 3, 2, 16, torch.float32), (4, 2, 1, 8, torch.float64),
               (4, 2, 4, 8, torch.float64), (6, 5, 2, 32, torch.float32)]
    for n_layers, batch, n_kv, head_dim, dtype in configs:
        per_position = 2 * n_layers * batch * n_kv * head_dim * torch.finfo(dtype).bits // 8
        for budget in (1000 * per_position, 1000 * per_position - 1, 2**30 + 7):
            description = (f"with budget_bytes={budget}, n_layers={n_layers}, batch={batch}, "
                           f"n_kv_heads={n_kv}, head_dim={head_dim}, dtype={dtype}")
            cases.append((description, (budget, n_layers, batch, n_kv, head_dim, dtype)))
    cases.append(("with a budget smaller than one position (budget_bytes=100, 2 layers, batch 1, "
                  "4 key/value heads of 64, float32)", (100, 2, 1, 4, 64, torch.float32)))
    compare_cases(student_fn, reference_max_context, cases, name="Exercise 9.1 (max_context)")


# --- 9.2 top-p ----------------------------------------------------------------------------


def _logits_from_probs(probs, dtype=torch.float32):
    return torch.tensor(probs, dtype=torch.float64).log().to(dtype)


def _random_logits(shape):
    def make(generator: torch.Generator):
        logits = 2 * torch.randn(*shape, generator=generator)
        p = float(torch.rand((), generator=generator)) * 0.9 + 0.05
        return logits, p
    return make


def check_top_p(student_fn) -> None:
    """Exercise 9.2: top_p_filter(logits, p) keeps the fewest most likely tokens whose
    probabilities sum to at least p, in their places, and sets the others to -inf.

    Fixed cases: one row (V,), a batch (B, V) and (B, T, V); probabilities whose
    cumulative sum crosses p inside a token (that token stays) and just before it
    (it goes); dyadic probabilities (0.25, 0.5, 0.125, 0.125), exact in float32,
    where the mass before a token equals p = 0.75 exactly (the kept mass already
    reaches p, so that token goes: keeping it is not minimal); p = 1 (everything
    stays); a tiny p (only the most likely); the most likely token not first in the
    row. Then random rows. Finite values within
    1e-5 + 1e-4 * |expected|; -inf must be exactly where the reference has it.
    """
    name = "Exercise 9.2 (top_p_filter)"
    fixed = [
        ("with probabilities (0.5, 0.3, 0.2) in one row (V,) and p=0.6 (the 0.3 crosses p and "
         "stays)", (_logits_from_probs([0.5, 0.3, 0.2]), 0.6)),
        ("with probabilities (0.5, 0.3, 0.2) and p=0.79 (the third token is not needed)",
         (_logits_from_probs([0.5, 0.3, 0.2]), 0.79)),
        ("with probabilities (0.1, 0.2, 0.6, 0.1) (the most likely token is not first) and "
         "p=0.75", (_logits_from_probs([0.1, 0.2, 0.6, 0.1]), 0.75)),
        ("with a batch (2, 5) whose rows need different numbers of tokens, p=0.7",
         (_logits_from_probs([[0.05, 0.05, 0.1, 0.2, 0.6], [0.3, 0.25, 0.2, 0.15, 0.1]]), 0.7)),
        ("with probabilities (0.25, 0.5, 0.125, 0.125) and p=0.75 (the first two reach p "
         "exactly: the third token is not needed)",
         (_logits_from_probs([0.25, 0.5, 0.125, 0.125]), 0.75)),
        ("with p=1 (every token stays)", (_logits_from_probs([0.4, 0.1, 0.3, 0.2]), 1.0)),
        ("with a tiny p=0.01 (only the most likely token stays)",
         (_logits_from_probs([0.2, 0.5, 0.3]), 0.01)),
        ("with logits of shape (2, 3, 6) (batch, time, V), p=0.5",
         (2 * torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0)), 0.5)),
    ]
    compare_cases(student_fn, top_p_filter, fixed, name=name, arg_names=("logits", "p"))
    compare_with_reference(student_fn, top_p_filter,
                           in_turn(_random_logits((4, 30)), _random_logits((50,))),
                           name=name, trials=6, arg_names=("logits", "p"))


# --- 9.3 the bug in grouped-query attention -----------------------------------------------


def _gqa_inputs(n_heads: int, n_kv_heads: int, extra_keys: tuple[int, int]):
    def make(generator: torch.Generator):
        batch, head_dim = random_size(generator, 1, 2), random_size(generator, 2, 5)
        n_queries = random_size(generator, 1, 5)
        n_keys = n_queries + random_size(generator, *extra_keys)
        q = torch.randn(batch, n_heads, n_queries, head_dim, generator=generator)
        k = torch.randn(batch, n_kv_heads, n_keys, head_dim, generator=generator)
        v = torch.randn(batch, n_kv_heads, n_keys, head_dim, generator=generator)
        return q, k, v
    return make


def check_gqa_attention(student_fn) -> None:
    """Exercise 9.3: causal grouped-query attention, q (B, H, Lq, d), k and v (B, Hkv, Lk, d),
    query head h reading key/value head h // (H / Hkv); within 1e-5 + 1e-4 * |expected|.

    Cases: 2 key/value heads for 4 and 8 query heads and 4 for 8 (where copying the
    heads in the wrong order shows), multi-query (1 key/value head) and multi-head
    (as many as query heads), with as many keys as queries and with more keys (a cache).
    """
    cases = in_turn(_gqa_inputs(4, 2, (0, 3)), _gqa_inputs(8, 2, (1, 4)),
                    _gqa_inputs(8, 4, (0, 0)), _gqa_inputs(4, 1, (0, 3)),
                    _gqa_inputs(3, 3, (1, 3)), _gqa_inputs(6, 3, (0, 2)))
    compare_with_reference(student_fn, grouped_query_attention, cases, trials=12,
                           name="Exercise 9.3 (gqa_attention)", arg_names=("q", "k", "v"))


# --- 9.4 predict, then measure, the work of generation ------------------------------------

PROMPT_LEN, NEW_TOKENS = 28, 100


def _check_int(value, what: str, name: str) -> int:
    """An int (NumPy's integer types too, as in exercise 9.1) or a CheckFailed."""
    if value is ...:
        raise CheckFailed(f"{name}: replace the ... in {what} with your prediction")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CheckFailed(f"{name}: {what} must be a whole number (an int; use // rather "
                          f"than /), got {value!r}")
    return int(value)


def check_work_prediction(predicted_uncached, predicted_cached, measured_uncached,
                          measured_cached) -> None:
    """Exercise 9.4: token positions the model processes to generate NEW_TOKENS tokens after
    a PROMPT_LEN-token prompt, without and with the cache; predictions must be exact ints.

    The measurement is compared with the truth too, so a measuring cell that counts
    something else is named rather than blamed on the prediction.
    """
    name = "Exercise 9.4 (work of generation)"
    truth = {False: work_per_generation(PROMPT_LEN, NEW_TOKENS, use_cache=False),
             True: work_per_generation(PROMPT_LEN, NEW_TOKENS, use_cache=True)}
    predicted_uncached = _check_int(predicted_uncached, "predicted_uncached", name)
    predicted_cached = _check_int(predicted_cached, "predicted_cached", name)
    for use_cache, measured in [(False, measured_uncached), (True, measured_cached)]:
        if measured != truth[use_cache]:
            raise CheckFailed(f"{name}: the measurement {'with' if use_cache else 'without'} the "
                              f"cache counted {measured} positions, not {truth[use_cache]}; "
                              "re-run the measuring cell unchanged")
    problems = []
    for label, predicted, use_cache in [("without the cache", predicted_uncached, False),
                                        ("with the cache", predicted_cached, True)]:
        if predicted != truth[use_cache]:
            off = predicted - truth[use_cache]
            problems.append(f"{label} you predicted {predicted}, measured {truth[use_cache]} "
                            f"(off by {off:+d})")
    if problems:
        hint = ""
        if predicted_uncached != truth[False]:
            hint = (" Without the cache, step i feeds the whole sequence so far; does the last "
                    "new token ever go through the model?")
        raise CheckFailed(f"{name}: " + "; ".join(problems) + "." + hint)
    ratio = truth[False] / truth[True]
    print(f"✅ {name}: right: {truth[False]} positions without the cache, {truth[True]} with "
          f"it, {ratio:.0f} times fewer.")


# --- 9.5 attention over a cache, rows of different lengths --------------------------------


def reference_attend_with_cache(q, k_cache, v_cache, lengths):
    """Row by row: row b's queries are its last Lq filled positions, over its own filled keys."""
    n_queries = q.shape[2]
    rows = []
    for b, length in enumerate(lengths.tolist()):
        k, v = k_cache[b:b + 1, :, :length], v_cache[b:b + 1, :, :length]
        mask = causal_mask(n_queries, length, q.device)
        rows.append(scaled_dot_product_attention(q[b:b + 1], k, v, mask)[0])
    return torch.cat(rows)


def _cache_inputs(n_queries: tuple[int, int], empty_slots: tuple[int, int],
                  same_lengths: bool = False, batch: tuple[int, int] = (2, 3)):
    def make(generator: torch.Generator):
        n_rows, n_heads = random_size(generator, *batch), random_size(generator, 1, 3)
        head_dim = random_size(generator, 2, 5)
        lq = random_size(generator, *n_queries)
        extra = torch.randint(0, 5, (1 if same_lengths else n_rows,), generator=generator)
        lengths = (lq + extra).expand(n_rows).clone()
        if not same_lengths and n_rows > 1:
            lengths[0] = lq  # one row holds only the new queries' own positions
        max_len = int(lengths.max()) + random_size(generator, *empty_slots)
        q = torch.randn(n_rows, n_heads, lq, head_dim, generator=generator)
        # the unfilled slots hold leftovers of an earlier, longer generation
        k_cache = 3 * torch.randn(n_rows, n_heads, max_len, head_dim, generator=generator)
        v_cache = 3 * torch.randn(n_rows, n_heads, max_len, head_dim, generator=generator)
        return q, k_cache, v_cache, lengths
    return make


def check_attend_with_cache(student_fn) -> None:
    """Exercise 9.5: attention of Lq new queries over a preallocated cache (B, H, max_len, d)
    whose row b holds lengths[b] filled positions (lengths: (B,) int64), the queries of
    row b being its positions lengths[b] - Lq ... lengths[b] - 1; within
    1e-5 + 1e-4 * |expected|.

    Cases: one query (a generation step) and several (prompts), rows of different
    lengths (one of them exactly Lq), unfilled slots after every row's length that
    hold leftover values, all rows of the same length, and a batch of one.
    """
    cases = in_turn(_cache_inputs((1, 1), (1, 4)), _cache_inputs((2, 4), (1, 4)),
                    _cache_inputs((1, 3), (0, 0)), _cache_inputs((2, 3), (1, 3), True),
                    _cache_inputs((1, 3), (0, 2), batch=(1, 1)))
    compare_with_reference(student_fn, reference_attend_with_cache, cases, trials=10,
                           name="Exercise 9.5 (attend_with_cache)",
                           arg_names=("q", "k_cache", "v_cache", "lengths"))


__all__ = ["check_max_context", "check_top_p", "check_gqa_attention", "check_work_prediction",
           "check_attend_with_cache", "PROMPT_LEN", "NEW_TOKENS"]
