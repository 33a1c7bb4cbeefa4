import pytest
import torch

from attnbook.checks import CheckFailed, check_answer, compare_with_reference, verdict
from attnbook.checks.ch01 import (
    check_accuracy_by_length,
    check_greedy_decode,
    check_last_real_state,
    check_teacher_forcing_pair,
    reference_teacher_forcing_pair,
)
from attnbook.seq2seq import greedy_decode, last_real_state
from attnbook.train import accuracy_by_length


def make_pair(generator):
    return (torch.randn(3, 4, generator=generator),)


def test_verdict_names_shape_nan_and_first_wrong_value():
    expected = torch.zeros(2, 3)
    assert verdict(expected.clone(), expected) is None
    assert verdict(torch.zeros(3, 2), expected) == "wrong shape: expected (2, 3), got (3, 2)"
    with_nan = expected.clone()
    with_nan[1, 2] = float("nan")
    assert "NaN (first at index (1, 2))" in verdict(with_nan, expected)
    wrong = expected.clone()
    wrong[0, 1] = 5.0
    assert verdict(wrong, expected) == ("1 of 6 values are wrong; the first is at index (0, 1): "
                                        "expected 0, got 5")
    assert "expected a tensor" in verdict([1, 2], expected)
    assert verdict((expected, 1), (expected, 2)) == "item 1: expected 2, got 1"


def test_compare_passes_a_right_answer(capsys):
    compare_with_reference(lambda x: x * 2, lambda x: x + x, make_pair, name="double")
    assert "✅ double: correct on 5 test inputs." in capsys.readouterr().out


@pytest.mark.parametrize("student, message", [
    (lambda x: x * 3, "values are wrong"),
    (lambda x: x.T, "wrong shape: expected (3, 4), got (4, 3)"),
    (lambda x: x / 0 * 0, "NaN"),
    (lambda x: x.numpy(), "expected a tensor of shape (3, 4)"),
    (lambda x: x.view(7), "your function raised RuntimeError"),
])
def test_compare_says_what_is_wrong(student, message):
    with pytest.raises(CheckFailed) as failure:
        compare_with_reference(student, lambda x: x * 2, make_pair, name="double")
    assert message in str(failure.value)
    assert "inputs (shape (3, 4))" in str(failure.value) or "your function raised" in str(failure.value)


def test_not_implemented_is_reported_plainly():
    def stub(x):
        raise NotImplementedError("Your code here")

    with pytest.raises(CheckFailed, match="double: not implemented yet"):
        compare_with_reference(stub, lambda x: x, make_pair, name="double")


def test_a_wrong_answer_only_on_some_inputs_is_caught():
    def sometimes_wrong(x):
        return x if x[0, 0] > 0 else -x
    with pytest.raises(CheckFailed, match="on test"):
        compare_with_reference(sometimes_wrong, lambda x: x, make_pair, name="id", trials=10)


def test_check_answer(capsys):
    check_answer(46, 46, "bits")
    assert "✅ bits: right." in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="45 is not right. think again"):
        check_answer(45, 46, "bits", hint="think again")
    with pytest.raises(CheckFailed, match="replace the ..."):
        check_answer(..., 46, "bits")
    check_answer(0.5 + 1e-9, 0.5, "float")


def test_chapter_1_checks_pass_the_reference_and_fail_wrong_answers():
    check_last_real_state(last_real_state)
    check_teacher_forcing_pair(reference_teacher_forcing_pair)
    check_greedy_decode(lambda *args: greedy_decode(*args)[0])
    check_accuracy_by_length(accuracy_by_length)
    with pytest.raises(CheckFailed, match="Exercise 1.1"):
        check_last_real_state(lambda outputs, lengths: outputs[:, -1])
    with pytest.raises(CheckFailed, match="Exercise 1.2"):
        check_teacher_forcing_pair(lambda targets, bos_id, eos_id, pad_id:
                                   reference_teacher_forcing_pair(targets, bos_id, pad_id, pad_id))
    with pytest.raises(CheckFailed, match="Exercise 1.3"):
        check_greedy_decode(lambda model, src, lengths, max_len: greedy_decode(
            model, src, lengths, max_len - 1)[0])
    with pytest.raises(CheckFailed, match="Exercise 1.3"):
        check_greedy_decode(stops_when_latest_tokens_are_all_eos)
    with pytest.raises(CheckFailed, match="Exercise 1.4"):
        check_accuracy_by_length(lambda examples, predictions, edges: accuracy_by_length(
            examples, predictions, [0, 30, 60, 90]))


def test_verdict_names_a_wrong_dtype_and_the_wrong_item():
    expected = torch.zeros(2, dtype=torch.float32)
    assert verdict(expected.double(), expected) == "wrong dtype: expected torch.float32, got torch.float64"
    output, weights = torch.zeros(2), torch.ones(2)
    problem = verdict((output, weights * 2), (output, weights), item_names=("output", "weights"))
    assert problem.startswith("the weights (item 1): 2 of 2 values are wrong")


def stops_when_latest_tokens_are_all_eos(model, src, src_lengths, max_len):
    """A wrong greedy decoder: it stops only when every row writes <eos> at the same step."""
    memory = model.encoder(src, src_lengths)
    state = model.decoder.init_state(memory)
    tokens = torch.full((src.shape[0],), model.bos_id)
    produced = []
    for _ in range(max_len):
        logits, state, _ = model.decoder.step(tokens, state, memory)
        tokens = logits.argmax(dim=-1)
        produced.append(tokens)
        if (tokens == model.eos_id).all():
            break
    return torch.stack(produced, dim=1)


def test_a_failed_check_renders_as_its_one_line_verdict():
    failure = CheckFailed("Exercise 9.9 (thing): wrong shape")
    assert failure._render_traceback_() == ["❌ Exercise 9.9 (thing): wrong shape"]


def test_an_answer_that_changes_its_input_in_place_is_named():
    def doubles_in_place(x):
        return x.mul_(2)

    with pytest.raises(CheckFailed, match="changed its `x` in place"):
        compare_with_reference(doubles_in_place, lambda x: x * 2, make_pair, name="double",
                               arg_names=("x",))


def test_python_numbers_are_compared_by_type_and_with_a_tolerance():
    assert verdict(1 - 1 / 3, 2 / 3) is None
    assert "expected an int" in verdict(torch.tensor(3), 3)
    assert "expected an int" in verdict(3.0, 3)
    assert "expected a bool" in verdict(1, True)
    with pytest.raises(CheckFailed, match="must be a whole number"):
        check_answer(torch.tensor(12), 12, name="count")
    check_answer(1 - 1 / 3, 2 / 3, name="fraction")


def test_a_crash_points_at_the_students_line_not_the_library():
    def student(x):
        return torch.cat([x, x[:, :1].T], dim=0)  # the student's bug: shapes do not fit

    with pytest.raises(CheckFailed) as failure:
        compare_with_reference(student, lambda x: x, make_pair, name="cat")
    assert "torch.cat([x, x[:, :1].T], dim=0)" in str(failure.value)


def test_gradients_are_compared_and_a_crash_in_backward_is_a_verdict():
    from attnbook.checks.core import compare_gradients

    x = torch.randn(3, 4)
    compare_gradients(lambda t: t.softmax(-1), lambda t: t.softmax(-1), (x,), (0,), "softmax", "case")
    with pytest.raises(CheckFailed, match="gradient with respect to argument 1 is wrong"):
        compare_gradients(lambda t: t.softmax(0), lambda t: t.softmax(-1), (x,), (0,), "softmax", "c")
    with pytest.raises(CheckFailed, match="does not depend on the inputs through autograd"):
        compare_gradients(lambda t: t.detach().softmax(-1), lambda t: t.softmax(-1), (x,), (0,),
                          "softmax", "c")

    def nan_gradient(t):
        return torch.sqrt(t - t.detach())  # value 0, gradient inf

    with pytest.raises(CheckFailed, match="contains NaN or inf"):
        compare_gradients(nan_gradient, lambda t: t * 0, (x,), (0,), "sqrt", "c")


def test_named_tuples_reach_the_reference_as_named_tuples():
    from typing import NamedTuple

    class State(NamedTuple):
        hidden: torch.Tensor

    def make_state(generator):
        return (State(torch.randn(2, 3, generator=generator)),)

    compare_with_reference(lambda s: s.hidden * 2, lambda s: s.hidden + s.hidden, make_state, name="state")


def test_an_endless_loop_ends_in_a_verdict(monkeypatch):
    from attnbook.checks import core

    monkeypatch.setattr(core, "STUDENT_TIME_LIMIT", 0.2)

    def endless(x):
        while True:
            x = x + 0

    with pytest.raises(CheckFailed, match="did not return within 0.2 s"):
        compare_with_reference(endless, lambda x: x, make_pair, name="loop")


def test_verdicts_show_booleans_and_tiny_differences_readably():
    mask = torch.tensor([True, False, True])
    assert verdict(torch.tensor([True, True, True]), mask) == (
        "1 of 3 values are wrong; the first is at index (1,): expected False, got True")
    expected = torch.tensor([0.1], dtype=torch.float64)
    got = expected + 1e-9
    assert "expected 0.10000000000000001, got 0.10000000100000001" in verdict(got, expected, 0, 0)
