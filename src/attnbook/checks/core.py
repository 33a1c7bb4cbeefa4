"""The machinery behind every exercise check.

A check calls the student's function on fresh random inputs, compares the
result with the package's reference, and says in one sentence what is wrong:
an exception, a wrong type, a wrong shape, NaN, or the first wrong value and
where it is. A wrong answer raises `CheckFailed`, so a notebook cell fails
visibly; a right one prints a single line.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import numbers
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import torch


class CheckFailed(AssertionError):
    """The student's answer is not right yet; the message says why.

    In Jupyter (and so on the website, which shows the stored outputs) it renders
    as its one-line verdict, not as a traceback through the check's code.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"❌ {self}"]


# Frames in these folders are the library's or the check's, never the student's.
_LIBRARY_FOLDERS = (str(Path(torch.__file__).resolve().parent), str(Path(__file__).resolve().parent.parent))


def _describe(value) -> str:
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return _a_or_an(type(value).__name__)


def _describe_input(value) -> str:
    if value is None:
        return "None"
    if torch.is_tensor(value):
        return f"shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{_a_or_an(type(value).__name__)} of {len(value)} items"
    if isinstance(value, (int, float, str, bool)):
        return repr(value)
    return _a_or_an(type(value).__name__)


def _a_or_an(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _first_mismatch(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=False)
    wrong = (~close).nonzero()
    index = tuple(wrong[0].tolist())
    want, have = f"{expected[index].item():.6g}", f"{got[index].item():.6g}"
    if want == have:  # they differ beyond six digits: show all of them
        want, have = f"{expected[index].item():.17g}", f"{got[index].item():.17g}"
    return (f"{len(wrong)} of {expected.numel()} values are wrong; the first is at index "
            f"{index}: expected {want}, got {have}")


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
        if expected.dtype == torch.bool and not torch.equal(got.cpu(), expected.cpu()):
            wrong = (got.cpu() != expected.cpu()).nonzero()
            index = tuple(wrong[0].tolist())
            return (f"{len(wrong)} of {expected.numel()} values are wrong; the first is at index "
                    f"{index}: expected {expected[index].item()}, got {got[index].item()}")
        got_cmp, expected_cmp = got.detach().double().cpu(), expected.detach().double().cpu()
        if not torch.allclose(got_cmp, expected_cmp, atol=atol, rtol=rtol, equal_nan=True):
            return _first_mismatch(got_cmp, expected_cmp, atol, rtol)
        return None
    return _verdict_scalar(got, expected, atol, rtol)


def _verdict_scalar(got, expected, atol: float, rtol: float) -> str | None:
    """Python numbers by type and value: an int must be an int (not a 0-d tensor), a
    float is compared with a tolerance (1 - 1/3 equals 2/3), anything else with ==."""
    if isinstance(expected, bool):
        if not isinstance(got, bool):
            return f"expected a bool ({expected!r}), got {_describe(got)}"
    elif isinstance(expected, numbers.Integral):
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            return f"expected an int ({expected!r}), got {_describe(got)} ({got!r})"
    elif isinstance(expected, numbers.Real):
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            return f"expected a number ({expected!r}), got {_describe(got)}"
        if abs(got - expected) > atol + rtol * abs(expected):
            return f"expected {expected!r}, got {got!r}"
        return None
    if got != expected:
        return f"expected {expected!r}, got {got!r}"
    return None


def _student_frame(error: BaseException) -> traceback.FrameSummary:
    """The deepest frame of the traceback that is the student's code (not PyTorch's, not ours)."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARY_FOLDERS):
            return frame
    return frames[-1]


def _short_exception(error: BaseException) -> str:
    frame = _student_frame(error)
    message = " ".join(str(error).split())
    return (f"your function raised {type(error).__name__}: {message} "
            f"(line {frame.lineno}: {(frame.line or '').strip()!r})")


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after `seconds` (an endless loop in a student's function
    must end in a verdict, not hang the notebook). Only where SIGALRM exists and we
    are in the main thread; elsewhere the block simply runs."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def interrupt(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


STUDENT_TIME_LIMIT = 20.0  # seconds for one call; every reference answer takes well under one


def call_student(student: Callable, inputs: tuple, name: str, case: str = ""):
    """Call `student(*inputs)`; a stub, any crash or a call that does not return within
    STUDENT_TIME_LIMIT seconds becomes a one-line CheckFailed.

    `case` says which input it was ("on inputs (shape (2, 3))"), for the verdict.
    """
    where = f"{case}, " if case else ""
    try:
        with _time_limit(STUDENT_TIME_LIMIT):
            return student(*inputs)
    except _TooSlow:
        raise CheckFailed(f"{name}: {where}your function did not return within "
                          f"{STUDENT_TIME_LIMIT:g} s (an endless loop?)") from None
    except NotImplementedError:
        raise CheckFailed(f"{name}: not implemented yet (replace the "
                          "`raise NotImplementedError` with your code)") from None
    except CheckFailed:
        raise
    except Exception as error:  # any crash becomes a verdict, not a traceback
        raise CheckFailed(f"{name}: {where}{_short_exception(error)}") from None


def _snapshot(value):
    """A copy of the caller's arguments, to see afterwards whether the student changed them."""
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if isinstance(value, tuple):
        copies = tuple(_snapshot(v) for v in value)
        return type(value)(*copies) if hasattr(value, "_fields") else copies  # keep NamedTuples
    return value


def _changed(before, after) -> bool:
    if torch.is_tensor(before):
        return before.shape != after.shape or not torch.equal(
            torch.nan_to_num(before.detach()), torch.nan_to_num(after.detach()))
    if isinstance(before, (list, tuple)):
        return len(before) != len(after) or any(_changed(b, a) for b, a in zip(before, after))
    return False


def unchanged_inputs(before: tuple, inputs: tuple, name: str, case: str,
                     arg_names: tuple[str, ...] | None = None) -> None:
    """Raise CheckFailed if the student's function modified any of its arguments in place."""
    for i, (b, a) in enumerate(zip(before, inputs)):
        if _changed(b, a):
            argument = f"`{arg_names[i]}`" if arg_names else f"argument {i + 1}"
            raise CheckFailed(f"{name}: {case}, your function changed its {argument} in place; "
                              "the caller's tensors must be left as they were (work on a copy)")


def compare_with_reference(student: Callable, reference: Callable,
                           make_inputs: Callable[[torch.Generator], tuple], name: str,
                           trials: int = 5, seed: int = 1234,
                           atol: float = 1e-5, rtol: float = 1e-4,
                           item_names: tuple[str, ...] | None = None,
                           arg_names: tuple[str, ...] | None = None) -> None:
    """Run `student` and `reference` on `trials` fresh inputs from `make_inputs(generator)`.

    Prints one line if every result matches; otherwise raises CheckFailed saying
    which input (its shapes) and what went wrong: an exception, an argument changed
    in place, a wrong type, shape, dtype, NaN, or the first wrong value. Floats are
    compared with `atol` + `rtol` * |expected|. For a function returning a tuple,
    `item_names` (such as ("output", "weights")) says which item is wrong;
    `arg_names` names the arguments in the verdict.
    """
    trials *= hidden_factor()  # more trials, from other seeds, inside hidden_trials
    generator = torch._C.Generator().manual_seed(hidden_seed(seed))  # shifted once
    for trial in range(trials):
        inputs = make_inputs(generator)
        shapes = ", ".join(_describe_input(x) for x in inputs)
        expected = reference(*_snapshot(inputs))
        before = _snapshot(inputs)
        got = call_student(student, inputs, name, case=f"on inputs ({shapes})")
        unchanged_inputs(before, inputs, name, f"on inputs ({shapes})", arg_names)
        problem = verdict(got, expected, atol, rtol, item_names)
        if problem:
            raise CheckFailed(f"{name}: on test {trial + 1} of {trials}, with inputs "
                              f"({shapes}): {problem}")
    print(f"✅ {name}: correct on {trials} test inputs.")


def check_answer(answer, expected, name: str, hint: str = "") -> None:
    """A question with one right answer (a number, a word, an index).

    A float is right within a relative 1e-6; an int must be a Python int (or NumPy
    integer), not a float or a 0-d tensor that happens to compare equal.
    """
    if answer is ...:
        raise CheckFailed(f"{name}: replace the ... with your answer")
    if isinstance(expected, float):
        right = (isinstance(answer, numbers.Real) and not isinstance(answer, bool)
                 and abs(answer - expected) <= 1e-6 * max(1, abs(expected)))
    elif isinstance(expected, numbers.Integral) and not isinstance(expected, bool):
        if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
            raise CheckFailed(f"{name}: the answer must be a whole number (an int), got "
                              f"{_describe(answer)} ({answer!r})")
        right = answer == expected
    else:
        right = answer == expected
    if not right:
        raise CheckFailed(f"{name}: {answer!r} is not right. {hint}".strip())
    print(f"✅ {name}: right.")


def compare_gradients(student: Callable, reference: Callable, inputs: tuple, wrt: tuple[int, ...],
                      name: str, case: str, atol: float = 1e-5, rtol: float = 1e-4,
                      seed: int = 0, arg_names: tuple[str, ...] | None = None) -> None:
    """Compare the gradients of the student's function with the reference's.

    Both are differentiated through a fixed random weighting of their first output,
    with respect to the arguments at positions `wrt`. NaN or inf in the student's
    gradient, a result that autograd cannot differentiate, wrong gradient values, or
    a crash anywhere on the way each give a one-line verdict naming `case`.
    """
    def gradients(function, crash_is_student: bool):
        leaves = [x.detach().clone().requires_grad_(i in wrt) if torch.is_tensor(x) else x
                  for i, x in enumerate(inputs)]
        if crash_is_student:
            out = call_student(function, tuple(leaves), name, case)
        else:
            out = function(*leaves)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not torch.is_tensor(out) or not out.requires_grad:
            raise CheckFailed(f"{name}: {case}, the result does not depend on the inputs through "
                              "autograd (was .detach(), NumPy or .item() used?)")
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                              dtype=out.dtype)
        try:
            (out * weights).sum().backward()
        except Exception as error:
            if not crash_is_student:
                raise
            raise CheckFailed(f"{name}: {case}, the backward pass through your function raised "
                              f"{type(error).__name__}: {' '.join(str(error).split())}") from None
        return [leaves[i].grad if leaves[i].grad is not None else torch.zeros_like(leaves[i])
                for i in wrt]

    expected = gradients(reference, crash_is_student=False)
    got = gradients(student, crash_is_student=True)
    for i, g, e in zip(wrt, got, expected):
        argument = f"`{arg_names[i]}`" if arg_names else f"argument {i + 1}"
        if not torch.isfinite(g).all():
            first = tuple((~torch.isfinite(g)).nonzero()[0].tolist())
            raise CheckFailed(f"{name}: {case}, the values are right but the gradient with respect "
                              f"to {argument} contains NaN or inf (first at index {first})")
        problem = verdict(g, e, atol, rtol)
        if problem:
            raise CheckFailed(f"{name}: {case}, the gradient with respect to {argument} is "
                              f"wrong: {problem}")


def random_size(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number drawn uniformly from [low, high], both included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def in_turn(*makers: Callable[[torch.Generator], tuple]) -> Callable[[torch.Generator], tuple]:
    """`make_inputs` for compare_with_reference that draws trial i from makers[i % len(makers)],
    so that every case (shape, mask form, edge case) appears in a fixed number of trials."""
    count = [0]

    def make_inputs(generator: torch.Generator) -> tuple:
        maker = makers[count[0] % len(makers)]
        count[0] += 1
        return maker(generator)
    return make_inputs


def require_dtype(student_fn: Callable, dtype: torch.dtype, name: str, why: str) -> Callable:
    """Wrap `student_fn` so that a tensor result of another dtype is a verdict saying `why`."""
    def run(*args):
        result = student_fn(*args)
        if torch.is_tensor(result) and result.dtype != dtype:
            raise CheckFailed(f"{name}: the result must have dtype {dtype}, got {result.dtype}; {why}")
        return result
    return run


def compare_cases(student: Callable, reference: Callable, cases: list[tuple[str, tuple]],
                  name: str, atol: float = 1e-5, rtol: float = 1e-4,
                  arg_names: tuple[str, ...] | None = None,
                  item_names: tuple[str, ...] | None = None, announce: bool = True) -> None:
    """compare_with_reference on named cases: `cases` holds (description, inputs) pairs,
    and a verdict starts with the case's description ("with scores of shape (3, 5) and
    an additive mask ...") rather than only the shapes. `item_names` names the parts of
    a tuple result ("the output (item 0)"); with `announce=False` a right answer prints
    nothing, for checks that go on testing after the cases."""
    for description, inputs in cases:
        expected = reference(*list(_snapshot(inputs)))
        before = list(_snapshot(inputs))
        got = call_student(student, inputs, name, case=description)
        unchanged_inputs(tuple(before), inputs, name, description, arg_names)
        problem = verdict(got, expected, atol, rtol, item_names)
        if problem:
            raise CheckFailed(f"{name}: {description}: {problem}")
    if announce:
        print(f"✅ {name}: correct in all {len(cases)} cases.")


# --- Numbers the student writes down ---------------------------------------------------------

def as_number(value, whole: bool):
    """A Python number from an int, a float, a NumPy scalar or a 0-d tensor; None if it
    is none of these (or not a whole number where one is asked for)."""
    if torch.is_tensor(value):
        if value.dim() != 0:
            return None
        if whole and (value.is_floating_point() or value.is_complex()):
            return None
        value = value.item()
    elif hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            value = value.item()  # a NumPy scalar
        except (TypeError, ValueError):
            return None
    if isinstance(value, bool):
        return None
    if whole:
        return int(value) if isinstance(value, numbers.Integral) else None
    return float(value) if isinstance(value, numbers.Real) else None


def recorded(name: str, predictions: dict[str, object], whole: bool = True) -> dict:
    """The first step of a predict-then-measure exercise: every prediction is written
    down, as a number (a whole one if `whole`). Says nothing about whether it is right."""
    values = {}
    for label, value in predictions.items():
        if value is ...:
            what = "measurement" if label.startswith("measured") else "prediction"
            raise CheckFailed(f"{name}: replace the ... in `{label}` with your {what}")
        number = as_number(value, whole)
        if number is None:
            kind = "a whole number (an int)" if whole else "a number"
            raise CheckFailed(f"{name}: `{label}` must be {kind}, got {_short(value)}")
        values[label] = number
    return values


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compare_prediction(name: str, truths: dict[str, tuple[str, str, object]],
                       whole: bool = True, rel_tol: float = 0.0) -> None:
    """Compare predictions and measurements with the truth: `truths` is
    {description: (predicted value, measured value, true value)}. Every wrong number is
    named, with how far off it is, in one line (`rel_tol` of the truth is allowed)."""
    problems = []
    for description, (predicted, measured, truth) in truths.items():
        for adjective, value in (("predicted", predicted), ("measured", measured)):
            off = value - truth
            if abs(off) > rel_tol * abs(truth):
                how = f"off by {off:+d}" if whole else f"off by {off:+.4g}"
                problems.append(f"the {adjective} {description} is {value:g}, {how}")
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems))


# --- Functions an exercise asks the student not to call -------------------------------------

def _refusing_code(message: str):
    """The code of a function that takes any arguments and raises CheckFailed(message). It has
    no free variables, so it can stand in for the code of any function without a closure."""
    namespace: dict = {}
    exec("def refuse(*args, **kwargs):\n"
         "    raise __import__('attnbook.checks.core', fromlist=['CheckFailed'])"
         f".CheckFailed({message!r})\n", namespace)
    return namespace["refuse"].__code__


def without_calls(student_fn: Callable, name: str, banned: list[tuple[Callable, str]],
                  advice: str) -> Callable:
    """Wrap `student_fn` so that calling any of the `banned` (function, label) pairs is a
    one-line verdict, "your function calls <label>, which the exercise asks you not to use;
    <advice>", however the function is reached: by its name in the notebook, as the
    module's attribute, under another name (`rope = apply_rope`), or through another
    function of the package. For the time of the call each banned function's code is
    swapped for one that raises (decorated functions are unwrapped first)."""
    targets = []
    for function, label in banned:
        function = inspect.unwrap(function)
        if function.__closure__:
            raise TypeError(f"without_calls cannot ban {label}: it has a closure")
        message = (f"{name}: your function calls {label}, which the exercise asks you not "
                   f"to use; {advice}")
        targets.append((function, _refusing_code(message)))

    def run(*args):
        saved = [(f, f.__code__, f.__defaults__, f.__kwdefaults__) for f, _ in targets]
        try:
            for function, code in targets:
                function.__defaults__, function.__kwdefaults__ = None, None
                function.__code__ = code
            return student_fn(*args)
        finally:
            for function, code, defaults, kwdefaults in saved:
                function.__code__ = code
                function.__defaults__, function.__kwdefaults__ = defaults, kwdefaults
    return run


# --- Hidden tests (for the autograder) -------------------------------------------------------

_HIDDEN = {"offset": 0, "factor": 1}  # the visible checks: offset 0, factor 1
_TORCH_MANUAL_SEED = torch.manual_seed
HIDDEN_SEED_STRIDE = 100_003  # a prime: hidden seed k shifts every seed by k * this


def hidden_seed(seed: int) -> int:
    """`seed` as the checks use it now: itself, or shifted inside `hidden_trials`."""
    return seed + _HIDDEN["offset"]


def hidden_factor() -> int:
    """How many times the usual number of random trials a check runs now (1 outside
    `hidden_trials`)."""
    return _HIDDEN["factor"]


class _HiddenGenerator(torch.Generator):
    """torch.Generator whose manual_seed shifts the seed (inside `hidden_trials` only)."""

    def manual_seed(self, seed):
        return super().manual_seed(hidden_seed(int(seed)))


@contextlib.contextmanager
def hidden_trials(seed: int = 1, factor: int = 2, quiet: bool = True):
    """Re-run checks as an autograder's hidden tests: other random inputs, and more of them.

    Inside the block every seed a check uses is shifted by `seed` (the seed of
    compare_with_reference, every `torch.Generator().manual_seed(n)` and
    `torch.manual_seed(n)` a check calls to draw its cases or build its models), and
    compare_with_reference runs `factor` times its trials, so an answer fitted to the
    visible check's fixed inputs fails. Reference and student see the same shifted
    inputs. With `quiet` a passing check prints nothing (the visible check already
    said it passes); a failing one raises CheckFailed starting with "hidden tests".
    """
    if seed == 0:
        raise ValueError("hidden_trials needs a seed other than 0 (0 is the visible check)")
    saved = dict(_HIDDEN)
    saved_generator, saved_manual_seed = torch.Generator, torch.manual_seed

    def shifted_manual_seed(value):
        return _TORCH_MANUAL_SEED(hidden_seed(int(value)))  # shifted once, even when nested

    _HIDDEN.update(offset=saved["offset"] + seed * HIDDEN_SEED_STRIDE,
                   factor=saved["factor"] * max(1, int(factor)))
    torch.Generator, torch.manual_seed = _HiddenGenerator, shifted_manual_seed
    printed = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    try:
        with printed:
            yield
    except CheckFailed as failure:
        message = str(failure)
        if not message.startswith("hidden tests"):
            message = f"hidden tests (other random inputs): {message}"
        raise CheckFailed(message) from None
    finally:
        torch.Generator, torch.manual_seed = saved_generator, saved_manual_seed
        _HIDDEN.clear()
        _HIDDEN.update(saved)
