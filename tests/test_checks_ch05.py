"""Mutation tests of the chapter 5 checks: realistic wrong answers fail with the right
verdict, and correct answers written differently from the reference pass."""

from __future__ import annotations

import math

import pytest
import torch

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.checks.ch05 import (
    check_causal_self_attention,
    check_cross_attention,
    check_inverse_permutation,
    check_max_path_length,
    check_weights_memory,
)
from attnbook.checks.core import CheckFailed


def attend(q, k, v, mask=None):
    """Attention written out with einsum, as a student might."""
    scores = torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bqk,bkv->bqv", weights, v), weights


# --- 5.1 cross-attention -------------------------------------------------------------------


@pytest.mark.parametrize("student", [
    lambda x, memory, w_q, w_k, w_v: attend(x @ w_q, memory @ w_k, memory @ w_v),
    lambda x, memory, w_q, w_k, w_v: scaled_dot_product_attention(
        torch.matmul(x, w_q) / math.sqrt(w_q.shape[1]), memory @ w_k, memory @ w_v, scale=1.0),
])
def test_5_1_passes_correct_answers_written_differently(student, capsys):
    check_cross_attention(student)
    assert "✅ Exercise 5.1" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    # keys from x: self-attention, not cross-attention
    (lambda x, memory, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, memory @ w_v), "raised|wrong shape|wrong"),
    # scaled by the value width, the same as the key width in the old check
    (lambda x, memory, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, memory @ w_k, memory @ w_v, scale=1 / math.sqrt(w_v.shape[1])), "values are wrong"),
    # scaled by the model width D
    (lambda x, memory, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, memory @ w_k, memory @ w_v, scale=1 / math.sqrt(x.shape[-1])), "values are wrong"),
    # w_k and w_v swapped: shapes no longer fit, or the values are wrong
    (lambda x, memory, w_q, w_k, w_v: attend(x @ w_q, memory @ w_v, memory @ w_k), "raised|wrong"),
    (lambda x, memory, w_q, w_k, w_v: attend(x @ w_q, memory @ w_k, memory @ w_v)[0],
     "expected a tuple of 2 items"),
])
def test_5_1_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_cross_attention(student)


# --- 5.2 causal self-attention -------------------------------------------------------------


def causal_loop(x, w_q, w_k, w_v):
    """Correct, written differently: one query at a time, over the keys up to it."""
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    length = x.shape[1]
    outputs, weights = [], torch.zeros(x.shape[0], length, length, dtype=x.dtype)
    for i in range(length):
        out_i, w_i = scaled_dot_product_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1])
        outputs.append(out_i)
        weights[:, i:i + 1, :i + 1] = w_i
    return torch.cat(outputs, dim=1), weights


@pytest.mark.parametrize("student", [
    causal_loop,
    lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v,
                                    torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()),
])
def test_5_2_passes_correct_answers_written_differently(student, capsys):
    check_causal_self_attention(student)
    assert "✅ Exercise 5.2" in capsys.readouterr().out


@pytest.mark.parametrize("student, verdict", [
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v), "values are wrong"),  # no mask
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[1]).T),
     "values are wrong|NaN"),  # j >= i
    (lambda x, w_q, w_k, w_v: scaled_dot_product_attention(
        x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[1]).tril(-1)), "values are wrong"),  # j < i
    (lambda x, w_q, w_k, w_v: attend(x @ w_q, x @ w_k, x @ w_v, causal_mask(x.shape[0])),
     "values are wrong|raised RuntimeError"),  # the batch size taken for the length
])
def test_5_2_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_causal_self_attention(student)


# --- 5.3 inverse permutation -----------------------------------------------------------------


def inverse_by_scatter(perm):
    return torch.empty_like(perm).scatter_(0, perm, torch.arange(len(perm)))


def inverse_by_loop(perm):
    inverse = [0] * len(perm)
    for i, p in enumerate(perm.tolist()):
        inverse[p] = i
    return torch.tensor(inverse)


@pytest.mark.parametrize("student", [inverse_by_scatter, inverse_by_loop, torch.argsort])
def test_5_3_passes_correct_answers_written_differently(student, capsys):
    check_inverse_permutation(student)
    assert "✅ Exercise 5.3" in capsys.readouterr().out


def sorts_in_place(perm):
    inverse = torch.argsort(perm)
    perm.copy_(torch.arange(len(perm)))
    return inverse


@pytest.mark.parametrize("student, verdict", [
    (lambda perm: perm.clone(), "values are wrong"),  # right only for a permutation that undoes itself
    (lambda perm: perm[perm], "values are wrong"),
    (lambda perm: perm.flip(0), "values are wrong"),
    (lambda perm: torch.argsort(perm).tolist(), "expected a tensor"),
    (lambda perm: torch.argsort(perm).int(), "wrong dtype: expected torch.int64, got torch.int32"),
    (sorts_in_place, "changed its `perm` in place"),
])
def test_5_3_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_inverse_permutation(student)


# --- 5.4 maximum path length ---------------------------------------------------------------


def path_length_by_powers(connections):
    """Correct, written differently: the boolean matrix power, counted until it stops changing."""
    n = len(connections)
    reach = torch.eye(n, dtype=torch.bool)
    for layers in range(n + 1):
        wider = (connections.double() @ reach.double()) > 0
        if (wider == reach).all():
            return layers
        reach = wider
    return n


@pytest.mark.parametrize("student", [path_length_by_powers])
def test_5_4_passes_a_correct_answer_written_differently(student, capsys):
    check_max_path_length(student)
    assert "✅ Exercise 5.4" in capsys.readouterr().out


def path_length_off_by_one(connections):
    return path_length_by_powers(connections) + 1


def path_length_as_tensor(connections):
    return torch.tensor(path_length_by_powers(connections))


def path_length_from_the_band(connections):
    """Wrong: reads the band's half-width from row 0 and assumes a symmetric band."""
    n = len(connections)
    width = int(connections[0].sum()) - 1
    return 0 if width == 0 else math.ceil((n - 1) / width)


def path_length_adds_self_loops_in_place(connections):
    connections.fill_diagonal_(True)
    connections[0, -1] = True
    return path_length_by_powers(connections)


@pytest.mark.parametrize("student, verdict", [
    (path_length_off_by_one, "expected 1, got 2|values are wrong|expected \\d+, got"),
    (path_length_as_tensor, "expected an int"),
    (path_length_from_the_band, "expected \\d+, got \\d+"),
    (path_length_adds_self_loops_in_place, "changed its `connections` in place"),
])
def test_5_4_rejects_wrong_answers(student, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_max_path_length(student)


# --- 5.5 memory of the weights -------------------------------------------------------------


def test_5_5_accepts_the_number_written_differently(capsys):
    for answer in (8 * 12 * 1024 * 1024, 100_663_296, 3 * 2**25):
        check_weights_memory(answer)
    assert capsys.readouterr().out.count("✅") == 3


@pytest.mark.parametrize("answer, verdict", [
    (8 * 12 * 1024, "is not right"),  # one length, not queries x keys
    (8 * 12 * 1024 * 1024 * 4, "is not right"),  # bytes in float32, not numbers
    (float(8 * 12 * 1024 * 1024), "must be a whole number"),
    (torch.tensor(8 * 12 * 1024 * 1024), "must be a whole number"),
    (..., "replace the ..."),
])
def test_5_5_rejects_wrong_answers(answer, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_weights_memory(answer)


# --- Second review: answers the first version of these tests did not try -------------------


def cross_attention_batch_loop(x, memory, w_q, w_k, w_v):
    """Correct, written differently: one batch element at a time, stacked."""
    pairs = [attend(x[b:b + 1] @ w_q, memory[b:b + 1] @ w_k, memory[b:b + 1] @ w_v) for b in range(len(x))]
    return torch.cat([o for o, _ in pairs]), torch.cat([w for _, w in pairs])


def test_5_1_second_review(capsys):
    check_cross_attention(cross_attention_batch_loop)
    assert "✅ Exercise 5.1" in capsys.readouterr().out
    with pytest.raises(CheckFailed,
                       match=r"the output \(item 0\): wrong shape: expected \([23], \d, \d\), got \(1,"):
        check_cross_attention(lambda x, memory, w_q, w_k, w_v: tuple(  # the first batch element only
            t[None] for t in scaled_dot_product_attention(x[0] @ w_q, memory[0] @ w_k, memory[0] @ w_v)))
    with pytest.raises(CheckFailed, match="changed its `memory` in place"):
        check_cross_attention(lambda x, memory, w_q, w_k, w_v: attend(
            x @ w_q, memory.mul_(1 / math.sqrt(w_q.shape[1])) @ w_k, memory @ w_v))


def causal_renormalised(x, w_q, w_k, w_v):
    """Correct, written differently: softmax over all keys, zero the future, renormalise."""
    scores = (x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])
    weights = torch.softmax(scores, dim=-1) * causal_mask(x.shape[1])
    weights = weights / weights.sum(-1, keepdim=True)
    return weights @ (x @ w_v), weights


def causal_not_renormalised(x, w_q, w_k, w_v):
    scores = (x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])
    weights = torch.softmax(scores, dim=-1) * causal_mask(x.shape[1])
    return weights @ (x @ w_v), weights


def causal_tril_of_scores(x, w_q, w_k, w_v):
    """Wrong: tril() puts a score of 0, not -inf, on the future keys."""
    scores = ((x @ w_q) @ (x @ w_k).transpose(1, 2) / math.sqrt(w_q.shape[1])).tril()
    weights = torch.softmax(scores, dim=-1)
    return weights @ (x @ w_v), weights


def test_5_2_second_review(capsys):
    check_causal_self_attention(causal_renormalised)
    assert "✅ Exercise 5.2" in capsys.readouterr().out
    for student in (causal_not_renormalised, causal_tril_of_scores):
        with pytest.raises(CheckFailed, match=r"the output \(item 0\): \d+ of \d+ values are wrong"):
            check_causal_self_attention(student)


@pytest.mark.parametrize("student", [
    lambda perm: torch.sort(perm).indices,
    lambda perm: torch.nn.functional.one_hot(perm, len(perm)).T @ torch.arange(len(perm)),
    lambda perm: torch.tensor([perm.tolist().index(i) for i in range(len(perm))]),
])
def test_5_3_second_review_passes(student, capsys):
    check_inverse_permutation(student)
    assert "✅ Exercise 5.3" in capsys.readouterr().out


def test_5_3_second_review_rejects():
    with pytest.raises(CheckFailed, match="values are wrong"):
        check_inverse_permutation(lambda perm: perm.argsort(descending=True))
    with pytest.raises(CheckFailed, match="expected a tensor .* got a ndarray"):
        check_inverse_permutation(lambda perm: perm.numpy().argsort())


def path_length_from_connections(connections):
    """Wrong by one: starts from one layer (connections) instead of the identity."""
    return max(path_length_by_powers(connections) - 1, 0)


def path_length_until_all_reached(connections):
    """Wrong: waits until everyone has reached everyone (bounded, so it ends), not until it stops."""
    n, reach, layers = len(connections), torch.eye(len(connections), dtype=torch.bool), 0
    while not reach.all() and layers < n:
        reach, layers = (connections.int() @ reach.int()) > 0, layers + 1
    return layers


def test_5_4_second_review(capsys):
    import numpy as np

    check_max_path_length(lambda connections: np.int64(path_length_by_powers(connections)))
    assert "✅ Exercise 5.4" in capsys.readouterr().out
    for student in (path_length_from_connections, path_length_until_all_reached):
        with pytest.raises(CheckFailed, match=r"expected \d+, got \d+"):
            check_max_path_length(student)
    with pytest.raises(CheckFailed, match=r"expected an int \(\d+\), got a str"):
        check_max_path_length(lambda connections: str(path_length_by_powers(connections)))


@pytest.mark.parametrize("answer, verdict", [
    (12 * 1024 * 1024, "is not right"),  # one sequence of the batch
    ("100663296", "must be a whole number .* got a str"),
    (1.00663296e8, "must be a whole number .* got a float"),
])
def test_5_5_second_review(answer, verdict):
    with pytest.raises(CheckFailed, match=verdict):
        check_weights_memory(answer)
