"""Diagrams of chapter 12, "Long sequences": sparse score patterns with their cost, the
reordering of linear attention, and its chunked causal form.

Each function returns a matplotlib Figure with a transparent background and mid-tone
strokes and text, so that it reads on light and dark pages alike.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import FancyArrowPatch, Rectangle

from attnbook.attention import causal_mask
from attnbook.sparse import local_global_mask, mask_cost, sliding_window_mask, strided_mask

INK = "#808080"  # mid-grey: text and strokes on light and dark pages
SCORED_COLOR, GLOBAL_COLOR, STATE_COLOR, BIG_COLOR = "#4C9BE8", "#E8A33D", "#2CA58D", "#D9534F"
_STYLE = {"text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK,
          "xtick.color": INK, "ytick.color": INK, "figure.facecolor": "none",
          "axes.facecolor": "none", "savefig.transparent": True}


def pattern_masks(n: int = 32, window: int = 6, n_global: int = 2,
                  stride: int = 6) -> dict[str, np.ndarray]:
    """name -> (n, n) boolean mask of the four causal patterns that `score_patterns` draws."""
    return {"dense causal": causal_mask(n).numpy(),
            f"sliding window, w = {window}": sliding_window_mask(n, window=window).numpy(),
            f"local (w = {window}) + {n_global} global":
                local_global_mask(n, window=window, n_global=n_global).numpy(),
            f"strided, stride {stride}": strided_mask(n, stride=stride).numpy()}


def score_patterns(n: int = 32, window: int = 6, n_global: int = 2,
                   stride: int = 6) -> plt.Figure:
    """The score matrix (queries down, keys across) of four causal patterns side by side:
    a coloured cell is a scored pair; under each, the pairs scored and their share of the
    dense N x N."""
    import torch
    with plt.rc_context(_STYLE):
        masks = pattern_masks(n, window, n_global, stride)
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.9), layout="constrained")
        cmap = ListedColormap([(0, 0, 0, 0), SCORED_COLOR])
        for ax, (name, mask) in zip(axes, masks.items()):
            ax.imshow(mask, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if "global" in name:  # the global tokens' rows and columns in another colour
                shade = np.zeros((n, n, 4))
                shade[:n_global, :] = (0.91, 0.64, 0.24, 0.9)
                shade[:, :n_global] = (0.91, 0.64, 0.24, 0.9)
                shade[~mask] = 0
                ax.imshow(shade, interpolation="nearest")
            ax.add_patch(Rectangle((-0.5, -0.5), n, n, facecolor="none", edgecolor=INK,
                                   linewidth=1))
            cost = mask_cost(torch.from_numpy(mask))
            ax.set_title(name, fontsize=10)
            ax.set_xlabel(f"{cost['pairs']} of {n}² = {n * n} pairs ({cost['fraction']:.0%})",
                          fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_ylabel("queries i (keys j across)")
    return fig


def _row(ax, y, items, n):
    """Lay out [(w, h, label, color) or a symbol string, ...] left to right, centred on
    the line y + n / 2; return the right end."""
    x = 0.0
    for item in items:
        if isinstance(item, str):
            ax.text(x + 0.6, y + n / 2, item, fontsize=16, ha="center", va="center", color=INK)
            x += 1.2
            continue
        w, h, label, color = item
        top = y + (n - h) / 2
        ax.add_patch(Rectangle((x, top), w, h, facecolor=color, alpha=0.4, edgecolor=color,
                               linewidth=1.5))
        inside = w > 2.5 and h > 2.5  # a small box gets its label underneath
        ax.text(x + w / 2, top + h / 2 if inside else top + h + 0.3, label, ha="center",
                va="center" if inside else "top", fontsize=9, color=INK)
        x += w
    return x


def linear_reordering(n: int = 8, d: int = 2) -> plt.Figure:
    """Two orders of the same product, in two steps each: (Q Kᵀ) V builds an N x N
    matrix in the middle; Q (Kᵀ V) a d x d one. Boxes to scale for N = n, d = d."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
        q, kt, v = (d, n, "Q\nN×d", SCORED_COLOR), (n, d, "Kᵀ\nd×N", SCORED_COLOR), \
            (d, n, "V\nN×d", SCORED_COLOR)
        out = (d, n, "O\nN×d", SCORED_COLOR)
        rows = {
            "(QKᵀ)V: an N×N matrix in the middle\n4N²d FLOPs, N² memory": [
                [q, "·", kt, "=", (n, n, "QKᵀ\nN×N", BIG_COLOR)],
                [(n, n, "QKᵀ\nN×N", BIG_COLOR), "·", v, "=", out]],
            "Q(KᵀV): a d×d matrix in the middle\n4Nd² FLOPs, d² memory": [
                [kt, "·", v, "=", (d, d, "KᵀV\nd×d", STATE_COLOR)],
                [q, "·", (d, d, "KᵀV\nd×d", STATE_COLOR), "=", out]],
        }
        for ax, (title, steps) in zip(axes, rows.items()):
            right = 0.0
            for number, items in enumerate(steps):
                y = number * (n + 3)
                ax.text(-0.5, y + n / 2, f"step {number + 1}", ha="right", va="center",
                        fontsize=9, color=INK)
                right = max(right, _row(ax, y, items, n))
            ax.set_xlim(-4, 2 * n + 2 * d + 4)
            ax.set_ylim(2 * n + 4, -1.5)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(title, fontsize=10)
    return fig


def chunked_linear(n: int = 16, chunk: int = 4) -> plt.Figure:
    """The chunked causal form on the (N x N) similarity matrix: diagonal blocks computed
    as masked attention inside the chunk; every block below the diagonal never computed,
    its contribution read from the state S, z carried from one chunk to the next."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.6, 5.2), layout="constrained")
        blocks = -(-n // chunk)
        for r in range(blocks):
            for c in range(r + 1):
                x, y = c * chunk, r * chunk
                w, h = min(chunk, n - x), min(chunk, n - y)
                if c == r:  # the diagonal block: masked attention inside the chunk
                    tri = np.array([[x, y], [x, y + h], [x + w, y + h]])
                    ax.add_patch(plt.Polygon(tri, facecolor=SCORED_COLOR, alpha=0.55,
                                             edgecolor=INK))
                    ax.add_patch(Rectangle((x, y), w, h, facecolor="none", edgecolor=INK))
                else:
                    ax.add_patch(Rectangle((x, y), w, h, facecolor=STATE_COLOR, alpha=0.18,
                                           edgecolor=INK, linewidth=0.8, hatch=".."))
        for r in range(1, blocks):
            y = r * chunk + chunk / 2
            ax.text(r * chunk / 2, y, f"read from S{r}, z{r}", ha="center", va="center",
                    fontsize=8, color=INK)
        for r in range(blocks):
            x = r * chunk + chunk / 2
            ax.text(x - 0.2 * chunk, r * chunk + 0.78 * chunk, "masked", fontsize=7,
                    color=INK, ha="center", va="center")
        # the state, carried down the right-hand side
        right = n + 1.2
        for r in range(blocks):
            y = r * chunk + chunk / 2
            label = f"S{r} = 0, z{r} = 0" if r == 0 else f"S{r}, z{r}"
            ax.text(right, y, label, ha="left", va="center", fontsize=9, color=STATE_COLOR)
            if r + 1 < blocks:
                ax.add_patch(FancyArrowPatch((right + 0.6, y + 0.35 * chunk),
                                             (right + 0.6, y + 0.65 * chunk),
                                             arrowstyle="-|>", mutation_scale=12,
                                             color=STATE_COLOR, linewidth=1.6))
                ax.text(right + 1.0, y + chunk / 2, f"+ φ(K{r})ᵀV{r}", fontsize=8,
                        color=INK, va="center")
        ax.set_xlim(0, n + 7.5)
        ax.set_ylim(n, 0)
        ax.set_aspect("equal")
        ax.set_xlabel("keys j")
        ax.set_ylabel("queries i")
        ax.set_xticks(range(0, n + 1, chunk))
        ax.set_yticks(range(0, n + 1, chunk))
        ax.set_title(f"chunked causal linear attention, N = {n}, chunks of {chunk}",
                     fontsize=10)
    return fig
