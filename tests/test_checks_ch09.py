"""Mutation tests of the chapter 9 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.checks.ch09 import (
    NEW_TOKENS,
    PROMPT_LEN,
    check_attend_with_cache,
    check_gqa_attention,
    check_max_context,
    check_top_p,
    check_work_prediction,
)
from attnbook.checks.core import CheckFailed

# --- 9.1 max context -----------------------------------------------------------------------


def max_context_with_finfo(budget_bytes, n_layers, batch, n_kv_heads, head_dim, dtype):
    per_position = 2 * n_layers * batch * n_kv_heads * head_dim * (torch.finfo(dtype).bits // 8)
    return budget_bytes // per_position


def max_context_with_element_size(budget_bytes, n_layers, batch, n_kv_heads, head_dim, dtype):
    bytes_each = torch.tensor([], dtype=dtype).element_size()
    return int(budget_bytes / (2 * n_layers * batch * n_kv_heads * head_dim * bytes_each) // 1)


@pytest.mark.parametrize("student", [max_context_with_finfo, max_context_with_element_size])
def test_9_1_passes_correct_answers_written_differently(student, capsys):
    check_max_context(student)
    assert "✅ Exercise 9.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # forgets that keys AND values are stored
    (lambda b, n, B, h, d, dt: b // (n * B * h * d * torch.finfo(dt).bits // 8), "expected"),
    # assumes four bytes per element (float32) whatever the dtype
    (lambda b, n, B, h, d, dt: b // (2 * n * B * h * d * 4), "expected"),
    # true division: a float
    (lambda b, n, B, h, d, dt: b / (2 * n * B * h * d * torch.finfo(dt).bits // 8),
     "expected an int"),
    # rounds up
    (lambda b, n, B, h, d, dt: -(-b // (2 * n * B * h * d * torch.finfo(dt).bits // 8)),
     "one byte short|expected"),
])
def test_9_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_max_context(student)


# --- 9.2 top-p -----------------------------------------------------------------------------


def top_p_by_loop(logits, p):
    """Correct, written differently: add tokens one by one until the mass reaches p."""
    probs = logits.softmax(-1)
    out = torch.full_like(logits, float("-inf"))
    flat_probs, flat_logits, flat_out = (t.reshape(-1, t.shape[-1]) for t in
                                         (probs, logits, out))
    for row in range(flat_probs.shape[0]):
        mass = 0.0
        for index in flat_probs[row].argsort(descending=True).tolist():
            flat_out[row, index] = flat_logits[row, index]
            mass += flat_probs[row, index].item()
            if mass >= p:
                break
    return flat_out.reshape(logits.shape)


def top_p_strict(logits, p):
    """Keeps tokens while the mass *including* them stays below p: the crossing token is lost."""
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    keep = probs.cumsum(-1) < p
    keep = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_unsorted(logits, p):
    """Forgets to put the kept tokens back in their places."""
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    keep = (probs.cumsum(-1) - probs) < p
    return logits.sort(-1, descending=True).values.masked_fill(~keep, float("-inf"))


def top_p_not_minimal(logits, p):
    """Keeps a token while the mass before it is at most p: one token too many at equality."""
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    keep = probs.cumsum(-1) - probs <= p
    keep = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_in_place(logits, p):
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order,
                                                             (probs.cumsum(-1) - probs) < p)
    logits[~keep] = float("-inf")
    return logits


@pytest.mark.parametrize("student", [top_p_by_loop])
def test_9_2_passes_correct_answers_written_differently(student, capsys):
    check_top_p(student)
    assert "✅ Exercise 9.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (top_p_strict, r"p=0.6 \(the 0.3 crosses p and stays\): 1 of 3 values are wrong"),
    (top_p_unsorted, "most likely token is not first.*values are wrong"),
    (top_p_not_minimal, r"reach p exactly: the third token is not needed\): 1 of 4 values"),
    (top_p_in_place, "changed its `logits` in place"),
    # sums the logits in their given order, as if they were sorted probabilities
    (lambda logits, p: logits.masked_fill(logits.cumsum(-1) > p, float("-inf")),
     "values are wrong"),
])
def test_9_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_top_p(student)


# --- 9.3 grouped-query attention -----------------------------------------------------------


def gqa_buggy(q, k, v):
    """The exercise's given function: tiles the key/value heads instead of interleaving."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    return scaled_dot_product_attention(q, k, v, causal_mask(q.shape[2], k.shape[2]))[0]


def gqa_fixed(q, k, v):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return scaled_dot_product_attention(q, k, v, causal_mask(q.shape[2], k.shape[2]))[0]


def gqa_torch(q, k, v):
    mask = causal_mask(q.shape[2], k.shape[2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def gqa_tril_mask(q, k, v):
    """Fixed the heads, but the causal mask ignores the cached keys' offset."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
    return scaled_dot_product_attention(q, k, v, mask)[0]


@pytest.mark.parametrize("student", [gqa_fixed, gqa_torch])
def test_9_3_passes_correct_answers_written_differently(student, capsys):
    check_gqa_attention(student)
    assert "✅ Exercise 9.3" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (gqa_buggy, "values are wrong"),
    (gqa_tril_mask, "values are wrong"),
    # expands without copying the group's heads: the shapes no longer fit
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, causal_mask(q.shape[2], k.shape[2]))[0],
     "your function raised ValueError"),
])
def test_9_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_gqa_attention(student)


# --- 9.4 predict then measure -------------------------------------------------------------

UNCACHED = sum(PROMPT_LEN + i for i in range(NEW_TOKENS))
CACHED = PROMPT_LEN + NEW_TOKENS - 1


def test_9_4_passes_the_right_prediction(capsys):
    check_work_prediction(UNCACHED, CACHED, UNCACHED, CACHED)
    assert "✅ Exercise 9.4" in capsys.readouterr().out


@pytest.mark.parametrize("predicted, verdict", [
    ((sum(PROMPT_LEN + i for i in range(NEW_TOKENS + 1)), CACHED),
     r"without the cache you predicted \d+, measured \d+ \(off by \+128\)"),
    ((UNCACHED, PROMPT_LEN + NEW_TOKENS), r"with the cache you predicted 128, measured 127"),
    ((UNCACHED, NEW_TOKENS), r"off by -27"),
    ((float(UNCACHED), CACHED), "must be a whole number"),
    ((..., CACHED), "replace the ..."),
])
def test_9_4_rejects_wrong_predictions(predicted, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_work_prediction(*predicted, UNCACHED, CACHED)


def test_9_4_accepts_numpy_integers(capsys):
    np = pytest.importorskip("numpy")
    check_work_prediction(np.int64(UNCACHED), np.int32(CACHED), UNCACHED, CACHED)
    assert "✅ Exercise 9.4" in capsys.readouterr().out


def test_9_4_names_a_wrong_measurement():
    with pytest.raises(CheckFailed, match="the measurement with the cache counted 1"):
        check_work_prediction(UNCACHED, CACHED, UNCACHED, 1)


# --- 9.5 attention over a cache, rows of different lengths ---------------------------------


def attend_with_mask(q, k_cache, v_cache, lengths):
    """Correct, in one call: a (B, 1, Lq, max_len) mask from each row's query positions."""
    n_queries, max_len = q.shape[2], k_cache.shape[2]
    query_positions = lengths[:, None] - n_queries + torch.arange(n_queries)  # (B, Lq)
    mask = torch.arange(max_len) <= query_positions[:, :, None]  # (B, Lq, max_len)
    return scaled_dot_product_attention(q, k_cache, v_cache, mask[:, None])[0]


def attend_with_torch(q, k_cache, v_cache, lengths):
    """Correct, written differently: torch's attention, a float mask, the cache cut to the
    longest row."""
    longest = int(lengths.max())
    key_positions = torch.arange(longest)
    query_positions = lengths[:, None] - q.shape[2] + torch.arange(q.shape[2])
    allowed = key_positions <= query_positions[:, :, None]
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]
    return F.scaled_dot_product_attention(q, k_cache[:, :, :longest], v_cache[:, :, :longest],
                                          attn_mask=bias)


def attend_longest_row(q, k_cache, v_cache, lengths):
    """Treats every row as if it were as long as the longest: reads other rows' leftovers."""
    longest = int(lengths.max())
    return scaled_dot_product_attention(q, k_cache[:, :, :longest], v_cache[:, :, :longest],
                                        causal_mask(q.shape[2], longest))[0]


def attend_whole_cache(q, k_cache, v_cache, lengths):
    max_len = k_cache.shape[2]
    return scaled_dot_product_attention(q, k_cache, v_cache,
                                        causal_mask(q.shape[2], max_len))[0]


def attend_padding_only(q, k_cache, v_cache, lengths):
    """Hides each row's leftovers but forgets causality among several new queries."""
    mask = torch.arange(k_cache.shape[2]) < lengths[:, None]  # (B, max_len)
    return scaled_dot_product_attention(q, k_cache, v_cache, mask[:, None, None])[0]


def attend_first_row_length(q, k_cache, v_cache, lengths):
    """Uses one length for the whole batch (an int where a tensor is passed)."""
    length = int(lengths[0])
    return scaled_dot_product_attention(q, k_cache[:, :, :length], v_cache[:, :, :length],
                                        causal_mask(q.shape[2], length))[0]


@pytest.mark.parametrize("student", [attend_with_mask, attend_with_torch])
def test_9_5_passes_correct_answers_written_differently(student, capsys):
    check_attend_with_cache(student)
    assert "✅ Exercise 9.5" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (attend_longest_row, "test 1 of 10.*values are wrong"),
    (attend_whole_cache, "test 1 of 10.*values are wrong"),
    (attend_padding_only, "test 2 of 10.*values are wrong"),
    (attend_first_row_length, "test 1 of 10.*(values are wrong|raised)"),
])
def test_9_5_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_attend_with_cache(student)
