"""Diagrams of chapter 6: the RoPE rotation and the ALiBi bias.

`rope_diagram` rotates one pair of dimensions (2i, 2i + 1) of a query and a key with
the package's `positional.apply_rope` and shows that moving both positions by the same
amount leaves their angle, and so their dot product, unchanged. `alibi_diagram` draws
the bias matrices of `positional.alibi_bias` for a few heads, with the slopes of
`positional.alibi_slopes`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Arc, FancyArrowPatch, Patch, Rectangle

from attnbook.attention import causal_mask
from attnbook.diagrams._draw import COLOURS, FONT, INK, WIDTH, texts, transparent
from attnbook.positional import alibi_bias, alibi_slopes, apply_rope

__all__ = ["rope_diagram", "alibi_diagram", "rotate_pair", "texts"]


def rotate_pair(vector, position: float, theta: float) -> tuple[float, float]:
    """One pair (x[2i], x[2i+1]) at `position`, rotated by the package's apply_rope
    with the pair's speed theta: a head dimension of 2 has theta_0 = 1, so a position of
    position * theta gives the angle position * theta."""
    x = torch.tensor([list(vector)], dtype=torch.float64)                   # (L=1, d=2)
    rotated = apply_rope(x, torch.tensor([position * theta], dtype=torch.float64))
    return tuple(rotated[0].tolist())


def _degrees(v) -> float:
    return math.degrees(math.atan2(v[1], v[0]))


def _vector(ax, v, colour, label, dashed=False, turn=0.0):
    """An arrow from the origin to v, labelled beyond its tip (turned by `turn` degrees)."""
    ax.add_patch(FancyArrowPatch((0, 0), v, arrowstyle="-|>", mutation_scale=12, color=colour,
                                 linewidth=1.2 if dashed else 2.0, shrinkA=0, shrinkB=0,
                                 linestyle="--" if dashed else "-",
                                 alpha=0.6 if dashed else 1.0))
    angle = math.radians(_degrees(v) + turn)
    radius = math.hypot(*v) + 0.22
    ax.text(radius * math.cos(angle), radius * math.sin(angle), label, ha="center",
            va="center", fontsize=FONT, color=colour)


def _arc(ax, start, end, radius, colour, label):
    ax.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=start, theta2=end, color=colour,
                     linewidth=1.2))
    middle = math.radians((start + end) / 2)
    ax.text((radius + 0.13) * math.cos(middle), (radius + 0.13) * math.sin(middle), label,
            ha="center", va="center", fontsize=FONT, color=colour)


def rope_diagram(position: int = 3, theta: float = 0.4, key_position: int = 1,
                 shift: int = 2, query=(1.0, 0.2), key=(0.7, 0.6)) -> Figure:
    """One pair of dimensions of a query at position m = `position` and a key at
    n = `key_position`, each rotated by its position times theta (left), and the same
    two moved by `shift` positions (right): the angle between the rotated vectors is
    the same, so q'.k' depends only on the offset m - n."""
    for name, value in [("position", position), ("key_position", key_position)]:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not (isinstance(shift, int) and shift >= 1):
        raise ValueError(f"shift must be a positive integer, got {shift!r}")
    if not 0 < theta <= math.pi / 4:
        raise ValueError(f"theta must lie in (0, pi/4] so the rotations stay readable, "
                         f"got {theta!r}")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6), layout="constrained")
    for ax, (m, n) in zip(axes, [(position, key_position),
                                 (position + shift, key_position + shift)]):
        q, k = rotate_pair(query, m, theta), rotate_pair(key, n, theta)
        dot = q[0] * k[0] + q[1] * k[1]
        ax.add_patch(Arc((0, 0), 2, 2, color=INK, linewidth=0.6, linestyle=":"))
        ax.axhline(0, color=INK, linewidth=0.6)
        ax.axvline(0, color=INK, linewidth=0.6)
        _vector(ax, query, COLOURS["score"], "q", dashed=True)
        _vector(ax, key, COLOURS["encoder"], "k", dashed=True)
        turn = 9.0 if _degrees(q) >= _degrees(k) else -9.0  # labels apart
        _vector(ax, q, COLOURS["score"], f"q at m = {m}", turn=turn)
        _vector(ax, k, COLOURS["encoder"], f"k at n = {n}", turn=-turn)
        _arc(ax, _degrees(query), _degrees(query) + math.degrees(m * theta), 0.32,
             COLOURS["score"], f"{m}θ")
        _arc(ax, _degrees(key), _degrees(key) + math.degrees(n * theta), 0.62,
             COLOURS["encoder"], f"{n}θ")
        between = abs(_degrees(q) - _degrees(k))
        ax.set_title(f"m = {m}, n = {n}: m − n = {m - n}\n"
                     f"rotated q · k = {dot:.3f}, angle {between:.1f}°",
                     fontsize=FONT, color=INK)
        ax.set_xlim(-1.45, 1.45)
        ax.set_ylim(-0.55, 1.55)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_xlabel("dimension 2i", fontsize=FONT, color=INK)
        ax.set_ylabel("dimension 2i + 1", fontsize=FONT, color=INK)
    fig.suptitle(f"RoPE on one pair of dimensions, θ = {theta:g}: position m turns the pair "
                 f"by m·θ", fontsize=FONT, color=INK)
    return transparent(fig)


def _slope(value: float) -> str:
    fraction = Fraction(value).limit_denominator(1 << 12)
    return f"1/{fraction.denominator}" if fraction.numerator == 1 else f"{value:.3g}"


def alibi_diagram(n: int = 8, n_heads: int = 4, causal: bool = True,
                  heads: tuple[int, ...] | None = None) -> Figure:
    """ALiBi's bias -m_h (i - j) on the score of query i for key j, one matrix per head
    h in `heads` (default: at most four, spread over the heads), from
    `positional.alibi_bias` with the slopes m_h of `positional.alibi_slopes`. With
    `causal`, the keys after each query are masked (hatched), as in a causal model;
    without it the bias is -m_h |i - j| on both sides."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    if heads is None:
        heads = tuple(sorted({round(h) for h in np.linspace(0, n_heads - 1, min(4, n_heads))}))
    if not heads or any(not 0 <= h < n_heads for h in heads):
        raise ValueError(f"heads must be indices in [0, {n_heads}), got {heads}")
    bias = alibi_bias(n_heads, n, dtype=torch.float64)   # (H, n, n)
    slopes = alibi_slopes(n_heads)                       # (H,)
    allowed = causal_mask(n) if causal else torch.ones(n, n, dtype=torch.bool)
    lowest = bias.min().item()
    fig, axes = plt.subplots(1, len(heads), figsize=(WIDTH, 2.6), layout="constrained",
                             squeeze=False)
    for ax, h in zip(axes[0], heads):
        shown = np.ma.masked_array(bias[h].numpy(), mask=~allowed.numpy())
        image = ax.imshow(shown, cmap="viridis", vmin=lowest, vmax=0,
                          extent=(-0.5, n - 0.5, n - 0.5, -0.5))
        for i, j in zip(*np.nonzero(~allowed.numpy())):  # masked cells: hatched
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", hatch="xx",
                                   edgecolor=INK, linewidth=0, alpha=0.6))
        far = bias[h, n - 1, 0].item()
        ax.set_title(f"head {h + 1}: m = {_slope(slopes[h].item())}\n"
                     f"i = {n - 1}, j = 0: {far:.2f}".replace("-", "−"), fontsize=FONT, color=INK)
        ax.set_xticks([0, n - 1])
        ax.set_yticks([0, n - 1])
        ax.tick_params(labelsize=FONT, colors=INK, length=2)
        ax.set_xlabel("key j", fontsize=FONT, color=INK)
        for side in ax.spines.values():
            side.set_color(INK)
    axes[0][0].set_ylabel("query i", fontsize=FONT, color=INK)
    bar = fig.colorbar(image, ax=list(axes[0]), shrink=0.8, pad=0.02)
    bar.set_label("bias −m (i − j)" if causal else "bias −m |i − j|", fontsize=FONT, color=INK)
    bar.ax.tick_params(labelsize=FONT, colors=INK)
    bar.outline.set_edgecolor(INK)
    if causal:
        legend = fig.legend(handles=[Patch(facecolor="none", hatch="xx", edgecolor=INK,
                                           label="masked: key after the query (causal)")],
                            loc="outside lower center", fontsize=FONT, frameon=False)
        for text in legend.get_texts():
            text.set_color(INK)
    return transparent(fig)
