"""Checks for the exercises of chapter 4, "Queries, keys and values".

Each check's inputs cover what its exercise text allows: every argument matters to
some input, every shape and mask form appears (see each `_..._cases` list), and the
caller's tensors must come back unchanged. Tolerances are stated in each docstring.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import torch

from attnbook.attention import causal_mask, masked_softmax, padding_mask, scaled_dot_product_attention
from attnbook.checks.core import (
    CheckFailed,
    compare_gradients,
    compare_with_reference,
    in_turn,
    random_size,
    require_dtype,
)

# --- Exercise 4.1 ---------------------------------------------------------------------------

def _regression_problem(n_query: tuple[int, int], n_train: tuple[int, int]):
    def make(generator: torch.Generator):
        q, n = random_size(generator, *n_query), random_size(generator, *n_train)
        x_query = torch.rand(q, generator=generator, dtype=torch.float64) * 5
        x_train = torch.rand(n, generator=generator, dtype=torch.float64) * 5
        y_train = torch.randn(n, generator=generator, dtype=torch.float64)
        bandwidth = float(torch.rand(1, generator=generator)) * 1.3 + 0.2  # in [0.2, 1.5]
        return x_query, x_train, y_train, bandwidth
    return make


def reference_nadaraya_watson(x_query, x_train, y_train, bandwidth):
    """Nadaraya-Watson with a Gaussian kernel, as scaled dot-product attention:
    -(x - x_i)^2 / 2h^2 = [x, 1] . [x_i / h^2, -x_i^2 / 2h^2] - x^2 / 2h^2, and the
    last term, the same for every key, cancels in the softmax."""
    q = torch.stack([x_query, torch.ones_like(x_query)], dim=-1)  # (Q, 2)
    k = torch.stack([x_train / bandwidth**2, -x_train**2 / (2 * bandwidth**2)], dim=-1)  # (N, 2)
    output, _ = scaled_dot_product_attention(q, k, y_train[:, None], scale=1.0)  # (Q, 1)
    return output[:, 0]


def check_nadaraya_watson(student_fn) -> None:
    """Exercise 4.1: kernel regression with a Gaussian kernel.

    float64 inputs with Q and N from 1 to 12 (one query, one training point, and
    unequal sizes) and bandwidths in [0.2, 1.5]; within 1e-8 + 1e-6 * |expected|.
    """
    cases = in_turn(_regression_problem((2, 9), (2, 12)), _regression_problem((1, 1), (3, 12)),
                    _regression_problem((2, 9), (1, 1)), _regression_problem((2, 9), (2, 12)))
    compare_with_reference(student_fn, reference_nadaraya_watson, cases, trials=6,
                           name="Exercise 4.1 (nadaraya_watson)", atol=1e-8, rtol=1e-6,
                           arg_names=("x_query", "x_train", "y_train", "bandwidth"))


# --- Exercises 4.2 and 4.3 ------------------------------------------------------------------

def _lengths(longest_is_max_len: bool):
    def make(generator: torch.Generator):
        batch, max_len = random_size(generator, 2, 5), random_size(generator, 2, 8)
        if longest_is_max_len:
            lengths = torch.randint(0, max_len + 1, (batch,), generator=generator)
            lengths[0] = max_len  # one sequence with no padding at all
        else:  # every sequence is padded: max_len is more than the longest length
            lengths = torch.randint(0, max_len, (batch,), generator=generator)
            lengths[-1] = 0  # and one is all padding
        return lengths, max_len
    return make


def _one_sequence(generator: torch.Generator):
    max_len = random_size(generator, 1, 6)
    return torch.randint(0, max_len + 1, (1,), generator=generator), max_len


def check_padding_mask(student_fn) -> None:
    """Exercise 4.2: True at the real positions of each padded sequence.

    Batches where the longest sequence fills `max_len` and batches where every
    sequence is padded (so `max_len` matters), lengths 0, a batch of one. The
    result must be a boolean tensor; it is compared exactly.
    """
    name = "Exercise 4.2 (padding_mask)"
    run = require_dtype(student_fn, torch.bool, name, "comparisons such as < or <= give one")
    compare_with_reference(run, padding_mask, in_turn(_lengths(True), _lengths(False), _one_sequence),
                           name=name, trials=6, arg_names=("lengths", "max_len"))


def check_causal_mask(student_fn) -> None:
    """Exercise 4.3: True where query i may see key j, that is j <= i.

    n = 1, 2 and random n up to 9; a boolean tensor, compared exactly.
    """
    name = "Exercise 4.3 (causal_mask)"
    run = require_dtype(student_fn, torch.bool, name, "comparisons such as < or <= give one")
    compare_with_reference(run, causal_mask,
                           in_turn(lambda g: (1,), lambda g: (2,), lambda g: (random_size(g, 3, 9),)),
                           name=name, trials=5, arg_names=("n",))


# --- Exercise 4.4 ---------------------------------------------------------------------------

# (rank of q, k, v; shape of the mask, from "B", "H", "Lq", "Lk" and 1; boolean or additive).
# In the 4-D cases with an (Lq, Lk) mask the batch is at least 2 and differs from H, so a mask
# broadcast against the wrong dimensions fails instead of fitting by chance.
_MASK_CASES = [
    (3, ("B", "Lq", "Lk"), "boolean"),
    (4, ("B", "H", "Lq", "Lk"), "additive"),
    (3, ("Lq", "Lk"), "boolean"),
    (4, (1, "H", "Lq", "Lk"), "boolean"),
    (3, ("B", 1, "Lk"), "additive"),
    (4, ("B", 1, 1, "Lk"), "boolean"),
    (3, ("Lq", "Lk"), "additive"),
    (4, ("B", "H", "Lq", "Lk"), "boolean"),
    (2, ("Lq", "Lk"), "additive"),
    (4, ("Lq", "Lk"), "boolean"),
    (4, ("Lq", "Lk"), "additive"),
]


def _masked_problem(rank: int, mask_dims: tuple, kind: str):
    def make(generator: torch.Generator):
        sizes = {"B": random_size(generator, 1, 3), "H": random_size(generator, 2, 3),
                 "Lq": random_size(generator, 2, 6), "Lk": random_size(generator, 2, 7), 1: 1}
        if rank == 4 and len(mask_dims) == 2:  # a batch of 2 or 3, and as many heads as the other
            sizes["B"] = random_size(generator, 2, 3)
            sizes["H"] = 5 - sizes["B"]
        d, dv = random_size(generator, 1, 8), random_size(generator, 1, 5)
        lead = (sizes["B"], sizes["H"])[:rank - 2]
        q = torch.randn(*lead, sizes["Lq"], d, generator=generator, dtype=torch.float64)
        k = torch.randn(*lead, sizes["Lk"], d, generator=generator, dtype=torch.float64)
        v = torch.randn(*lead, sizes["Lk"], dv, generator=generator, dtype=torch.float64)
        shape = tuple(sizes[name] for name in mask_dims)
        allowed = torch.rand(shape, generator=generator) < 0.6
        allowed[(0,) * (len(shape) - 1)] = False  # a query (or sequence) that may see nothing
        if kind == "boolean":
            return q, k, v, allowed
        bias = torch.randn(shape, generator=generator, dtype=torch.float64)
        return q, k, v, bias.masked_fill(~allowed, float("-inf"))  # -inf forbids
    return make


def _describe_mask(inputs: tuple) -> str:
    q, mask = inputs[0], inputs[3]
    kind = "a boolean" if mask.dtype == torch.bool else "an additive"
    return f"{q.dim()}-D q, k, v with {kind} mask of shape {tuple(mask.shape)}"


def check_masked_attention(student_fn) -> None:
    """Exercise 4.4: scaled dot-product attention with a boolean or additive mask,
    returning (output, weights), NaN-free in values and gradients.

    2-D, 3-D and 4-D float64 q, k, v; boolean and additive (-inf) masks of full and
    broadcast shapes (an (Lq, Lk) mask on 2-D, 3-D and 4-D inputs among them), each with
    a query that may see no key. Values within 1e-8 +
    1e-6 * |expected|, then the gradients with respect to q, k and v to the same
    tolerance.
    """
    name = "Exercise 4.4 (masked_attention)"
    makers = [_masked_problem(*case) for case in _MASK_CASES]
    with contextlib.redirect_stdout(io.StringIO()):  # one line at the end, for values and gradients
        compare_with_reference(student_fn, scaled_dot_product_attention, in_turn(*makers), name=name,
                               trials=len(makers), atol=1e-8, rtol=1e-6,
                               item_names=("output", "weights"), arg_names=("q", "k", "v", "mask"))
    generator = torch.Generator().manual_seed(4321)
    for make in makers:
        inputs = make(generator)
        compare_gradients(student_fn, scaled_dot_product_attention, inputs, wrt=(0, 1, 2), name=name,
                          case=f"on {_describe_mask(inputs)}", atol=1e-8, rtol=1e-6,
                          arg_names=("q", "k", "v", "mask"))
    print(f"✅ {name}: values and gradients correct on {len(makers)} random inputs, "
          "with boolean and additive masks.")


# --- Exercise 4.5 ---------------------------------------------------------------------------

def _large_logits(*shape_ranges: tuple[int, int]):
    def make(generator: torch.Generator):
        shape = tuple(random_size(generator, low, high) for low, high in shape_ranges)
        # A huge offset per row makes a naive exp() overflow, even in float64; the small
        # spread within a row keeps the answer far from one-hot, so a wrong temperature
        # is caught too.
        offset = 1000 * torch.randn(*shape[:-1], 1, generator=generator, dtype=torch.float64)
        logits = offset + 3 * torch.randn(shape, generator=generator, dtype=torch.float64)
        temperature = float(torch.rand(1, generator=generator)) * 2.5 + 0.5
        return logits, temperature
    return make


def _dominated_logits(*shape_ranges: tuple[int, int]):
    def make(generator: torch.Generator):
        logits, temperature = _large_logits(*shape_ranges)(generator)
        # The last two entries of each row stand thousands above the others: shifting a row by
        # anything but its maximum (its mean, its first entry) still overflows exp().
        logits[..., -2:] += 8000
        return logits, temperature
    return make


def reference_softmax_with_temperature(logits, temperature):
    return masked_softmax(logits / temperature)


# The functions exercise 4.5 asks the student not to call, with the names its verdict uses.
_SOFTMAXES = [(torch, "softmax", "torch.softmax"), (torch, "log_softmax", "torch.log_softmax"),
              (torch.nn.functional, "softmax", "F.softmax"),
              (torch.nn.functional, "log_softmax", "F.log_softmax"),
              (torch.special, "softmax", "torch.special.softmax"),
              (torch.special, "log_softmax", "torch.special.log_softmax"),
              (torch.Tensor, "softmax", "Tensor.softmax"),
              (torch.Tensor, "log_softmax", "Tensor.log_softmax")]


def without_softmax(student_fn: Callable, name: str) -> Callable:
    """Wrap `student_fn` so that calling any of PyTorch's softmax functions is a verdict."""
    def run(*args):
        saved = []
        for owner, attribute, label in _SOFTMAXES:
            def refuse(*_args, _label=label, **_kwargs):
                raise CheckFailed(f"{name}: your function calls {_label}, which the exercise asks you "
                                  "not to use; subtract each row's maximum and exponentiate yourself")
            saved.append((owner, attribute, owner.__dict__.get(attribute)))
            setattr(owner, attribute, refuse)
        try:
            return student_fn(*args)
        finally:
            for owner, attribute, original in reversed(saved):
                if original is None:  # inherited (Tensor's methods live on its C base class)
                    delattr(owner, attribute)
                else:
                    setattr(owner, attribute, original)
    return run


def check_softmax_with_temperature(student_fn) -> None:
    """Exercise 4.5: a softmax with temperature that survives huge logits.

    float64 logits of 1, 2 and 3 dimensions with offsets in the thousands, and rows
    whose entries differ by thousands (so only the maximum is a safe shift);
    temperatures in [0.5, 3]; within 1e-10 + 1e-8 * |expected|. Calling PyTorch's
    softmax (or log_softmax) is a verdict, as the exercise asks.
    """
    name = "Exercise 4.5 (softmax_with_temperature)"
    cases = in_turn(_large_logits((2, 4), (2, 6)), _large_logits((2, 3), (2, 4), (2, 5)),
                    _large_logits((2, 6)), _dominated_logits((2, 4), (3, 6)), _dominated_logits((3, 6)))
    compare_with_reference(without_softmax(student_fn, name), reference_softmax_with_temperature, cases,
                           name=name, trials=10,
                           atol=1e-10, rtol=1e-8, arg_names=("logits", "temperature"))


__all__ = ["check_nadaraya_watson", "check_padding_mask", "check_causal_mask",
           "check_masked_attention", "check_softmax_with_temperature"]
