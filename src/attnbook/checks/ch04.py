"""Checks for the exercises of chapter 4, "Queries, keys and values".

Each check's inputs cover what its exercise text allows: every argument matters to
some input, every shape and mask form appears (see each `_..._cases` list), and the
caller's tensors must come back unchanged. Tolerances are stated in each docstring.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable

import torch

from attnbook.attention import causal_mask, masked_softmax, padding_mask, scaled_dot_product_attention
from attnbook.checks.core import (
    CheckFailed,
    _short,
    as_number,
    call_student,
    compare_cases,
    compare_gradients,
    compare_prediction,
    compare_with_reference,
    in_turn,
    random_size,
    recorded,
    without_calls,
)

# --- Exercise 4.1 ---------------------------------------------------------------------------

def reference_temperature_for(delta, p, n):
    """The temperature at which one key that scores `delta` above n - 1 tied others gets
    weight p: p = e^(delta/tau) / (e^(delta/tau) + n - 1)."""
    return delta / math.log(p * (n - 1) / (1 - p))


def _top_weight(delta: float, tau: float, n: int) -> float:
    scores = torch.zeros(n, dtype=torch.float64)
    scores[0] = delta
    return float(torch.softmax(scores / tau, dim=0)[0])


def check_temperature_for(student_fn) -> None:
    """Exercise 4.1: the temperature at which the top key of n (delta above the n - 1
    others, which tie) gets weight p, for 1/n < p < 1.

    Fixed cases first (two keys, p near 1/n and near 1, n = 32, a gap below 1 and one
    in the hundreds), then 30 random (delta, p, n); the answer is a number (a float,
    a NumPy scalar or a 0-d tensor) within a relative 1e-6 of the true temperature.
    The verdict also says which weight the student's temperature really gives.
    """
    name = "Exercise 4.1 (temperature_for)"
    cases = [(1.0, 0.75, 2), (2.0, 0.9, 2), (3.0, 0.5, 5), (0.5, 0.3, 4), (10.0, 0.99, 32),
             (250.0, 0.6, 8), (1.0, 0.1, 16)]
    generator = torch.Generator().manual_seed(41)
    for _ in range(30):
        n = random_size(generator, 2, 64)
        delta = float(torch.rand(1, generator=generator)) * 20 + 0.05
        p = 1 / n + (1 - 1 / n) * (0.02 + 0.96 * float(torch.rand(1, generator=generator)))
        cases.append((delta, p, n))
    for delta, p, n in cases:
        case = f"temperature_for({delta:.4g}, {p:.4g}, {n})"
        got = call_student(student_fn, (delta, p, n), name, case=case)
        tau = as_number(got, whole=False)
        if tau is None:
            raise CheckFailed(f"{name}: {case} returned {_short(got)}; return one number")
        truth = reference_temperature_for(delta, p, n)
        if not math.isclose(tau, truth, rel_tol=1e-6):
            if tau > 0 and math.isfinite(tau):
                gives = f"at that temperature the top key gets weight {_top_weight(delta, tau, n):.4g}"
            else:
                gives = "a temperature must be positive and finite"
            raise CheckFailed(f"{name}: {case} gives {tau:.6g}, but the answer is {truth:.6g}: "
                              f"{gives}, not {p:.4g}")
    print(f"✅ {name}: right in all {len(cases)} cases.")


# --- Exercise 4.2 ---------------------------------------------------------------------------

MASK_LENGTHS, MASK_PADDED = (5, 2, 1), 5


def _mask_truth() -> tuple[int, int]:
    lengths = torch.tensor(MASK_LENGTHS)
    mask = padding_mask(lengths, MASK_PADDED)[:, None, :] & causal_mask(MASK_PADDED)
    return int(mask.sum()), int((mask.sum(dim=-1) == 1).sum())


def check_mask_prediction_recorded(predicted_allowed, predicted_single) -> None:
    """Exercise 4.2, first step: both predictions are whole numbers. Says nothing about
    whether they are right: that comes after the measurement."""
    name = "Exercise 4.2 (prediction)"
    values = recorded(name, {"predicted_allowed": predicted_allowed,
                             "predicted_single": predicted_single})
    print(f"✅ {name}: recorded {values['predicted_allowed']} allowed pairs and "
          f"{values['predicted_single']} rows that see one key. Now measure.")


def check_mask_prediction(predicted_allowed, predicted_single, measured_allowed,
                          measured_single) -> None:
    """Exercise 4.2: for lengths (5, 2, 1) padded to 5, the padding mask (on keys) and the
    causal mask combined, (3, 5, 5): how many (query, key) pairs are allowed, and how
    many query rows see exactly one key. Whole numbers (ints, NumPy integers or integer
    0-d tensors), compared exactly; predictions and measurements alike."""
    name = "Exercise 4.2 (how much may the queries see?)"
    given = {"predicted_allowed": predicted_allowed, "predicted_single": predicted_single,
             "measured_allowed": measured_allowed, "measured_single": measured_single}
    values = recorded(name, given)
    allowed, single = _mask_truth()
    compare_prediction(name, {
        "number of allowed pairs": (values["predicted_allowed"], values["measured_allowed"],
                                    allowed),
        "number of rows that see one key": (values["predicted_single"],
                                            values["measured_single"], single)})
    print(f"✅ {name}: prediction and measurement both right ({allowed} of "
          f"{len(MASK_LENGTHS) * MASK_PADDED ** 2} pairs allowed; {single} rows see one key).")


# --- Exercise 4.3 ---------------------------------------------------------------------------

def reference_padded_attention(q, k, v, lengths):
    """Attention over the first lengths[b] keys of each sequence b."""
    keys_are_real = padding_mask(lengths, k.shape[-2])[:, None, :]  # (B, 1, Lk)
    return scaled_dot_product_attention(q, k, v, keys_are_real)


def _padded_case(batch: int, n_queries: int, n_keys: int, d: int, dv: int,
                 lengths: list[int], seed: int):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_queries, d, generator=generator, dtype=torch.float64)
    k = torch.randn(batch, n_keys, d, generator=generator, dtype=torch.float64)
    v = torch.randn(batch, n_keys, dv, generator=generator, dtype=torch.float64)
    description = (f"with q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} and "
                   f"lengths {lengths}")
    return description, (q, k, v, torch.tensor(lengths))


def check_padded_attention(student_fn) -> None:
    """Exercise 4.3: attention that ignores each sequence's padded keys, returning
    (output, weights).

    float64; a batch without padding, partly padded batches with lengths down to 1, a
    batch of one, more keys than queries and fewer, d != dv; values and weights within
    1e-8 + 1e-6 * |expected|.
    """
    name = "Exercise 4.3 (padded_attention)"
    cases = [_padded_case(2, 3, 4, 5, 2, [4, 4], 0),
             _padded_case(3, 4, 6, 3, 5, [6, 2, 4], 1),
             _padded_case(2, 5, 3, 4, 3, [1, 3], 2),
             _padded_case(1, 2, 7, 6, 1, [3], 3),
             _padded_case(3, 6, 6, 2, 4, [5, 1, 6], 4)]

    def reference(q, k, v, lengths):
        return reference_padded_attention(q, k, v, lengths)

    def run(q, k, v, lengths):
        result = student_fn(q, k, v, lengths)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise CheckFailed(f"{name}: return (output, weights), got "
                              f"{_short(result) if not torch.is_tensor(result) else 'one tensor'}")
        return tuple(result)

    compare_cases(run, reference, cases, name=name, atol=1e-8, rtol=1e-6,
                  arg_names=("q", "k", "v", "lengths"), item_names=("output", "weights"),
                  announce=False)
    print(f"✅ {name}: outputs and weights correct in all {len(cases)} cases.")


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
    tolerance. Calling the package's scaled_dot_product_attention or masked_softmax
    (which are the answer) is a verdict.
    """
    name = "Exercise 4.4 (masked_attention)"
    student_fn = without_calls(
        student_fn, name, [(scaled_dot_product_attention, "scaled_dot_product_attention"),
                           (masked_softmax, "masked_softmax")],
        "write the scores, the mask and the softmax yourself")
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
        # its mean or its first entry overflows exp(); shifting by its maximum does not.
        logits[..., -2:] += 8000
        return logits, temperature
    return make


def reference_softmax_with_temperature(logits, temperature):
    return masked_softmax(logits / temperature)


# The functions exercise 4.5 asks the student not to call, with the names its verdict uses.
_SOFTMAXES = [(torch, "softmax", "torch.softmax"), (torch, "log_softmax", "torch.log_softmax"),
              (torch.nn.functional, "softmax", "F.softmax"),
              (torch.nn.functional, "log_softmax", "F.log_softmax"),
              (torch, "_softmax", "torch._softmax"), (torch, "_log_softmax", "torch._log_softmax"),
              (torch, "_safe_softmax", "torch._safe_softmax"),
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
            if not hasattr(owner, attribute):  # torch._safe_softmax is recent
                continue
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
    softmax (or log_softmax, torch._softmax) or the package's masked_softmax is a verdict,
    as the exercise asks.
    """
    name = "Exercise 4.5 (softmax_with_temperature)"
    cases = in_turn(_large_logits((2, 4), (2, 6)), _large_logits((2, 3), (2, 4), (2, 5)),
                    _large_logits((2, 6)), _dominated_logits((2, 4), (3, 6)), _dominated_logits((3, 6)))
    student_fn = without_calls(without_softmax(student_fn, name), name,
                               [(masked_softmax, "masked_softmax")],
                               "subtract each row's maximum and exponentiate yourself")
    compare_with_reference(student_fn, reference_softmax_with_temperature, cases,
                           name=name, trials=10,
                           atol=1e-10, rtol=1e-8, arg_names=("logits", "temperature"))


__all__ = ["check_temperature_for", "check_mask_prediction_recorded", "check_mask_prediction",
           "check_padded_attention", "check_masked_attention",
           "check_softmax_with_temperature", "without_softmax",
           "reference_temperature_for", "reference_padded_attention"]
