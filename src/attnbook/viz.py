"""Plots shared by the chapters. Each function draws on an Axes and returns it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _axes(ax=None, figsize=(6, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_losses(step_losses: list[float], ax=None, label: str | None = None, smooth: int = 20):
    """Training loss per step, with a moving average over `smooth` steps."""
    ax = _axes(ax)
    losses = np.asarray(step_losses)
    ax.plot(losses, alpha=0.25, color="C0" if label is None else None)
    if len(losses) >= smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(np.arange(smooth - 1, len(losses)), np.convolve(losses, kernel, mode="valid"),
                label=label)
    ax.set(xlabel="training step", ylabel="cross-entropy loss", yscale="log")
    if label is not None:
        ax.legend()
    return ax


def plot_accuracy_by_length(curves: dict[str, dict[str, float]], ax=None, title: str = ""):
    """One line per model: exact-match accuracy in each input-length bucket.

    curves: {model name: {"lo-hi": accuracy}}, as `train.accuracy_by_length` returns.
    """
    ax = _axes(ax)
    for name, by_bucket in curves.items():
        buckets = list(by_bucket)
        ax.plot(buckets, [100 * a for a in by_bucket.values()], marker="o", label=name)
    ax.set(xlabel="input length (characters)", ylabel="exact match (%)", ylim=(-3, 103),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
