"""Hidden tests (checks/core.hidden_trials): an answer fitted to the inputs a visible check
uses passes that check and fails its hidden part, which draws other inputs, and more."""

import contextlib
import io
from pathlib import Path

import nbformat
import pytest
import torch

from attnbook.checks.core import CheckFailed, compare_with_reference, hidden_trials

ROOT = Path(__file__).resolve().parent.parent

# (solution notebook, check, the solution's function): one or more per chapter.
FITTED = [
    ("01_bottleneck", "check_last_real_state", "last_real_state"),
    ("02_additive_attention", "check_additive_score", "additive_score"),
    ("03_multiplicative_attention", "check_general_score", "general_score"),
    ("03_multiplicative_attention", "check_local_window", "local_window"),
    ("04_queries_keys_values", "check_softmax_with_temperature", "softmax_with_temperature"),
    ("04_queries_keys_values", "check_padded_attention", "padded_attention"),
    ("04_queries_keys_values", "check_temperature_for", "temperature_for"),
    ("05_self_attention", "check_cross_attention", "cross_attention"),
    ("06_position", "check_rope", "rope"),
    ("06_position", "check_alibi_bias", "alibi"),
    ("07_multihead_attention", "check_batched_heads", "batched_heads"),
    ("09_language_models", "check_top_p", "top_p_filter"),
    ("09_language_models", "check_gqa_attention", "gqa_attention"),
    ("10_cost_of_attention", "check_chunked_attention", "chunked_attention"),
    ("11_flash_attention", "check_tile_step", "tile_step"),
    ("11_flash_attention", "check_merge_partials", "merge_partials"),
]


def solution_namespace(name: str, function: str) -> dict:
    """The solution notebook's imports (its first code cell after the install cell) and
    the cell defining `function`, run in a fresh namespace."""
    code = [c.source for c in nbformat.read(ROOT / "solutions" / f"{name}.ipynb", 4).cells
            if c.cell_type == "code" and "install-attnbook" not in c.metadata.get("tags", [])]
    namespace: dict = {}
    exec(code[0], namespace)
    exec(next(s for s in code if f"def {function}(" in s), namespace)
    return namespace


def _key(args: tuple) -> tuple:
    return tuple((tuple(a.shape), str(a.dtype), a.detach().contiguous().numpy().tobytes())
                 if torch.is_tensor(a) else repr(a) for a in args)


def fitted_to(right):
    """(record, replay): `record` is `right` and remembers every result; `replay` answers
    only the inputs it has seen (a lookup table) and returns None for any other."""
    memory = {}

    def record(*args):
        memory[_key(args)] = result = right(*args)
        return result

    def replay(*args):
        return memory.get(_key(args))
    return record, replay


@pytest.mark.parametrize("name, check, function", FITTED, ids=[f[2] for f in FITTED])
def test_an_answer_fitted_to_the_visible_check_fails_the_hidden_part(name, check, function):
    namespace = solution_namespace(name, function)
    record, replay = fitted_to(namespace[function])
    with contextlib.redirect_stdout(io.StringIO()):
        namespace[check](record)
        namespace[check](replay)  # the lookup table passes the visible check
        with hidden_trials(quiet=False):
            namespace[check](namespace[function])  # the right answer passes the hidden part
    with pytest.raises(CheckFailed, match="^hidden tests"):
        with hidden_trials():
            namespace[check](replay)


def test_hidden_trials_shift_every_seed_and_multiply_trials_then_restore_them():
    generator_class, manual_seed = torch.Generator, torch.manual_seed
    visible = torch.randn(3, generator=torch.Generator().manual_seed(5))
    with hidden_trials(seed=1, factor=3):
        hidden = torch.randn(3, generator=torch.Generator().manual_seed(5))
        torch.manual_seed(5)
        global_hidden = torch.randn(3)
    torch.manual_seed(5)
    assert not torch.equal(visible, hidden) and not torch.equal(torch.randn(3), global_hidden)
    assert torch.Generator is generator_class and torch.manual_seed is manual_seed

    seen = []
    make = lambda g: (seen.append(1), torch.randn(2, generator=g))[1:]  # noqa: E731
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compare_with_reference(torch.exp, torch.exp, make, "f", trials=4)
        with hidden_trials(factor=3):
            compare_with_reference(torch.exp, torch.exp, make, "f", trials=4)
    assert len(seen) == 4 + 12 and out.getvalue().count("✅") == 1  # the hidden part is quiet
    with pytest.raises(CheckFailed, match="^hidden tests"), hidden_trials():
        compare_with_reference(torch.sin, torch.exp, make, "f", trials=4)
    assert torch.Generator is generator_class and torch.manual_seed is manual_seed
    with pytest.raises(ValueError):
        with hidden_trials(seed=0):
            pass
