"""Diagrams of chapter 9: the KV cache and the sharing of keys and values across heads."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

QUERY, KEY, NEW, EMPTY, EDGE = "#4c8fd6", "#e08a3c", "#3fa672", "#9a9a9a", "#808080"


def _cell(ax, x, y, color, alpha=0.85, fill=True):
    ax.add_patch(Rectangle((x, y), 0.9, 0.9, facecolor=color if fill else "none",
                           edgecolor=EDGE, alpha=alpha, linewidth=0.8))


def kv_cache_diagram(step: int = 5, max_len: int = 8):
    """One generation step two ways: recomputing every score of the sequence, or
    computing one new row of scores against keys and values kept in a cache."""
    if not 1 <= step <= max_len:
        raise ValueError(f"step must lie in [1, max_len={max_len}], got {step}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    fig.patch.set_alpha(0)
    for ax, title in [(left, f"recompute: step {step} computes {step * (step + 1) // 2} scores"),
                      (right, f"KV cache: step {step} computes {step} scores")]:
        ax.set_title(title, fontsize=10, color=EDGE)
        ax.set_xlim(-1.5, max_len + 0.5)
        ax.set_ylim(-2.5, step + 0.5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.patch.set_alpha(0)
        ax.text(max_len / 2, -2.2, "keys (positions 0 ... t)", ha="center", fontsize=9,
                color=EDGE)
        ax.text(-1.2, step / 2, "queries", rotation=90, va="center", fontsize=9, color=EDGE)
    for row in range(step):  # row 0 at the top
        y = step - 1 - row
        for col in range(max_len):
            if col <= row:
                _cell(left, col, y, QUERY)
                last = row == step - 1
                _cell(right, col, y, NEW if last else QUERY, alpha=0.85 if last else 0.15)
    for col in range(max_len):  # the cache itself, under the right panel
        filled = col < step - 1
        color = KEY if filled else (NEW if col == step - 1 else EMPTY)
        _cell(right, col, -1.3, color, alpha=0.85 if col < step else 0.25)
    right.text(max_len + 0.2, -0.85, "cache", fontsize=9, color=EDGE, va="center")
    right.text(step + 0.1, 0.45, "new query", fontsize=8, color=EDGE, va="center")
    return fig


def kv_sharing_diagram(n_heads: int = 8, groups: tuple[int, ...] = (8, 2, 1)):
    """Query heads (top) and the key/value heads they read (bottom), for each number of
    key/value heads in `groups`: n_heads is multi-head, 1 is multi-query, between is grouped."""
    for g in groups:
        if g < 1 or n_heads % g != 0:
            raise ValueError(f"every entry of groups must divide n_heads={n_heads}, got {g}")
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 2.6),
                             layout="constrained")
    fig.patch.set_alpha(0)
    axes = [axes] if len(groups) == 1 else list(axes)
    for ax, n_kv in zip(axes, groups):
        name = ("multi-head" if n_kv == n_heads else
                "multi-query" if n_kv == 1 else f"grouped-query, {n_kv} groups")
        ax.set_title(f"{name}\n{n_kv} key/value head{'s' if n_kv > 1 else ''}", fontsize=10,
                     color=EDGE)
        ax.set_xlim(-0.5, n_heads)
        ax.set_ylim(-0.6, 3.1)
        ax.axis("off")
        ax.patch.set_alpha(0)
        width = n_heads / n_kv
        for h in range(n_heads):
            _cell(ax, h, 1.7, QUERY)
            j = h // (n_heads // n_kv)
            ax.plot([h + 0.45, j * width + width / 2 - 0.05], [1.7, 0.9], color=EDGE,
                    linewidth=0.8)
        for j in range(n_kv):
            ax.add_patch(Rectangle((j * width + 0.05, 0), width - 0.2, 0.9, facecolor=KEY,
                                   edgecolor=EDGE, alpha=0.85))
        ax.text(-0.4, 2.85, "queries", fontsize=8, color=EDGE, va="center")
        ax.text(-0.4, -0.35, "keys and values (cached)", fontsize=8, color=EDGE, va="center")
    return fig


__all__ = ["kv_cache_diagram", "kv_sharing_diagram"]
