"""Diagram of chapter 7: multi-head attention splits the model width into heads and
merges them back.

`heads_diagram` follows `multihead.MultiHeadAttention.forward` from the input
(B, L, d_model) through the projections, `split_heads` to (B, H, L, d) with
d = d_model / H, one attention per head (softmax, dropout of the weights in training,
then the values), `merge_heads` back to (B, L, d_model) and the output projection,
with the shapes on the arrows, in the names `split_heads` and the chapter use. Beside
it, one token's d_model features coloured by the head that gets them, as `split_heads`
assigns them (head h gets features h d to (h + 1) d - 1).
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attnbook.diagrams._draw import (
    COLOURS,
    HEAD_COLOURS,
    INK,
    WIDTH,
    arrow,
    box,
    frame,
    note,
    texts,
)
from attnbook.multihead import merge_heads, split_heads

__all__ = ["heads_diagram", "head_of_feature", "texts"]


def head_of_feature(d_model: int, n_heads: int) -> list[int]:
    """For each of the d_model features of a token, the head `split_heads` gives it to;
    checks that `merge_heads` puts every feature back where it was."""
    x = torch.arange(d_model, dtype=torch.float32).view(1, 1, d_model)  # (B=1, L=1, d_model)
    heads = split_heads(x, n_heads)                                     # (1, H, 1, d)
    if not torch.equal(merge_heads(heads), x):
        raise AssertionError("merge_heads does not invert split_heads")
    owner = [0] * d_model
    for h in range(n_heads):
        for feature in heads[0, h, 0].tolist():
            owner[int(feature)] = h
    return owner


def _features(ax, x0, y, owner, cell=0.2, label=None):
    """A row of one token's features, each cell coloured by its head."""
    for i, h in enumerate(owner):
        ax.add_patch(Rectangle((x0 + i * cell, y - cell / 2), cell, cell,
                               facecolor=HEAD_COLOURS[h], alpha=0.75, edgecolor=INK,
                               linewidth=0.6))
    if label:
        note(ax, x0 + len(owner) * cell / 2, y + cell / 2 + 0.05, label, va="bottom")


def heads_diagram(n_heads: int = 4, d_model: int = 8) -> Figure:
    """Multi-head attention as the package computes it, shapes on the arrows:
    (B, L, d_model) -> q_proj, k_proj, v_proj -> split_heads -> (B, H, L, d) -> scaled
    dot-product attention per head, with dropout on the weights in training ->
    merge_heads -> (B, L, d_model) -> out_proj. On the right, one token's d_model
    features coloured by head (from `split_heads` itself)."""
    if not isinstance(n_heads, int) or not 1 <= n_heads <= len(HEAD_COLOURS):
        raise ValueError(f"n_heads must be an integer in [1, {len(HEAD_COLOURS)}] to draw, "
                         f"got {n_heads!r}")
    if not isinstance(d_model, int) or not n_heads <= d_model <= 16:
        raise ValueError(f"d_model must be an integer in [n_heads, 16] to draw, got {d_model!r}")
    owner = head_of_feature(d_model, n_heads)  # raises if n_heads does not divide d_model
    head_dim = d_model // n_heads
    height = 5.0
    fig, ax = frame(WIDTH, height, (0, WIDTH), (0, height))
    x, w = 2.95, 3.2
    levels = {"input": 4.75, "proj": 4.2, "split": 3.35, "heads": 2.45, "merge": 1.55,
              "out": 0.8, "output": 0.2}
    note(ax, x, levels["input"], "input x: (B, L, d_model)")
    box(ax, x, levels["proj"], "q_proj, k_proj, v_proj (d_model × d_model)", COLOURS["encoder"],
        w, 0.36)
    box(ax, x, levels["split"], "split_heads: view (B, L, H, d), transpose(1, 2)",
        COLOURS["input"], w, 0.36)
    gap = 0.08
    head_w = (w - gap * (n_heads - 1)) / n_heads
    for h in range(n_heads):
        hx = x - w / 2 + head_w / 2 + h * (head_w + gap)
        box(ax, hx, levels["heads"], f"head {h + 1}" if head_w > 0.55 else f"{h + 1}",
            HEAD_COLOURS[h], head_w, 0.42)
    note(ax, x - w / 2 - 0.08, levels["heads"],
         "attention per head:\nsoftmax(QKᵀ/√d),\ndropout (training),\ntimes V", ha="right")
    box(ax, x, levels["merge"], "merge_heads: transpose(1, 2), reshape", COLOURS["input"], w,
        0.36)
    box(ax, x, levels["out"], "linear map out_proj (d_model × d_model)", COLOURS["output"], w, 0.36)
    note(ax, x, levels["output"], "output: (B, L, d_model)")
    shapes = [("input", "proj", "x: (B, L, d_model)"),
              ("proj", "split", "Q, K, V:\n(B, L, d_model)\neach"),
              ("split", "heads", "(B, H, L, d) each"),
              ("heads", "merge", "(B, H, L, d)"),
              ("merge", "out", "(B, L, d_model)"),
              ("out", "output", "(B, L, d_model)")]
    tops = {"input": 0.1, "proj": 0.18, "split": 0.18, "heads": 0.21, "merge": 0.18,
            "out": 0.18, "output": 0.1}
    head_xs = [x - w / 2 + head_w / 2 + h * (head_w + gap) for h in range(n_heads)]
    for upper, lower, label in shapes:
        start, end = levels[upper] - tops[upper], levels[lower] + tops[lower]
        if "heads" in (upper, lower):  # one arrow per head: each reads its own slice
            for hx in head_xs:
                arrow(ax, (hx, start), (hx, end))
        else:
            arrow(ax, (x, start), (x, end))
        if upper != "input":
            note(ax, x - w / 2 - 0.08, (start + end) / 2, label, ha="right")
    # one token's features, by head, as split_heads assigns them
    cell = min(0.2, 1.55 / d_model)
    fx = 5.95 - d_model * cell / 2
    _features(ax, fx, levels["split"] + 0.05, owner, cell,
              f"one token: d_model = {d_model}")
    for h in range(n_heads):
        features = [f for f, o in enumerate(owner) if o == h]
        hx = 4.8 + h * (2.1 / n_heads)
        _features(ax, hx, levels["heads"], [h] * head_dim, cell)
        if n_heads <= 4 or h in (0, n_heads - 1):  # the features each head gets
            note(ax, hx + head_dim * cell / 2, levels["heads"] - cell / 2 - 0.05,
                 f"{features[0]}–{features[-1]}" if head_dim > 1 else f"{features[0]}",
                 va="top")
    note(ax, 5.95, levels["heads"] + cell / 2 + 0.08, f"d = d_model / H = {head_dim} per head",
         va="bottom")
    _features(ax, fx, levels["merge"], owner, cell)
    note(ax, 5.95, levels["merge"] - cell / 2 - 0.06, "concatenated back in order", va="top")
    note(ax, 5.95, levels["out"] - 0.15, "B: batch, L: positions,\nd_model: model width,\nH: heads")
    return fig
