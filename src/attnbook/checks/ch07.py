"""Checks for the exercises of chapter 7, "Multi-head attention"."""

from __future__ import annotations

import torch
from torch import nn

from attnbook.attention import causal_mask
from attnbook.checks.core import CheckFailed, check_answer, compare_with_reference, in_turn, random_size
from attnbook.multihead import MultiHeadAttention, merge_heads, split_heads


def _split_inputs(batch: tuple[int, int], length: tuple[int, int], heads: tuple[int, int]):
    def make(generator: torch.Generator):
        n_heads, head_dim = random_size(generator, *heads), random_size(generator, 1, 5)
        x = torch.randn(random_size(generator, *batch), random_size(generator, *length), n_heads * head_dim,
                        generator=generator)
        return x, n_heads
    return make


def check_split_heads(student_fn) -> None:
    """Exercise 7.1: (B, L, D) -> (B, H, L, D/H), within 1e-5 + 1e-4 * |expected|.

    Batches, lengths and head counts of 2 and more (where a reshape without the
    transpose gives wrong values), and sizes of 1.
    """
    cases = in_turn(_split_inputs((2, 3), (2, 6), (2, 4)), _split_inputs((1, 1), (1, 1), (1, 1)),
                    _split_inputs((2, 3), (2, 6), (2, 4)), _split_inputs((1, 3), (1, 6), (1, 4)))
    compare_with_reference(student_fn, split_heads, cases, trials=6,
                           name="Exercise 7.1 (split_heads)", arg_names=("x", "n_heads"))


def _merge_inputs(low: int):
    def make(generator: torch.Generator):
        shape = [random_size(generator, low, 3), random_size(generator, low, 4),
                 random_size(generator, low, 6), random_size(generator, 1, 5)]
        return (torch.randn(*shape, generator=generator),)
    return make


def _merge_ones(generator: torch.Generator):
    """A batch of one and a length of one, with several heads (a squeeze() drops both)."""
    n_heads, head_dim = random_size(generator, 2, 4), random_size(generator, 1, 5)
    return (torch.randn(1, n_heads, 1, head_dim, generator=generator),)


def check_merge_heads(student_fn) -> None:
    """Exercise 7.2: (B, H, L, d) -> (B, L, H*d), within 1e-5 + 1e-4 * |expected|.

    Batches, heads and lengths of 2 and more (where a reshape without the transpose
    gives wrong values, and `view` after it fails), sizes of 1, and a batch and a
    length of 1 together.
    """
    compare_with_reference(student_fn, merge_heads,
                           in_turn(_merge_inputs(2), _merge_inputs(1), _merge_ones),
                           trials=6, name="Exercise 7.2 (merge_heads)", arg_names=("x",))


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


def _without_calling(student_fn, name: str):
    """Wrap a function of a module: a verdict if it runs the module itself (mha(...), a copy of it,
    or mha.forward), since the exercise asks for the heads one at a time."""
    def run(module, *args):
        def refuse(*_args, **_kwargs):
            raise CheckFailed(f"{name}: your function runs the module itself (mha(...)); compute each "
                              "head from the rows of mha.q_proj, mha.k_proj and mha.v_proj in a loop")
        module.forward = refuse
        try:
            return student_fn(module, *args)
        finally:
            del module.forward
    return run


def check_heads_loop(student_fn) -> None:
    """Exercise 7.3: multi-head attention, one head at a time.

    2 to 4 heads, unequal query and key lengths, masks None, causal (Lq, Lk) and
    random boolean (Lq, Lk) with a query that sees no key; within 1e-5 + 1e-4 * |expected|.
    Running the module itself (mha(...)) is a verdict, as the exercise asks for a loop.
    """
    name = "Exercise 7.3 (heads_loop)"
    cases = in_turn(_module_and_inputs("none"), _module_and_inputs("causal"), _module_and_inputs("random"))
    student = _unchanged_module(_without_calling(student_fn, name), name)
    compare_with_reference(student, _module_output, cases, trials=6,
                           name=name, arg_names=("mha", "query", "key", "value", "mask"))


def check_to_torch(student_fn) -> None:
    """Exercise 7.4: an nn.MultiheadAttention that computes what our module computes.

    2 to 4 heads, key and value different from each other and from the query, unequal
    lengths; outputs within 1e-5 + 1e-4 * |expected|.
    """
    name = "Exercise 7.4 (to_torch)"

    def convert_and_run(module, query, key, value, mask):
        theirs = student_fn(module)
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


def check_parameter_count(answer) -> None:
    """Exercise 7.5: parameters of MultiHeadAttention(64, n_heads), for any n_heads; a Python int."""
    expected = sum(p.numel() for p in MultiHeadAttention(64, 8).parameters())
    check_answer(answer, expected, name="Exercise 7.5 (parameter count)",
                 hint="Count the weights and biases of the four d_model x d_model projections.")


__all__ = ["check_split_heads", "check_merge_heads", "check_heads_loop", "check_to_torch",
           "check_parameter_count"]
