"""Checks for the exercises of chapter 7, "Multi-head attention"."""

from __future__ import annotations

import torch
from torch import nn

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.checks.core import (
    CheckFailed,
    _snapshot,
    as_number,
    call_student,
    compare_prediction,
    compare_with_reference,
    in_turn,
    random_size,
    unchanged_inputs,
    verdict,
    without_calls,
)
from attnbook.multihead import MultiHeadAttention, copy_to_torch, split_heads, to_torch


def _module_and_inputs(mask_kind: str):
    def make(generator: torch.Generator):
        n_heads, head_dim = random_size(generator, 2, 4), random_size(generator, 1, 4)
        batch, n_queries = random_size(generator, 1, 3), random_size(generator, 2, 6)
        if mask_kind == "causal":
            n_keys = n_queries + random_size(generator, 0, 3)
        else:
            n_keys = random_size(generator, 1, 6)
        torch.manual_seed(random_size(generator, 0, 10_000))
        module = MultiHeadAttention(n_heads * head_dim, n_heads)
        query = torch.randn(batch, n_queries, n_heads * head_dim, generator=generator)
        key = torch.randn(batch, n_keys, n_heads * head_dim, generator=generator)
        value = torch.randn(batch, n_keys, n_heads * head_dim, generator=generator)
        if mask_kind == "causal":
            mask = causal_mask(n_queries, n_keys)
        elif mask_kind == "random":
            mask = torch.rand(n_queries, n_keys, generator=generator) < 0.6
            mask[0] = False  # a query that may see no key
        else:
            mask = None
        return module, query, key, value, mask
    return make


def _module_output(module, query, key, value, mask):
    with torch.no_grad():
        return module(query, key, value, mask)[0]


def _unchanged_module(student_fn, name: str):
    """Wrap a function of a module: a verdict if it changes the module's weights in place."""
    def run(module, *args):
        before = {key: t.detach().clone() for key, t in module.state_dict().items()}
        with torch.no_grad():
            result = student_fn(module, *args)
        for key, t in module.state_dict().items():
            if not torch.equal(before[key], t):
                raise CheckFailed(f"{name}: your function changed `mha.{key}` in place; "
                                  "the module's weights must be left as they were")
        return result
    return run


def _without_running(student_fn, name: str, advice: str):
    """Wrap a function of a module: a verdict if it runs a MultiHeadAttention's forward in
    any way (mha(...), a copy of mha, MultiHeadAttention.forward(mha, ...)); `advice`
    says what the exercise asks for instead."""
    return without_calls(student_fn, name, [(MultiHeadAttention.forward,
                                             "the module itself (mha(...) or its forward)")],
                         advice)


def reference_head_outputs(module, query, key, value, mask):
    """(H, B, Lq, D): what each head adds to mha(query, key, value, mask)[0], without the
    output bias. Head h's output meets columns h*d to (h+1)*d of out_proj.weight."""
    n_heads, head_dim = module.n_heads, module.head_dim
    with torch.no_grad():
        q = split_heads(module.q_proj(query), n_heads)  # (B, H, Lq, d)
        k = split_heads(module.k_proj(key), n_heads)
        v = split_heads(module.v_proj(value), n_heads)
        out, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, Lq, d)
        columns = module.out_proj.weight.view(module.d_model, n_heads, head_dim)  # (D, H, d)
        return torch.einsum("bhqd,ehd->hbqe", out, columns)


def _head_outputs_hint(module, query, key, value, mask, got, expected) -> str:
    """Why terms of the right shape are wrong, where the module's output tells: the output
    bias added to every term, split among them, or terms that add up but not head by head."""
    def close(a, b):
        return torch.allclose(a.double(), b.double(), atol=1e-5, rtol=1e-4)

    bias = module.out_proj.bias.detach()
    total = _module_output(module, query, key, value, mask)
    if close(got - expected, bias.expand_as(got)):
        return ("; every term includes mha.out_proj.bias, which belongs to no head: "
                "leave it out")
    if close(got.sum(0), total):
        return ("; your terms add up to the module's output with its bias, but the bias "
                "belongs to no head: leave it out of every term")
    if close(got.sum(0) + bias, total):
        return "; your terms add up to the module's output, but not head by head"
    return ""


def check_head_outputs(student_fn) -> None:
    """Exercise 7.3: what each head adds to the output, (H, B, Lq, D), without the output
    bias, so that the heads' terms plus mha.out_proj.bias give mha(query, key, value, mask)[0].

    2 to 4 heads of widths 1 to 4, batches of 1 to 3, unequal query and key lengths, masks
    None, causal (Lq, Lk) and random boolean (Lq, Lk) with a query that sees no key, six
    cases in all; within 1e-5 + 1e-4 * |expected| (float32). Where the module's output
    explains a wrong answer, the verdict says so (the output bias added to every term or
    split among them; terms that add up but not head by head). The module's weights and
    the inputs must come back unchanged.
    """
    name = "Exercise 7.3 (head_outputs)"
    student = _unchanged_module(student_fn, name)
    make = in_turn(_module_and_inputs("none"), _module_and_inputs("causal"),
                   _module_and_inputs("random"))
    generator = torch.Generator().manual_seed(73)
    trials = 6
    for _ in range(trials):
        module, query, key, value, mask = make(generator)
        mask_text = "no mask" if mask is None else f"a mask of shape {tuple(mask.shape)}"
        case = (f"with {module.n_heads} heads of width {module.head_dim}, query "
                f"{tuple(query.shape)}, key and value {tuple(key.shape)} and {mask_text}")
        expected = reference_head_outputs(module, query, key, value, mask)
        inputs = (query, key, value, mask)
        before = _snapshot(inputs)
        got = call_student(student, (module, *inputs), name, case=case)
        unchanged_inputs(before, inputs, name, case, ("query", "key", "value", "mask"))
        problem = verdict(got, expected)
        if problem is None:
            continue
        if torch.is_tensor(got) and got.shape == expected.shape and got.is_floating_point():
            problem += _head_outputs_hint(module, query, key, value, mask, got.detach(), expected)
        raise CheckFailed(f"{name}: {case}: {problem}")
    print(f"✅ {name}: every head's term correct in {trials} cases.")


def check_to_torch(student_fn) -> None:
    """Exercise 7.4: an nn.MultiheadAttention that computes what our module computes.

    2 to 4 heads, key and value different from each other and from the query, unequal
    lengths; outputs within 1e-5 + 1e-4 * |expected|. Calling the package's to_torch or
    copy_to_torch (the answer) is a verdict.
    """
    name = "Exercise 7.4 (to_torch)"
    converter = without_calls(student_fn, name, [(to_torch, "attnbook.multihead.to_torch"),
                                                 (copy_to_torch, "copy_to_torch")],
                              "copy the weights into in_proj_weight and the rest yourself")

    def convert_and_run(module, query, key, value, mask):
        theirs = converter(module)
        if not isinstance(theirs, nn.MultiheadAttention):
            raise CheckFailed(f"{name}: expected an nn.MultiheadAttention, got a {type(theirs).__name__}")
        if not theirs.batch_first:
            raise CheckFailed(f"{name}: create it with batch_first=True, as our module is batch-first")
        if theirs.training and theirs.dropout > 0:
            raise CheckFailed(f"{name}: the module you returned has dropout={theirs.dropout}; ours has "
                              "none, so create it with dropout=0 (the default)")
        try:
            return theirs(query, key, value)[0]
        except Exception as error:  # the module is the student's, the line would be PyTorch's
            shapes = f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            raise CheckFailed(f"{name}: the nn.MultiheadAttention you returned raised "
                              f"{type(error).__name__} when called on float32 query, key and value "
                              f"of shapes {shapes}: {' '.join(str(error).split())}") from None

    def reference(module, query, key, value, mask):
        return _module_output(module, query, key, value, None)

    compare_with_reference(_unchanged_module(convert_and_run, name), reference,
                           in_turn(_module_and_inputs("none")), trials=5, name=name)


# --- Exercise 7.1 ---------------------------------------------------------------------------

RANK_WIDTH, RANK_LENGTH, RANK_HEADS = 16, 32, (1, 2, 4, 8, 16)


def head_score_rank(n_heads: int, seed: int = 0) -> int:
    """The rank of head 0's (L, L) score matrix, before the softmax, in a random
    MultiHeadAttention(16, n_heads) on 32 random positions (float64)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
        torch.manual_seed(seed)
        module = MultiHeadAttention(RANK_WIDTH, n_heads).double()
    x = torch.randn(1, RANK_LENGTH, RANK_WIDTH, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        q = split_heads(module.q_proj(x), n_heads)[0, 0]  # (L, d)
        k = split_heads(module.k_proj(x), n_heads)[0, 0]
        return int(torch.linalg.matrix_rank(q @ k.T))


def _ranks(name: str, label: str, ranks) -> dict[int, int]:
    if ranks is ...:
        raise CheckFailed(f"{name}: replace the ... in `{label}` with a dict {{heads: rank}}")
    if not isinstance(ranks, dict) or set(ranks) != set(RANK_HEADS):
        raise CheckFailed(f"{name}: `{label}` must be a dict with the keys {list(RANK_HEADS)} "
                          "(the numbers of heads) and nothing else")
    values = {}
    for heads in RANK_HEADS:
        value = as_number(ranks[heads], whole=True)
        if value is None:
            raise CheckFailed(f"{name}: `{label}`[{heads}] must be a whole number, got "
                              f"{ranks[heads]!r}")
        values[heads] = value
    return values


def check_rank_prediction_recorded(predicted_ranks) -> None:
    """Exercise 7.1, first step: a dict {heads: whole number} for 1, 2, 4, 8 and 16 heads.
    Says nothing about whether it is right: that comes after the measurement."""
    name = "Exercise 7.1 (prediction)"
    values = _ranks(name, "predicted_ranks", predicted_ranks)
    print(f"✅ {name}: recorded ranks {list(values.values())}. Now measure.")


def check_rank_prediction(predicted_ranks, measured_ranks) -> None:
    """Exercise 7.1: the rank of one head's (32, 32) score matrix QK^T in a random
    MultiHeadAttention(16, H), for H = 1, 2, 4, 8, 16. Whole numbers (ints, NumPy
    integers, integer 0-d tensors as torch.linalg.matrix_rank returns), compared exactly
    with the rank of a fresh random module's scores (generically D / H)."""
    name = "Exercise 7.1 (the rank of one head)"
    predicted = _ranks(name, "predicted_ranks", predicted_ranks)
    measured = _ranks(name, "measured_ranks", measured_ranks)
    truth = {heads: head_score_rank(heads) for heads in RANK_HEADS}
    compare_prediction(name, {f"rank for {heads} head{'s' if heads > 1 else ''}":
                              (predicted[heads], measured[heads], truth[heads])
                              for heads in RANK_HEADS})
    print(f"✅ {name}: prediction and measurement both right (ranks "
          f"{list(truth.values())} for {list(RANK_HEADS)} heads).")


# --- Exercise 7.2 ---------------------------------------------------------------------------

def check_batched_heads(student_fn) -> None:
    """Exercise 7.2: the fixed batched multi-head attention, equal to mha(query, key,
    value)[0] without a mask.

    2 to 4 heads, batches of 1 to 3, key and value lengths that differ from the query's;
    within 1e-5 + 1e-4 * |expected|. Running the module itself (mha(...), a copy of it, or
    MultiHeadAttention.forward(mha, ...)) is a verdict, and so is changing its weights.
    """
    name = "Exercise 7.2 (batched_heads)"

    def run(module, query, key, value, mask):
        return student_fn(module, query, key, value)

    advice = ("fix the function as given: all heads at once from mha.q_proj, mha.k_proj "
              "and mha.v_proj, without a loop over the heads")
    student = _unchanged_module(_without_running(run, name, advice), name)
    compare_with_reference(student, _module_output, in_turn(_module_and_inputs("none")),
                           trials=6, name=name,
                           arg_names=("mha", "query", "key", "value", "mask"))


# --- Exercise 7.5 ---------------------------------------------------------------------------

def _torch_sizes() -> list[tuple[int, int, int, int]]:
    fixed = [(8, 2, 8, 8), (8, 2, 4, 6), (12, 3, 12, 5), (6, 1, 10, 6), (16, 4, 16, 16),
             (9, 3, 2, 2), (10, 5, 3, 10)]
    generator = torch.Generator().manual_seed(75)
    drawn = []
    for _ in range(10):
        heads = random_size(generator, 1, 4)
        drawn.append((heads * random_size(generator, 1, 6), heads,
                      random_size(generator, 1, 20), random_size(generator, 1, 20)))
    return fixed + drawn


def torch_parameters(embed_dim: int, num_heads: int, kdim: int, vdim: int) -> int:
    module = nn.MultiheadAttention(embed_dim, num_heads, kdim=kdim, vdim=vdim)
    return sum(p.numel() for p in module.parameters())


def check_torch_parameter_count(student_fn) -> None:
    """Exercise 7.5: the number of parameters of nn.MultiheadAttention(embed_dim,
    num_heads, kdim=kdim, vdim=vdim) (biases on), as a formula.

    kdim and vdim equal to embed_dim (one stacked in_proj_weight) and not (three
    matrices), one head and several, then 10 random sizes; a whole number, exact.
    """
    name = "Exercise 7.5 (torch_parameter_count)"
    sizes = _torch_sizes()
    for embed_dim, num_heads, kdim, vdim in sizes:
        case = f"torch_parameter_count({embed_dim}, {num_heads}, {kdim}, {vdim})"
        got = call_student(student_fn, (embed_dim, num_heads, kdim, vdim), name, case=case)
        count = as_number(got, whole=True)
        if count is None or torch.is_tensor(got):
            raise CheckFailed(f"{name}: {case} returned {got!r}; return a whole number (int)")
        truth = torch_parameters(embed_dim, num_heads, kdim, vdim)
        if count != truth:
            how = "more" if count > truth else "fewer"
            raise CheckFailed(f"{name}: {case} gives {count:,}, but the module has "
                              f"{truth:,} parameters ({abs(count - truth):,} {how})")
    print(f"✅ {name}: right at all {len(sizes)} sizes.")


__all__ = ["check_rank_prediction_recorded", "check_rank_prediction", "check_batched_heads",
           "check_head_outputs", "check_to_torch", "check_torch_parameter_count",
           "head_score_rank", "reference_head_outputs", "torch_parameters"]
