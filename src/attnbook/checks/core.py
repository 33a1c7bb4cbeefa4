"""The machinery behind every exercise check.

A check calls the student's function on fresh random inputs, compares the
result with the package's reference, and says in one sentence what is wrong:
an exception, a wrong type, a wrong shape, NaN, or the first wrong value and
where it is. A wrong answer raises `CheckFailed`, so a notebook cell fails
visibly; a right one prints a single line.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import torch


class CheckFailed(AssertionError):
    """The student's answer is not right yet; the message says why."""


def _describe(value) -> str:
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _describe_input(value) -> str:
    if torch.is_tensor(value):
        return f"shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (int, float, str, bool)):
        return repr(value)
    return f"a {type(value).__name__}"


def _first_mismatch(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=False)
    wrong = (~close).nonzero()
    index = tuple(wrong[0].tolist())
    return (f"{len(wrong)} of {expected.numel()} values are wrong; the first is at index "
            f"{index}: expected {expected[index].item():.6g}, got {got[index].item():.6g}")


def verdict(got, expected, atol: float = 1e-5, rtol: float = 1e-4,
            item_names: tuple[str, ...] | None = None) -> str | None:
    """None if `got` matches `expected`, else a sentence saying what is wrong.

    Tensors are compared by shape, dtype, NaN and values; tuples and lists element
    by element (`item_names` names the elements in the verdict); anything else with ==.
    """
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a {type(expected).__name__} of {len(expected)} items, got {_describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = verdict(g, e, atol, rtol)
            if problem:
                name = f"the {item_names[i]} (item {i})" if item_names else f"item {i}"
                return f"{name}: {problem}"
        return None
    if torch.is_tensor(expected):
        if not torch.is_tensor(got):
            return f"expected {_describe(expected)}, got {_describe(got)}"
        if got.shape != expected.shape:
            return f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.is_floating_point() and torch.isnan(got).any() and not torch.isnan(expected).any():
            first = tuple(torch.isnan(got).nonzero()[0].tolist())
            return f"the result contains NaN (first at index {first}); the reference has none"
        if got.dtype != expected.dtype:
            return f"wrong dtype: expected {expected.dtype}, got {got.dtype}"
        got_cmp, expected_cmp = got.detach().double().cpu(), expected.detach().double().cpu()
        if not torch.allclose(got_cmp, expected_cmp, atol=atol, rtol=rtol, equal_nan=True):
            return _first_mismatch(got_cmp, expected_cmp, atol, rtol)
        return None
    if got != expected:
        return f"expected {expected!r}, got {got!r}"
    return None


def _short_exception(error: BaseException) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return (f"your function raised {type(error).__name__}: {error} "
            f"(line {frame.lineno}: {frame.line!r})")


def compare_with_reference(student: Callable, reference: Callable,
                           make_inputs: Callable[[torch.Generator], tuple], name: str,
                           trials: int = 5, seed: int = 1234,
                           atol: float = 1e-5, rtol: float = 1e-4,
                           item_names: tuple[str, ...] | None = None) -> None:
    """Run `student` and `reference` on `trials` fresh inputs from `make_inputs(generator)`.

    Prints one line if every result matches; otherwise raises CheckFailed saying
    which input (its shapes) and what went wrong. For a function returning a tuple,
    `item_names` (such as ("output", "weights")) says which item is wrong.
    """
    generator = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        inputs = make_inputs(generator)
        shapes = ", ".join(_describe_input(x) for x in inputs)
        expected = reference(*inputs)
        try:
            got = student(*inputs)
        except NotImplementedError:
            raise CheckFailed(f"{name}: not implemented yet (replace the "
                              "`raise NotImplementedError` with your code)") from None
        except Exception as error:  # any crash becomes a verdict, not a traceback
            raise CheckFailed(f"{name}: on inputs ({shapes}), "
                              f"{_short_exception(error)}") from None
        problem = verdict(got, expected, atol, rtol, item_names)
        if problem:
            raise CheckFailed(f"{name}: on test {trial + 1} of {trials}, with inputs "
                              f"({shapes}): {problem}")
    print(f"✅ {name}: correct on {trials} random inputs.")


def check_answer(answer, expected, name: str, hint: str = "") -> None:
    """A question with one right answer (a number, a word, an index)."""
    if answer is ...:
        raise CheckFailed(f"{name}: replace the ... with your answer")
    if isinstance(expected, float):
        right = isinstance(answer, (int, float)) and abs(answer - expected) <= 1e-6 * max(1, abs(expected))
    else:
        right = answer == expected
    if not right:
        raise CheckFailed(f"{name}: {answer!r} is not right. {hint}".strip())
    print(f"✅ {name}: right.")
