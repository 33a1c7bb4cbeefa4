"""Checks for the exercises of chapter 12, "Long sequences": windows and linear attention
(12.1-12.3), ring attention (12.4-12.6)."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from attnbook.checks.core import (
    CheckFailed,
    as_number,
    call_student,
    compare_cases,
    compare_with_reference,
    random_size,
    recorded,
    unchanged_inputs,
    verdict,
    without_calls,
)
from attnbook.flash.reference import flash_forward
from attnbook.linear_attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
    linear_attention,
)
from attnbook.ring import (
    LAYOUTS,
    merge_partials,
    ring_block_plan,
    split_sequence,
    work_per_rank,
    work_ratio,
)
from attnbook.sparse import mask_cost, sliding_window_mask

__all__ = ["WORK_PROBLEM", "check_block_plan", "check_causal_linear_recurrent",
           "check_chunked_linear", "check_ring_simulation", "check_window_pairs",
           "check_work_per_rank", "check_work_predicted"]

# the package's own causal linear attention, which exercises 12.2 and 12.3 ask for
LINEAR_ATTENTION_FUNCTIONS = [
    (causal_linear_attention_recurrent, "attnbook.linear_attention."
                                        "causal_linear_attention_recurrent"),
    (causal_linear_attention_chunked, "attnbook.linear_attention."
                                      "causal_linear_attention_chunked"),
    (causal_linear_attention_parallel, "attnbook.linear_attention."
                                       "causal_linear_attention_parallel"),
    (linear_attention, "attnbook.linear_attention.linear_attention"),
]

# ---------------------------------------------------------------- Exercise 12.1: window pairs

WINDOW_CASES = [(1, 1), (1, 5), (2, 1), (5, 2), (10, 3), (10, 10), (10, 11), (7, 100),
                (64, 8), (100, 1), (101, 37), (4096, 1024), (32768, 4096), (3, 2)]


def reference_window_pairs(n: int, window: int) -> int:
    """Scored (query, key) pairs of causal sliding-window attention, counted on the mask."""
    if n <= 512:
        return mask_cost(sliding_window_mask(n, window=window))["pairs"]
    w = min(window, n)  # the closed form, for sizes whose mask would be large
    return n * w - w * (w - 1) // 2


def check_window_pairs(student_fn: Callable) -> None:
    """Exercise 12.1: window_pairs(n, window) -> the number of (query, key) pairs that
    causal sliding-window attention scores over n tokens (query i sees the keys
    i - window < j <= i). A Python int, exact, on fixed (n, window) including
    window = 1, window = n, window > n, n = 1 and lengths up to 32768, then on 40 random
    ones."""
    name = "Exercise 12.1 (window_pairs)"
    g = torch.Generator().manual_seed(1201)
    cases = list(WINDOW_CASES)
    for _ in range(40):
        n = random_size(g, 1, 300)
        cases.append((n, random_size(g, 1, n + 20)))
    for n, window in cases:
        expected = reference_window_pairs(n, window)
        got = call_student(student_fn, (n, window), name, f"with n = {n}, window = {window}")
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            if isinstance(got, float) and got == expected:
                raise CheckFailed(f"{name}: with n = {n}, window = {window}: the value is right "
                                  f"but a float ({got!r}); a count is a whole number: return an "
                                  "int (// rather than /)")
            raise CheckFailed(f"{name}: with n = {n}, window = {window}: expected an int, got "
                              f"{type(got).__name__} ({got!r})")
        if got != expected:
            hint = ""
            if window > n:
                hint = " (a window longer than the sequence sees the whole causal past)"
            elif window == 1:
                hint = " (window 1: each token sees only itself)"
            raise CheckFailed(f"{name}: with n = {n}, window = {window}: expected {expected}, "
                              f"got {got}{hint}")
    print(f"✅ {name}: exact on {len(cases)} (n, window) pairs.")


# ---------------------------------------------------------------- Exercise 12.2: the recurrence

def _recurrent_cases() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(1202)

    def randn(*shape, size=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * size

    return [
        ("with one head, 3-D inputs (1, 7, 4), d = dv", (randn(1, 7, 4), randn(1, 7, 4),
                                                        randn(1, 7, 4))),
        ("with 4-D inputs (2, 3, 9, 4) and values of width 6 (dv != d)",
         (randn(2, 3, 9, 4), randn(2, 3, 9, 4), randn(2, 3, 9, 6))),
        ("with a single token (N = 1)", (randn(1, 2, 1, 5), randn(1, 2, 1, 5), randn(1, 2, 1, 3))),
        ("with large queries and keys (entries around 30: elu + 1 grows linearly)",
         (randn(1, 2, 11, 4, size=30), randn(1, 2, 11, 4, size=30), randn(1, 2, 11, 4))),
        ("with queries different from keys of one sign (all negative keys)",
         (randn(2, 1, 13, 3), -randn(2, 1, 13, 3).abs(), randn(2, 1, 13, 2))),
    ]


def _random_qkv(g: torch.Generator) -> tuple:
    b, h, n, d, dv = (random_size(g, 1, 2), random_size(g, 1, 4), random_size(g, 1, 40),
                      random_size(g, 1, 8), random_size(g, 1, 8))
    if n % 2 == 0:
        n += 1  # odd lengths
    return tuple(torch.randn(b, h, n, width, generator=g, dtype=torch.float64)
                 for width in (d, d, dv))


def check_causal_linear_recurrent(student_fn: Callable) -> None:
    """Exercise 12.2: causal_linear_recurrent(q, k, v) -> (..., N, dv), causal linear
    attention with the elu + 1 feature map, token by token. Compared with the package's
    parallel form (`causal_linear_attention_parallel`) in float64 within 1e-10 +
    1e-8 * |expected|: fixed cases (3-D and 4-D, dv != d, N = 1, large entries, keys of
    one sign), a float32 case (within 1e-5 + 1e-4 * |expected|; the output must be
    float32), then 8 random ones with odd N and several heads. The caller's tensors
    must not change; the package's causal linear attention functions are refused."""
    name = "Exercise 12.2 (causal_linear_recurrent)"
    arg_names = ("q", "k", "v")
    student_fn = without_calls(student_fn, name, LINEAR_ATTENTION_FUNCTIONS,
                               "write the loop over tokens yourself")
    compare_cases(student_fn, causal_linear_attention_parallel, _recurrent_cases(), name,
                  atol=1e-10, rtol=1e-8, arg_names=arg_names, announce=False)
    g = torch.Generator().manual_seed(1207)
    single = tuple(torch.randn(1, 2, 9, 4, generator=g) for _ in range(3))
    compare_cases(student_fn, causal_linear_attention_parallel,
                  [("in float32, (1, 2, 9, 4) (the state must be float32 too)", single)],
                  name, atol=1e-5, rtol=1e-4, arg_names=arg_names, announce=False)
    compare_with_reference(student_fn, causal_linear_attention_parallel, _random_qkv, name,
                           trials=8, seed=1203, atol=1e-10, rtol=1e-8, arg_names=arg_names)


# ---------------------------------------------------------------- Exercise 12.3: the chunk's own keys

def _chunked_cases() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(1204)

    def qkv(*shape, dv=None):
        q, k = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2))
        v = torch.randn(*shape[:-1], dv or shape[-1], generator=g, dtype=torch.float64)
        return q, k, v

    return [
        ("with N = 12 in chunks of 4 (3 whole chunks), 4-D (1, 2, 12, 4)",
         (*qkv(1, 2, 12, 4), 4)),
        ("with chunks of 1 (every token its own chunk)", (*qkv(1, 2, 7, 4), 1)),
        ("with N = 13 in chunks of 5 (the last chunk is short), dv = 6",
         (*qkv(2, 3, 13, 4, dv=6), 5)),
        ("with one chunk longer than the sequence (N = 6, chunk 10)", (*qkv(1, 1, 6, 3), 10)),
        ("with 3-D inputs (2, 17, 5) in chunks of 8", (*qkv(2, 17, 5), 8)),
    ]


def check_chunked_linear(student_fn: Callable) -> None:
    """Exercise 12.3: chunked_linear(q, k, v, chunk_size) -> (..., N, dv), causal linear
    attention (elu + 1) a chunk at a time. Compared with the package's chunked form in
    float64 within 1e-10 + 1e-8 * |expected| on fixed cases (whole chunks, chunk 1, a short
    last chunk, a chunk longer than N, 3-D and 4-D, dv != d); then output i must not
    change when keys and values after i change; then 6 random cases. The caller's tensors
    must not change; the package's causal linear attention functions are refused."""
    name = "Exercise 12.3 (chunked_linear)"
    arg_names = ("q", "k", "v", "chunk_size")
    student_fn = without_calls(student_fn, name, LINEAR_ATTENTION_FUNCTIONS,
                               "fix the given chunked loop instead")
    compare_cases(student_fn, causal_linear_attention_chunked, _chunked_cases(), name,
                  atol=1e-10, rtol=1e-8, arg_names=arg_names, announce=False)
    # causality: the future must not leak into the past
    g = torch.Generator().manual_seed(1205)
    q, k, v = (torch.randn(1, 2, 12, 4, generator=g, dtype=torch.float64) for _ in range(3))
    before = call_student(student_fn, (q, k, v, 4), name, "on the causality test")
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5:] += 2.0
    v2[:, :, 5:] -= 3.0
    after = call_student(student_fn, (q, k2, v2, 4), name, "on the causality test")
    problem = verdict(after[:, :, :5], before[:, :, :5], 1e-12, 0.0) if torch.is_tensor(after) \
        and torch.is_tensor(before) and after.shape == before.shape else None
    if problem:
        raise CheckFailed(f"{name}: changing the keys and values from position 5 on (chunks of "
                          f"4) changed the outputs of positions 0-4: the future leaks into the "
                          f"past ({problem})")

    def random_case(gen):
        q, k, v = _random_qkv(gen)
        return q, k, v, random_size(gen, 1, q.shape[-2] + 3)
    compare_with_reference(student_fn, causal_linear_attention_chunked, random_case, name,
                           trials=6, seed=1206, atol=1e-10, rtol=1e-8, arg_names=arg_names)


INF = float("-inf")


# ---------------------------------------------------------------- Exercise 12.4: the block plan

def _plan_entries(plan, name: str, where: str, n_local: int) -> list[tuple[int, int, int, int,
                                                                           bool]]:
    """The student's plan as a list of checked (q_start, q_stop, k_start, k_stop, masked)."""
    if not isinstance(plan, (list, tuple)):
        raise CheckFailed(f"{name}: {where}: return a list of (q_start, q_stop, k_start, "
                          f"k_stop, masked) tuples, got {type(plan).__name__}")
    entries = []
    for entry in plan:
        if not isinstance(entry, (list, tuple)) or len(entry) != 5:
            raise CheckFailed(f"{name}: {where}: each block must be a tuple (q_start, q_stop, "
                              f"k_start, k_stop, masked), got {entry!r}")
        *bounds, masked = entry
        if any(isinstance(b, bool) or not isinstance(b, numbers.Integral) for b in bounds) \
                or not isinstance(masked, (bool, torch.Tensor)):
            raise CheckFailed(f"{name}: {where}: the bounds must be ints and masked True or "
                              f"False, got {entry!r}")
        q0, q1, k0, k1 = (int(b) for b in bounds)
        if not (0 <= q0 < q1 <= n_local and 0 <= k0 < k1 <= n_local):
            raise CheckFailed(f"{name}: {where}: the block {entry!r} is empty or leaves the "
                              f"local range 0..{n_local} (stops are exclusive)")
        masked = bool(masked)
        if masked and k1 - k0 < q1 - q0:
            raise CheckFailed(f"{name}: {where}: the masked block {entry!r} has fewer keys than "
                              "queries, which flash_forward refuses (the mask is aligned at "
                              "the bottom right)")
        entries.append((q0, q1, k0, k1, masked))
    return entries


def _check_one_ring(student_fn, name: str, world_size: int, n_local: int, layout: str,
                    causal: bool) -> None:
    n = world_size * n_local
    positions = [split_sequence(torch.arange(n).view(1, 1, n), world_size, r, layout).flatten()
                 for r in range(world_size)]
    count = torch.zeros(n, n, dtype=torch.int64)
    first: dict[tuple[int, int], tuple[int, int]] = {}
    kind = "causal" if causal else "not causal"
    config = f"W = {world_size}, {layout}, {kind}, n_local = {n_local}"
    for rank in range(world_size):
        for step in range(world_size):
            src = (rank - step) % world_size
            where = f"{config}, rank {rank} at step {step}"
            plan = call_student(student_fn, (rank, step, world_size, n_local, layout, causal),
                                name, case=f"with {where}")
            for q0, q1, k0, k1, masked in _plan_entries(plan, name, where, n_local):
                visible = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool)
                if masked:
                    offset = (k1 - k0) - (q1 - q0)
                    visible = visible.tril(diagonal=offset)
                rows, cols = positions[rank][q0:q1], positions[src][k0:k1]
                for i, j in visible.nonzero().tolist():
                    query, key = int(rows[i]), int(cols[j])
                    if causal and key > query:
                        raise CheckFailed(
                            f"{name}: {where} (holding the keys of rank {src}): the block "
                            f"{(q0, q1, k0, k1, masked)} scores query {query} against key "
                            f"{key}, which lies in its future (causal hides it)")
                    count[query, key] += 1
                    first.setdefault((query, key), (rank, step))
    allowed = torch.ones(n, n, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    missing = (allowed & (count == 0)).nonzero()
    if len(missing):
        query, key = missing[0].tolist()
        rank = next(r for r in range(world_size) if query in positions[r].tolist())
        owner = next(r for r in range(world_size) if key in positions[r].tolist())
        raise CheckFailed(f"{name}: {config}: query {query} never sees key {key} "
                          f"({len(missing)} visible pairs are missing); rank {rank} holds "
                          f"that query and should score it at step "
                          f"{(rank - owner) % world_size}, when it holds rank {owner}'s keys")
    twice = (count > 1).nonzero()
    if len(twice):
        query, key = twice[0].tolist()
        rank, step = first[(query, key)]
        raise CheckFailed(f"{name}: {config}: query {query} against key {key} is scored "
                          f"{int(count[query, key])} times (first by rank {rank} at step "
                          f"{step}); the merge would count it more than once")


def check_block_plan(student_fn) -> None:
    """Exercise 12.4: block_plan(rank, step, world_size, n_local, layout, causal) -> the
    list of (q_start, q_stop, k_start, k_stop, masked) blocks rank r computes at ring step
    s, in local positions, when it holds the keys of rank (r - s) mod W.

    For W = 1 to 4, both layouts ("contiguous", "zigzag"), causal or not, n_local 4 and 6,
    every rank and step is asked; the blocks are laid onto the whole score matrix (with
    the bottom-right causal mask where a block says masked) and must score every visible
    query-key pair exactly once and no hidden one. Any split into blocks that does so is
    right (exact whole numbers, no tolerance). The package's ring_block_plan is refused.
    """
    name = "Exercise 12.4 (block_plan)"
    student_fn = without_calls(student_fn, name,
                               [(ring_block_plan, "attnbook.ring.ring_block_plan")],
                               "work the blocks out yourself")
    configs = [(w, n_local, layout, causal) for w in (1, 2, 3, 4) for n_local in (4, 6)
               for layout in LAYOUTS for causal in (False, True)]
    for world_size, n_local, layout, causal in configs:
        _check_one_ring(student_fn, name, world_size, n_local, layout, causal)
    print(f"✅ {name}: every visible pair scored exactly once, nothing hidden, in all "
          f"{len(configs)} rings (W = 1-4, both layouts, causal or not).")


# ---------------------------------------------------------------- Exercise 12.5: work per rank

WORK_PROBLEM = {"n": 32, "world_size": 4}  # causal, B = H = 1: blocks of 8 positions


def _predictions(predicted_plain, predicted_zigzag_pairs, name: str) -> tuple[float, int]:
    ratio = recorded(name, {"predicted_plain": predicted_plain}, whole=False)["predicted_plain"]
    if not ratio >= 1:
        raise CheckFailed(f"{name}: predicted_plain is a ratio max / min, a number >= 1, got "
                          f"{predicted_plain!r}")
    pairs = recorded(name, {"predicted_zigzag_pairs": predicted_zigzag_pairs})
    return ratio, pairs["predicted_zigzag_pairs"]


def check_work_predicted(predicted_plain, predicted_zigzag_pairs) -> None:
    """Exercise 12.5, first step: a ratio and a whole number written down; not yet judged."""
    name = "Exercise 12.5 (prediction)"
    ratio, pairs = _predictions(predicted_plain, predicted_zigzag_pairs, name)
    print(f"✅ {name}: recorded max/min work {ratio:g} (contiguous) and {pairs} pairs per "
          "rank (zigzag). Now measure.")


def _pairs(value, name: str, what: str, world_size: int) -> list[int]:
    if value is ...:
        raise CheckFailed(f"{name}: replace the ... with {what}")
    if not isinstance(value, (list, tuple)) or len(value) != world_size:
        raise CheckFailed(f"{name}: {what} must be a list of {world_size} whole numbers (the "
                          f"pairs each rank scored, rank 0 first), got {value!r}")
    numbers_ = [as_number(x, whole=True) for x in value]
    if any(x is None for x in numbers_):
        raise CheckFailed(f"{name}: {what} must be a list of {world_size} whole numbers (the "
                          f"pairs each rank scored, rank 0 first), got {value!r}")
    return numbers_


def check_work_per_rank(predicted_plain, predicted_zigzag_pairs, measured_plain,
                        measured_zigzag) -> None:
    """Exercise 12.5: the query-key pairs each of W = 4 ranks scores in causal ring attention
    over N = 32 positions (B = H = 1), measured (stats.pairs of each rank, exact whole
    numbers against work_per_rank), the predicted ratio of the most to the least work of
    the contiguous split (within 2% of the truth) and the predicted pairs of a rank of
    the zigzag split (exact). One line names every number that is off."""
    name = "Exercise 12.5"
    n, world_size = WORK_PROBLEM["n"], WORK_PROBLEM["world_size"]
    truth = {layout: work_per_rank(n, world_size, layout, causal=True) for layout in LAYOUTS}
    measured = {"contiguous": _pairs(measured_plain, name, "measured_plain", world_size),
                "zigzag": _pairs(measured_zigzag, name, "measured_zigzag", world_size)}
    for layout in LAYOUTS:
        for rank, (got, want) in enumerate(zip(measured[layout], truth[layout])):
            if got != want:
                raise CheckFailed(f"{name}: your measurement for the {layout} split says rank "
                                  f"{rank} scored {got} pairs, off by {got - want:+d}: read "
                                  f"each rank's stats.pairs from run_ring(4, ring_work, {n}), "
                                  "in rank order")
    ratio, pairs = _predictions(predicted_plain, predicted_zigzag_pairs, name)
    true_ratio = work_ratio(truth["contiguous"])
    problems = []
    if abs(ratio - true_ratio) > 0.02 * true_ratio:
        problems.append(f"your predicted max/min ratio of the contiguous split, {ratio:g}, "
                        f"is off by {ratio - true_ratio:+.2f} "
                        f"({abs(ratio - true_ratio) / true_ratio:.0%}): rank r sees r whole "
                        "earlier blocks of L x L pairs and the lower triangle of its own, "
                        "L = N / W; the first rank sees only its triangle, L (L + 1) / 2 "
                        "pairs, not L^2 / 2")
    if pairs != truth["zigzag"][0]:
        problems.append(f"your predicted pairs per rank of the zigzag split, {pairs}, are "
                        f"off by {pairs - truth['zigzag'][0]:+d}: rank r holds chunks r and "
                        "2W - 1 - r of 2W, of c = N / 2W positions; chunk i sees i whole "
                        "earlier chunks and its own triangle, c (c + 1) / 2 pairs")
    if problems:
        raise CheckFailed(f"{name}: the measurement is right, but " + "; and ".join(problems))
    print(f"✅ {name}: prediction and measurement agree: max/min work {true_ratio:.2f} "
          f"contiguous; {truth['zigzag'][0]} pairs on every zigzag rank.")


# ---------------------------------------------------------------- Exercise 12.6: the merge bug

def reference_simulated_ring(q, k, v, world_size, causal=False):
    """What a ring over world_size ranks computes: attention over the whole sequence."""
    return flash_forward(q, k, v, causal)


def _ring_cases() -> list[tuple[str, tuple]]:
    g = torch.Generator().manual_seed(1206)

    def randn(*shape, size=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * size

    return [
        ("with one rank (W = 1, no merge at all), not causal, q (1, 2, 6, 4)",
         (randn(1, 2, 6, 4), randn(1, 2, 6, 4), randn(1, 2, 6, 4), 1, False)),
        ("with W = 2, not causal, q (2, 2, 8, 4)",
         (randn(2, 2, 8, 4), randn(2, 2, 8, 4), randn(2, 2, 8, 4), 2, False)),
        ("with W = 3, causal, q (1, 2, 12, 4) (rank 0 merges nothing, rank 2 three parts)",
         (randn(1, 2, 12, 4), randn(1, 2, 12, 4), randn(1, 2, 12, 4), 3, True)),
        ("with W = 4, not causal, grouped-query heads (q 4 heads, k and v 2) and dv = 3",
         (randn(1, 4, 8, 4), randn(1, 2, 8, 4), randn(1, 2, 8, 3), 4, False)),
        ("with W = 4, causal, scores of about +-1e4 (e^lse overflows float64)",
         (randn(1, 1, 8, 4, size=100.0), randn(1, 1, 8, 4, size=100.0), randn(1, 1, 8, 4), 4,
          True)),
    ]


def check_ring_simulation(student_fn: Callable) -> None:
    """Exercise 12.6: simulated_ring(q, k, v, world_size, causal=False) -> (out, lse) of
    the whole sequence, from the W ranks' blocks merged step by step. q (B, H, N, d),
    k (B, H_kv, N, d), v (B, H_kv, N, dv); cases: one rank, two to four, causal or not,
    grouped-query heads, dv != d, scores of about 1e4. Against flash_forward on the whole
    sequence, float64, within 1e-9 + 1e-7 * |expected|. The caller's tensors must not
    change; the package's merge_partials is refused (the fix is the merge).
    """
    name = "Exercise 12.6 (simulated_ring)"
    student_fn = without_calls(student_fn, name,
                               [(merge_partials, "attnbook.ring.merge_partials")],
                               "fix the merge in the given loop yourself")
    arg_names = ("q", "k", "v", "world_size", "causal")
    cases = _ring_cases()
    for description, inputs in cases:
        expected = reference_simulated_ring(*[x.clone() if torch.is_tensor(x) else x
                                              for x in inputs])
        before = tuple(x.clone() if torch.is_tensor(x) else x for x in inputs)
        got = call_student(student_fn, inputs, name, case=description)
        unchanged_inputs(before, inputs, name, description, arg_names)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{name}: return the tuple (out, lse), got "
                              f"{type(got).__name__}")
        problem = verdict(tuple(got), expected, 1e-9, 1e-7, ("out", "lse"))
        if problem:
            raise CheckFailed(f"{name}: {description}: {problem}")
    print(f"✅ {name}: equal to attention over the whole sequence in all {len(cases)} "
          "cases.")

