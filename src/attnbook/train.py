"""Training and evaluation for the sequence-to-sequence models of Part I."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attnbook.data import OUTPUT_SEPARATOR, Example, Vocab, batches
from attnbook.seeds import seeded


def set_seed(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch so a notebook gives the same numbers every run.

    The seed is shifted by the environment variable ATTNBOOK_SEED when it is set,
    so `make seeds` can re-run a notebook under other seeds without editing it.
    Returns the seed actually used.
    """
    used = seeded(seed)
    random.seed(used)
    np.random.seed(used)
    torch.manual_seed(used)
    return used


def pick_device() -> torch.device:
    """CUDA when present, else the CPU (every notebook runs on a laptop CPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class History:
    """What happened during training."""

    step_losses: list[float] = field(default_factory=list)
    epoch_valid_exact: list[float] = field(default_factory=list)
    seconds: float = 0.0


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy over real (non-pad) target positions. logits (B, T, |𝒱|), targets (B, T)."""
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match targets of shape "
                         f"{tuple(targets.shape)} in their first two dimensions")
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def train_seq2seq(model: nn.Module, train: list[Example], src_vocab: Vocab, tgt_vocab: Vocab,
                  epochs: int = 5, batch_size: int = 64, lr: float = 3e-3,
                  valid: list[Example] | None = None, clip: float = 1.0, seed: int = 0,
                  progress: bool = True,
                  after_epoch: Callable[[int, nn.Module], None] | None = None,
                  after_step: Callable[[int, nn.Module], None] | None = None) -> History:
    """Adam with teacher forcing, gradient clipping, and a progress bar per run.

    After each epoch, with `valid`, records the exact-match accuracy of greedy decoding.
    Then, with `after_epoch`, calls `after_epoch(epoch, model)` (epoch counted from 1),
    e.g. to measure the model mid-training. Training uses no random numbers there, so
    a callback that draws none leaves training unchanged; the model is switched back
    to training mode at the start of the next epoch.

    With `after_step`, calls `after_step(step, model)` after every optimizer step (step
    counted from 1 over the whole run), e.g. to take snapshots of the model as it
    learns; the model is switched back to training mode after each call, so a callback
    that draws no random numbers leaves training unchanged.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    steps_per_epoch = -(-len(train) // batch_size)
    # Redraw at most twice a second: in Jupyter each redraw is a message to the front end.
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="training", mininterval=0.5)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for batch in batches(train, src_vocab, tgt_vocab, batch_size, shuffle=True,
                             seed=seeded(seed) + epoch):
            batch = batch.to(device)
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss = sequence_loss(logits, batch.tgt_out, tgt_vocab.pad_id)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            history.step_losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if after_step is not None:
                after_step(len(history.step_losses), model)
                model.train()
        if valid is not None:
            predictions = predict(model, valid, src_vocab, tgt_vocab)
            history.epoch_valid_exact.append(exact_match(predictions, [e.target for e in valid]))
            bar.set_postfix(loss=f"{loss.item():.3f}", valid=f"{history.epoch_valid_exact[-1]:.3f}")
        if after_epoch is not None:
            after_epoch(epoch + 1, model)
    bar.close()
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def predict(model: nn.Module, examples: list[Example], src_vocab: Vocab, tgt_vocab: Vocab,
            batch_size: int = 256, max_len: int | None = None) -> list[str]:
    """Greedy-decode every example and return the output strings."""
    model.eval()
    device = next(model.parameters()).device
    if max_len is None:
        max_len = max(len(e.target) for e in examples) + 5
    predictions = []
    for batch in batches(examples, src_vocab, tgt_vocab, batch_size):
        batch = batch.to(device)
        tokens, _ = model.greedy_decode(batch.src, batch.src_lengths, max_len)
        predictions.extend(tgt_vocab.decode(row) for row in tokens.cpu())
    return predictions


def exact_match(predictions: list[str], targets: list[str]) -> float:
    """Fraction of outputs that equal their target exactly."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    if not targets:
        raise ValueError("exact_match needs at least one target")
    return sum(p == t for p, t in zip(predictions, targets)) / len(targets)


def char_accuracy(predictions: list[str], targets: list[str]) -> float:
    """Fraction of target characters predicted at their position (missing ones count wrong)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    correct = sum(sum(a == b for a, b in zip(p, t)) for p, t in zip(predictions, targets))
    total = sum(len(t) for t in targets)
    if total == 0:
        raise ValueError("char_accuracy needs at least one target character")
    return correct / total


def accuracy_by_length(examples: list[Example], predictions: list[str],
                       edges: list[int]) -> dict[str, float]:
    """Exact match per input-length bucket [edges[i], edges[i+1]).

    Returns {"lo-hi": accuracy} for every non-empty bucket, in order.
    """
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    if list(edges) != sorted(edges) or len(edges) < 2:
        raise ValueError(f"edges must be at least two increasing numbers, got {edges}")
    result = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        pairs = [(p, e.target) for p, e in zip(predictions, examples) if lo <= len(e.source) < hi]
        if pairs:
            result[f"{lo}-{hi - 1}"] = sum(p == t for p, t in pairs) / len(pairs)
    return result


def date_exact_match(predictions: list[str], targets: list[str],
                     separator: str = OUTPUT_SEPARATOR) -> list[float]:
    """Exact match of each date by its place in the output: element i is the fraction of
    targets with more than i dates whose (i + 1)-th date the prediction wrote exactly.

    Both strings are split at `separator`, so one character dropped or inserted in a
    date makes that date wrong and leaves the others as they are (a position-wise
    character score would count every character after the slip wrong).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    if not targets:
        raise ValueError("date_exact_match needs at least one target")
    right: list[int] = []
    total: list[int] = []
    for prediction, target in zip(predictions, targets):
        written = prediction.split(separator)
        for i, date in enumerate(target.split(separator)):
            if i == len(total):
                right.append(0)
                total.append(0)
            total[i] += 1
            right[i] += i < len(written) and written[i] == date
    return [r / n for r, n in zip(right, total)]


@torch.no_grad()
def position_accuracy(model: nn.Module, examples: list[Example], src_vocab: Vocab,
                      tgt_vocab: Vocab, batch_size: int = 256) -> list[float]:
    """Teacher-forced accuracy at each output position: element t is the fraction of
    examples with more than t target characters whose character t the model ranks
    first when it reads the true characters before it.

    Every position is scored on the true prefix, so one wrong character never makes
    the ones after it wrong (greedy decoding's slips do not smear across positions).
    """
    if not examples:
        raise ValueError("position_accuracy needs at least one example")
    model.eval()
    device = next(model.parameters()).device
    longest = max(len(e.target) for e in examples)
    right = torch.zeros(longest)
    total = torch.zeros(longest)
    for batch in batches(examples, src_vocab, tgt_vocab, batch_size):
        batch = batch.to(device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)  # (B, T, |𝒱|)
        predicted = logits.argmax(dim=-1)[:, :longest].cpu()  # (B, T') without the <eos> column
        wanted = batch.tgt_out[:, :longest].cpu()
        real = (wanted != tgt_vocab.pad_id) & (wanted != tgt_vocab.eos_id)
        width = real.shape[1]
        right[:width] += ((predicted == wanted) & real).sum(dim=0).float()
        total[:width] += real.sum(dim=0).float()
    return (right / total).tolist()
