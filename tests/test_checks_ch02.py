"""A mutation test of chapter 2's checks: realistic wrong answers fail with the verdict
that names what is wrong, and right answers written differently pass (DESIGN section 4)."""

import math

import numpy as np
import pytest
import torch

from attnbook.attention import masked_softmax
from attnbook.checks import CheckFailed
from attnbook.checks.ch02 import (
    check_additive_score,
    check_bahdanau_step,
    check_context_from_scores,
    check_ideal_alignment,
    check_masked_softmax,
    check_weight_limits,
)
from attnbook.seq2seq import attend

NEG_INF = float("-inf")


def fails(check, student, match):
    with pytest.raises(CheckFailed, match=match) as failure:
        check(student)
    assert "\n" not in str(failure.value), "a verdict is one line"
    return str(failure.value)


# Exercise 2.1: additive_score


def additive_einsum(query, keys, W_q, W_k, v):
    hidden = torch.tanh(torch.einsum("ad,bd->ba", W_q, query)[:, None]
                        + torch.einsum("ad,bsd->bsa", W_k, keys))
    return torch.einsum("bsa,a->bs", hidden, v)


def additive_loop(query, keys, W_q, W_k, v):
    return torch.stack([torch.tanh(query @ W_q.T + keys[:, j] @ W_k.T) @ v
                        for j in range(keys.shape[1])], dim=1)


@pytest.mark.parametrize("student", [additive_einsum, additive_loop])
def test_2_1_accepts_right_answers_written_differently(student, capsys):
    check_additive_score(student)
    assert "✅ Exercise 2.1" in capsys.readouterr().out


def additive_swapped_weights(query, keys, W_q, W_k, v):
    return torch.tanh((query @ W_k.T)[:, None] + keys @ W_q.T) @ v


def additive_without_v(query, keys, W_q, W_k, v):
    return torch.tanh((query @ W_q.T)[:, None] + keys @ W_k.T).sum(-1)


def additive_squeezed(query, keys, W_q, W_k, v):
    return (torch.tanh((query @ W_q.T)[:, None] + keys @ W_k.T) @ v[:, None]).squeeze()


def additive_unsqueezes_query_in_place(query, keys, W_q, W_k, v):
    query.unsqueeze_(1)  # (B, 1, Dq)
    return torch.tanh(query @ W_q.T + keys @ W_k.T) @ v


def additive_v_outside_tanh(query, keys, W_q, W_k, v):
    return torch.tanh((query @ W_q.T @ v)[:, None] + keys @ W_k.T @ v)


@pytest.mark.parametrize("student, match", [
    (additive_swapped_weights, r"raised RuntimeError.*line \d+: 'return torch.tanh\(\(query @ W_k.T\)"),
    (additive_without_v, r"on test 1 of 6.*values are wrong"),
    (additive_squeezed, r"on test 1 of 6.*wrong shape: expected \(1, 1\), got \(\)"),
    (additive_unsqueezes_query_in_place, r"changed its `query` in place"),
    (additive_v_outside_tanh, r"on test 1 of 6.*values are wrong"),
])
def test_2_1_names_what_is_wrong(student, match):
    fails(check_additive_score, student, match)


def test_2_1_swapped_weights_with_equal_sizes_give_wrong_values():
    def swapped_when_square(query, keys, W_q, W_k, v):
        if W_q.shape != W_k.shape:
            return additive_einsum(query, keys, W_q, W_k, v)
        return additive_swapped_weights(query, keys, W_q, W_k, v)

    fails(check_additive_score, swapped_when_square, r"on test 2 of 6.*values are wrong")


# Exercise 2.2: masked_softmax


def as_scores(scores, mask):
    """Scores with the mask applied, for either mask form."""
    return scores.masked_fill(~mask, NEG_INF) if mask.dtype == torch.bool else scores + mask


def softmax_divides_by_one(scores, mask):
    """The package's way: an empty row's total is replaced by 1."""
    x = as_scores(scores, mask)
    row_max = x.amax(dim=-1, keepdim=True)
    exp = torch.exp(x - torch.where(row_max > NEG_INF, row_max, 0).detach())
    total = exp.sum(dim=-1, keepdim=True)
    return exp / torch.where(total > 0, total, 1)


def softmax_zeroes_empty_rows(scores, mask):
    """torch.softmax on finite scores, with empty rows multiplied by zero afterwards."""
    x = as_scores(scores, mask)
    allowed = x > NEG_INF
    finite = x.masked_fill(~allowed, torch.finfo(x.dtype).min)
    return torch.softmax(finite, dim=-1) * allowed.any(dim=-1, keepdim=True)


def softmax_in_float64(scores, mask):
    return softmax_divides_by_one(scores.double(), mask.double() if mask.is_floating_point()
                                  else mask).float()


def softmax_left_in_float64(scores, mask):  # computed in float64, never cast back
    return softmax_divides_by_one(scores.double(), mask.double() if mask.is_floating_point()
                                  else mask)


def softmax_log_sum_exp(scores, mask):
    """exp(x - logsumexp(x)), on rows that have something to attend to: less precise than
    subtracting the maximum for scores in the hundreds, and still right (GRAD_TOL)."""
    x = as_scores(scores, mask)
    anything = torch.isfinite(x).any(dim=-1, keepdim=True)
    safe = torch.where(anything, x, 0.0)
    return torch.where(anything, torch.exp(safe - torch.logsumexp(safe, -1, keepdim=True)), 0.0)


@pytest.mark.parametrize("student", [softmax_divides_by_one, softmax_zeroes_empty_rows,
                                     softmax_in_float64, softmax_log_sum_exp])
def test_2_2_accepts_right_answers_written_differently(student, capsys):
    check_masked_softmax(student)
    assert "gradients are right and finite in every case" in capsys.readouterr().out


def softmax_boolean_only(scores, mask):
    """The old reference solution: a boolean mask only, and a tiny clamp for empty rows."""
    scores = scores.masked_fill(~mask, NEG_INF)
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max)
    total = exp.sum(dim=-1, keepdim=True)
    return exp / total.clamp_min(torch.finfo(exp.dtype).tiny)


def softmax_tiny_clamp(scores, mask):
    """The old reference solution extended to additive masks: right values, NaN gradients."""
    if mask.dtype != torch.bool:
        scores, mask = scores + mask, torch.ones(scores.shape, dtype=torch.bool)
    return softmax_boolean_only(scores, mask)


def softmax_nan_to_num(scores, mask):
    return torch.softmax(as_scores(scores, mask), dim=-1).nan_to_num(0.0)


def softmax_naive(scores, mask):
    return torch.softmax(as_scores(scores, mask), dim=-1)


def softmax_without_max(scores, mask):
    exp = torch.exp(as_scores(scores, mask))
    return exp / exp.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def softmax_over_dim_1(scores, mask):
    return softmax_divides_by_one(scores.transpose(1, -1), mask.transpose(1, -1)).transpose(1, -1)


def softmax_wrong_axis(scores, mask):
    return softmax_divides_by_one(scores.transpose(0, -1), mask.transpose(0, -1)).transpose(0, -1)


def softmax_full_masks_only(scores, mask):
    x = scores.clone()
    if mask.dtype == torch.bool:
        x[~mask] = NEG_INF
    else:
        x = x + mask
    return softmax_divides_by_one(x, torch.zeros(()))


def softmax_in_place(scores, mask):
    if mask.dtype == torch.bool:
        scores.masked_fill_(~mask, NEG_INF)
    else:
        scores += mask
    return softmax_divides_by_one(scores, torch.zeros(()))


def softmax_detached(scores, mask):
    return softmax_divides_by_one(scores.detach(), mask)


def softmax_float64_without_max(scores, mask):
    """float64 holds exp(300), so without the maximum this passed rows in the hundreds."""
    x = as_scores(scores.double(), mask.double() if mask.is_floating_point() else mask)
    exp = torch.exp(x)
    total = exp.sum(dim=-1, keepdim=True)
    return (exp / torch.where(total > 0, total, 1)).float()


def softmax_unsqueezes_boolean_masks(scores, mask):
    """Reads every 2-D boolean mask of 3-D scores as (B, S) padding: wrong for a (T, S) one."""
    if mask.dtype == torch.bool and scores.dim() == 3 and mask.dim() == 2:
        mask = mask[:, None, :]
    return softmax_divides_by_one(scores, mask)


def softmax_empty_rows_from_additive_mask(scores, mask):
    """Finds the empty rows of an additive mask in the mask only, not in the scores' -inf."""
    x = as_scores(scores, mask)
    allowed = x > NEG_INF if mask.dtype == torch.bool else (mask > NEG_INF).expand_as(x)
    anything = allowed.any(dim=-1, keepdim=True)
    return torch.where(anything, torch.softmax(torch.where(anything, x, 0.0), dim=-1), 0.0)


def softmax_reads_1d_mask_as_rows(scores, mask):
    """Reads a 1-D mask as one flag per row of the batch, (B, 1): wrong for an (S,) mask."""
    return softmax_divides_by_one(scores, mask[:, None] if mask.dim() == 1 else mask)


def softmax_detached_total(scores, mask):
    x = as_scores(scores, mask)
    row_max = x.amax(dim=-1, keepdim=True)
    exp = torch.exp(x - torch.where(row_max > NEG_INF, row_max, 0).detach())
    total = exp.sum(dim=-1, keepdim=True).detach()
    return exp / torch.where(total > 0, total, 1)


def softmax_in_numpy(scores, mask):
    x = as_scores(scores, mask).numpy()  # fails once scores require grad
    row_max = np.where(np.isfinite(x).any(-1, keepdims=True), x.max(-1, keepdims=True), 0)
    exp = np.exp(x - row_max)
    total = exp.sum(-1, keepdims=True)
    return torch.from_numpy(exp / np.where(total > 0, total, 1))


@pytest.mark.parametrize("student, match", [
    (softmax_in_numpy, r"a boolean mask, padding and a fully masked row \(mask of shape \(2, 3\)\), "
                       r"your function raised RuntimeError: Can't call numpy\(\).*"
                       r"'x = as_scores\(scores, mask\).numpy\(\)  # fails once"),
    (softmax_boolean_only, r"with scores of shape \(2, 3\) and an additive mask.*raised TypeError: "
                           r"~ \(operator.invert\).*line \d+: 'scores = scores.masked_fill\(~mask"),
    (softmax_tiny_clamp, r"an additive mask, padding and a fully -inf row.*the values are right but "
                         r"the gradient with respect to `scores` contains NaN or inf"),
    (softmax_nan_to_num, r"additive mask.*gradient with respect to `scores` contains NaN or inf"),
    (softmax_naive, r"a boolean mask, padding and a fully masked row .*: the result contains NaN"),
    (softmax_without_max, r"fully masked row \(mask of shape \(2, 3\)\): 3 of 6 values are wrong"),
    (softmax_float64_without_max, r"rows near \+1000 and -1000 .*: the result contains NaN"),
    (softmax_unsqueezes_boolean_masks, r"a boolean \(T, S\) mask, broadcast over B \(mask of shape "
                                       r"\(2, 3\)\): \d+ of 12 values are wrong"),
    (softmax_empty_rows_from_additive_mask, r"already hold -inf \(a whole row\) and an additive mask "
                                            r".*: the result contains NaN"),
    (softmax_reads_1d_mask_as_rows, r"a boolean \(S,\) mask, broadcast over B \(mask of shape \(3,\)\), "
                                    r"your function raised RuntimeError"),
    (softmax_detached_total, r"fully masked row \(mask of shape \(2, 3\)\), the gradient with respect "
                             r"to `scores` is wrong"),
    (softmax_wrong_axis, r"values are wrong"),
    (softmax_over_dim_1, r"scores of shape \(2, 2, 3\) and a boolean \(B, 1, S\) mask"),
    (softmax_full_masks_only, r"boolean \(B, 1, S\) mask.*raised IndexError.*'x\[~mask\] = NEG_INF'"),
    (softmax_in_place, r"changed its `scores` in place"),
    (softmax_detached, r"does not depend on the inputs through autograd"),
    (softmax_left_in_float64, r"Exercise 2\.2 \(masked_softmax\): with scores of dtype "
                              r"torch.float32, your weights have dtype torch.float64; return "
                              r"the scores' dtype"),
])
def test_2_2_names_what_is_wrong(student, match):
    fails(check_masked_softmax, student, match)


def test_2_2_every_mask_form_and_shape_is_tested():
    from attnbook.checks.ch02 import _masked_softmax_cases

    cases = _masked_softmax_cases(torch.Generator().manual_seed(1234))
    forms = {(scores.dim(), mask.dtype == torch.bool, mask.shape == scores.shape)
             for _, scores, mask in cases}
    assert forms >= {(2, True, True), (2, False, True), (3, True, False), (3, False, False),
                     (2, True, False)}
    shapes = {(scores.dim(), mask.dtype == torch.bool, mask.dim()) for _, scores, mask in cases}
    assert {(3, True, 2), (3, False, 2), (2, True, 1)} <= shapes  # (T, S) both forms; (S,)
    assert max(scores[scores.isfinite()].abs().max() for _, scores, _ in cases) > 900
    from attnbook.checks.ch02 import reference_masked_softmax
    empty_rows = [bool((reference_masked_softmax(s, m).sum(-1) == 0).any()) for _, s, m in cases]
    assert sum(empty_rows) >= 4


# Exercise 2.3: context from scores (debug)


def context_as_given(scores, mask, values):  # the exercise's buggy function
    weights = torch.softmax(scores.masked_fill(~mask, NEG_INF), dim=0)
    return (weights[:, :, None] * values).sum(dim=1)


@pytest.mark.parametrize("student", [
    lambda s, m, v: attend(masked_softmax(s, m), v),
    lambda s, m, v: torch.einsum("bs,bsd->bd", torch.softmax(s.masked_fill(~m, NEG_INF), 1), v),
    lambda s, m, v: torch.stack([torch.softmax(r[k], 0) @ x[k] for r, k, x in zip(s, m, v)]),
])
def test_2_3_accepts_right_answers_written_differently(student, capsys):
    check_context_from_scores(student)
    assert "✅ Exercise 2.3" in capsys.readouterr().out


def context_masks_after_softmax(scores, mask, values):
    weights = torch.softmax(scores, dim=-1) * mask  # padding removed, not renormalised
    return (weights[:, :, None] * values).sum(dim=1)


def context_forgets_the_mask(scores, mask, values):
    return (torch.softmax(scores, dim=-1)[:, :, None] * values).sum(dim=1)


def context_fills_in_place(scores, mask, values):
    scores.masked_fill_(~mask, NEG_INF)
    return (torch.softmax(scores, dim=-1)[:, :, None] * values).sum(dim=1)


def context_mean_over_positions(scores, mask, values):
    weights = torch.softmax(scores.masked_fill(~mask, NEG_INF), dim=-1)
    return (weights[:, :, None] * values).mean(dim=1)


@pytest.mark.parametrize("student, match", [
    (context_as_given, r"a batch of one with two padded positions .*: the result contains NaN"),
    (lambda s, m, v: context_as_given(s[:, None].expand(-1, 2, -1)[:, 0], m, v)
     if s.shape[0] > 1 else attend(masked_softmax(s, m), v),  # only right for B = 1
     r"3 rows, 3 positions, 3 features, no padding .*values are wrong"),
    (context_masks_after_softmax, r"a batch of one with two padded positions .*values are wrong"),
    (context_forgets_the_mask, r"a batch of one with two padded positions .*values are wrong"),
    (context_fills_in_place, r"changed its `scores` in place"),
    (context_mean_over_positions, r"values are wrong"),
])
def test_2_3_names_what_is_wrong(student, match):
    fails(check_context_from_scores, student, match)


# Exercise 2.4: bahdanau_step


def step(decoder, prev_tokens, state, memory, softmax=None, context_of=None, advance=1,
         cell_order=("embedded", "context")):
    """Exercise 2.4 with one part chosen: by default, a right answer."""
    scores = decoder.score(state.hidden, memory.outputs, memory.mask, prepared=state.keys)
    weights = (softmax or (lambda s: torch.softmax(s, dim=-1)))(scores)
    context = (context_of or (lambda w: attend(w, memory.outputs)))(weights)
    embedded = decoder.embed(prev_tokens)
    parts = {"embedded": embedded, "context": context}
    hidden = decoder.cell(torch.cat([parts[p] for p in cell_order], dim=-1), state.hidden)
    logits = decoder.out(torch.cat([hidden, context, embedded], dim=-1))
    return logits, state._replace(hidden=hidden, t=state.t + advance), weights


def step_recomputing_keys(decoder, prev_tokens, state, memory):
    scores = decoder.score(state.hidden, memory.outputs, memory.mask)  # no `prepared`
    weights = scores.softmax(dim=-1)
    context = torch.einsum("bs,bsh->bh", weights, memory.outputs)
    embedded = decoder.embed(prev_tokens)
    hidden = decoder.cell(torch.cat([embedded, context], dim=-1), state.hidden)
    logits = decoder.out(torch.cat([hidden, context, embedded], dim=-1))
    return logits, state._replace(hidden=hidden, t=state.t + 1), weights


@pytest.mark.parametrize("student", [step, step_recomputing_keys])
def test_2_4_accepts_right_answers_written_differently(student, capsys):
    check_bahdanau_step(student)
    assert "✅ Exercise 2.4" in capsys.readouterr().out


def step_updates_state_in_place(decoder, prev_tokens, state, memory):
    logits, new_state, weights = step(decoder, prev_tokens, state, memory)
    state.hidden.copy_(new_state.hidden)
    return logits, state._replace(t=state.t + 1), weights


@pytest.mark.parametrize("student, match", [
    (lambda d, p, s, m: step(d, p, s, m, advance=0),
     r"on test 1 of 4.*the new state \(item 1\): item 3: expected 1, got 0|"
     r"the new state \(item 1\): item 3: expected \d, got \d"),
    (lambda d, p, s, m: step(d, p, s, m, advance=torch.tensor(1)),
     r"the new state \(item 1\): item 3: expected an int \(\d\), got a tensor of shape \(\)"),
    (lambda d, p, s, m: step(d, p, s, m, cell_order=("context", "embedded")),
     r"on test 1 of 4.*the logits \(item 0\): \d+ of \d+ values are wrong"),
    (lambda d, p, s, m: step(d, p, s, m, context_of=lambda w: m.final),
     r"the logits \(item 0\): \d+ of \d+ values are wrong"),
    (lambda d, p, s, m: step(d, p, s, m, softmax=lambda scores: torch.softmax(scores, dim=0)),
     r"the logits \(item 0\)|the weights \(item 2\)"),
    (lambda d, p, s, m: step(d, p, s, m)[:2], r"expected a tuple of 3 items, got a tuple"),
    (lambda d, p, s, m: (lambda lo, st, w: (lo, tuple(st), w))(*step(d, p, s, m)),
     r"the new state must be an AttentionState, got a tuple; build it with state._replace"),
    (lambda d, p, s, m: (lambda lo, st, w: (lo, list(st), w))(*step(d, p, s, m)),
     r"the new state must be an AttentionState, got a list"),
    (step_updates_state_in_place, r"changed its `state` in place"),
])
def test_2_4_names_what_is_wrong(student, match):
    fails(check_bahdanau_step, student, match)


def test_2_4_a_change_to_memory_is_named():
    def scales_memory(decoder, prev_tokens, state, memory):
        memory.outputs.mul_(1.5)
        return step(decoder, prev_tokens, state, memory)

    fails(check_bahdanau_step, scales_memory, r"changed `memory.outputs` in place")


# Exercise 2.5: the ideal alignment


@pytest.mark.parametrize("answer", [
    list(range(6, 10)) + [None, 3, 4, None, 0, 1],
    [*np.arange(6, 10), None, *np.arange(3, 5), None, *np.arange(0, 2)],  # NumPy integers
    (6, 7, 8, 9, None, 3, 4, None, 0, 1),  # a tuple
])
def test_2_5_accepts_right_answers_written_differently(answer, capsys):
    check_ideal_alignment(answer)
    assert "✅ Exercise 2.5" in capsys.readouterr().out


@pytest.mark.parametrize("answer, match", [
    ([7, 8, 9, 10, None, 4, 5, None, 1, 2], r"entry 0 \(output character '1'\) should not be 7"),
    ([6, 7, 8, 9, -1, 3, 4, -1, 0, 1], r"entry 4 \(output character '-'\) should not be -1"),
    ([6.0, 7, 8, 9, None, 3, 4, None, 0, 1], r"entry 0 .* must be a position \(an int\) or None, "
                                              r"got a float \(6.0\)"),
    ([6, 7, 8, 9, None, 3, 4, None, 0, True], r"entry 9 .* got a bool \(True\)"),
    ([6, 7, 8, 9, None, 3, 4, None, 0], r"expected a list of 10 entries"),
    ([0, 1, None, 3, 4, None, 6, 7, 8, 9], r"entry 0 .* should not be 0"),
    (..., r"replace the \.\.\. with your answer"),
])
def test_2_5_names_what_is_wrong(answer, match):
    with pytest.raises(CheckFailed, match=match):
        check_ideal_alignment(answer)


# Exercise 2.6: weight limits


def limits_in_python(v, n_positions):
    spread = math.exp(2 * sum(abs(x) for x in v.tolist()))
    return 1 / (1 + (n_positions - 1) * spread), 1 - (n_positions - 1) / (spread + n_positions - 1)


def limits_as_tensors(v, n_positions):  # float32, 0-d tensors
    gap = 2 * v.abs().sum()
    return (torch.sigmoid(-gap - math.log(max(n_positions - 1, 1e-30))),
            torch.sigmoid(gap - math.log(max(n_positions - 1, 1e-30))))


@pytest.mark.parametrize("student", [limits_in_python, limits_as_tensors,
                                     lambda v, n: np.array(limits_in_python(v, n))])
def test_2_6_accepts_right_answers_written_differently(student, capsys):
    check_weight_limits(student)
    assert "✅ Exercise 2.6" in capsys.readouterr().out


def limits(v, n_positions, norm=lambda v: v.abs().sum(), factor=2, others=None):
    spread = math.exp(factor * float(norm(v)))
    k = n_positions - 1 if others is None else others(n_positions)
    return 1 / (1 + k * spread), spread / (spread + k)


@pytest.mark.parametrize("student, match", [
    # the L2 norm: the tanh's are bounded one by one, not as a vector
    (lambda v, n: limits(v, n, norm=torch.linalg.vector_norm),
     r"v=\[1.0, -2.0, 0.5\], n_positions=10\): the smallest weight should be 0.00010131"),
    # sum(v) without the absolute values
    (lambda v, n: limits(v, n, norm=torch.sum), r"v=\[1.0, -2.0, 0.5\].*the smallest weight"),
    # the range of one score, not of a difference of two: no factor 2
    (lambda v, n: limits(v, n, factor=1), r"v=\[1.5\], n_positions=2\): the smallest weight"),
    # S others instead of S - 1
    (lambda v, n: limits(v, n, others=lambda n: n),
     r"v=\[0.0, 0.0, 0.0\], n_positions=5\): the smallest weight should be 0.2, got 0.166667"),
    # (largest, smallest) swapped
    (lambda v, n: limits(v, n)[::-1], r"v=\[1.5\], n_positions=2\): the smallest weight"),
    # one number, not a pair
    (lambda v, n: limits(v, n)[0], r"must return a pair \(smallest, largest\), got a float"),
])
def test_2_6_names_what_is_wrong(student, match):
    fails(check_weight_limits, student, match)
