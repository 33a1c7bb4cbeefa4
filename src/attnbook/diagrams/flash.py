"""Diagrams of chapter 11, "FlashAttention": the online softmax and the tiles of the kernel.

Each function returns a matplotlib Figure with a transparent background and
mid-tone strokes and text, so that it reads on light and dark pages alike. The
tiles drawn are the ones `attnbook.flash.reference.tile_schedule` lists, the same
helpers the tiled forward pass loops over.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from attnbook.flash.reference import online_softmax_update, tile_schedule

INK = "#808080"  # mid-grey: text and strokes on light and dark pages
FULL_COLOR, MASKED_COLOR, SKIPPED_COLOR = "#2CA58D", "#E8A33D", "#808080"
PATH_COLOR, MAX_COLOR = "#4C9BE8", "#D9534F"
BLOCK_COLORS = ["#4C9BE8", "#E8A33D", "#2CA58D", "#8E6CC4", "#D9534F", "#C28E0E"]
_STYLE = {"text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK,
          "xtick.color": INK, "ytick.color": INK, "figure.facecolor": "none",
          "axes.facecolor": "none", "savefig.transparent": True}


def online_softmax_trace(x: torch.Tensor, block_size: int) -> plt.Figure:
    """One row of scores x (1-D), read in blocks: the scores as bars coloured by block,
    the running maximum m after each block as a step line, and the running sum l
    (relative to that m) written above each block."""
    if x.dim() != 1 or len(x) == 0:
        raise ValueError(f"x must be a non-empty 1-D row of scores, got shape {tuple(x.shape)}")
    x = x.detach().double().cpu()
    running_max = torch.tensor(float("-inf"), dtype=torch.float64)
    running_sum = torch.tensor(0.0, dtype=torch.float64)
    spread = max(1.0, (x.max() - min(0.0, x.min().item())).item())
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
        for number, start in enumerate(range(0, len(x), block_size)):
            block = x[start:start + block_size]
            positions = range(start, start + len(block))
            color = BLOCK_COLORS[number % len(BLOCK_COLORS)]
            ax.bar(positions, block.tolist(), color=color, alpha=0.6, width=0.8,
                   label=f"block {number + 1}")
            running_max, running_sum = online_softmax_update(running_max, running_sum, block)
            ax.hlines(running_max.item(), start - 0.4, start + len(block) - 0.6,
                      color=MAX_COLOR, linewidth=2.2,
                      label="running maximum m" if number == 0 else None)
            ax.text(start + (len(block) - 1) / 2, running_max.item() + 0.05 * spread,
                    f"m = {running_max.item():.2f}\nl = {running_sum.item():.2f}",
                    ha="center", va="bottom", fontsize=8, color=INK)
            if start:
                ax.axvline(start - 0.5, color=INK, linestyle=":", linewidth=1)
        lse = running_max + torch.log(running_sum)
        ax.axhline(lse.item(), color=PATH_COLOR, linestyle="--", linewidth=1.2,
                   label=f"log-sum-exp = m + log l = {lse.item():.2f}")
        ax.set(xlabel="position j in the row", ylabel="score $x_j$",
               title="the online softmax: one pass, a running maximum m and sum l")
        top = max(lse.item(), x.max().item())
        ax.set_ylim(min(0.0, x.min().item()) - 0.1 * spread, top + 0.45 * spread)
        ax.legend(fontsize=7, ncol=3, loc="upper left", frameon=False)
    return fig


def _draw_tiles(ax, n_queries: int, n_keys: int, block_q: int, block_k: int, causal: bool,
                title: str, highlight_row: int | None = None,
                highlight_col: int | None = None) -> None:
    """The score matrix (queries down, keys across) cut into tiles, coloured by what the
    forward pass does with each; numbers give the visiting order along a highlighted
    query block (row of tiles: the forward) or key block (column: the backward)."""
    visited = {(qs // block_q, ks // block_k): masked
               for qs, _, ks, _, masked in tile_schedule(n_queries, n_keys, block_q, block_k,
                                                         causal)}
    rows, cols = math.ceil(n_queries / block_q), math.ceil(n_keys / block_k)
    for r in range(rows):
        for c in range(cols):
            x, y = c * block_k, r * block_q
            w, h = min(block_k, n_keys - x), min(block_q, n_queries - y)
            if (r, c) not in visited:
                face, alpha, hatch = SKIPPED_COLOR, 0.12, "//"
            elif visited[r, c]:
                face, alpha, hatch = MASKED_COLOR, 0.55, None
            else:
                face, alpha, hatch = FULL_COLOR, 0.55, None
            ax.add_patch(Rectangle((x, y), w, h, facecolor=face, alpha=alpha, hatch=hatch,
                                   edgecolor=INK, linewidth=0.8))
    if causal:  # the boundary: query i sees key j <= i + (Nk - Nq), cells [j, j + 1)
        offset = n_keys - n_queries
        ax.plot([offset + 1, n_keys], [0, n_queries - 1], color=MAX_COLOR, linewidth=1.6)
    order = []
    if highlight_row is not None:
        order = sorted(c for r, c in visited if r == highlight_row)
        cells = [(highlight_row, c) for c in order]
    elif highlight_col is not None:
        order = sorted(r for r, c in visited if c == highlight_col)
        cells = [(r, highlight_col) for r in order]
    for step, (r, c) in enumerate(cells if order else [], start=1):
        x = c * block_k + min(block_k, n_keys - c * block_k) / 2
        y = r * block_q + min(block_q, n_queries - r * block_q) / 2
        ax.text(x, y, str(step), ha="center", va="center", fontsize=9, color=INK,
                fontweight="bold")
    if order and len(cells) > 1:
        (r0, c0), (r1, c1) = cells[0], cells[-1]
        start = (c0 * block_k + 0.2 * block_k, r0 * block_q + 0.15 * block_q)
        end = (c1 * block_k + 0.8 * min(block_k, n_keys - c1 * block_k),
               r1 * block_q + 0.85 * min(block_q, n_queries - r1 * block_q))
        if highlight_row is not None:
            start, end = (start[0], start[1]), (end[0], start[1])
        else:
            start, end = (start[0], start[1]), (start[0], end[1])
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                     color=PATH_COLOR, linewidth=1.8))
    ax.set_xlim(0, n_keys)
    ax.set_ylim(n_queries, 0)  # query 0 at the top, as in a matrix
    ax.set_aspect("equal")
    ax.set_xlabel("keys j")
    ax.set_ylabel("queries i")
    ax.set_title(title, fontsize=9)


def flash_tiles(n_queries: int = 8 * 16, n_keys: int = 8 * 16, block_q: int = 16,
                block_k: int = 16, highlight: int = 5) -> plt.Figure:
    """Three views of the tiles of the score matrix: without a mask (the forward pass
    walks across one query block), causal (tiles above the diagonal skipped, tiles on
    it masked), and the causal backward pass (which walks down one key block)."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(11, 4.2), layout="constrained")
        _draw_tiles(axes[0], n_queries, n_keys, block_q, block_k, False,
                    f"forward: query block {highlight + 1}\nvisits every key block",
                    highlight_row=highlight)
        _draw_tiles(axes[1], n_queries, n_keys, block_q, block_k, True,
                    f"causal forward: query block {highlight + 1}\nskips the blocks above "
                    "the diagonal", highlight_row=highlight)
        col = min(highlight, math.ceil(n_keys / block_k) - 1)
        _draw_tiles(axes[2], n_queries, n_keys, block_q, block_k, True,
                    f"causal backward: key block {col + 1}\nvisits the query blocks below",
                    highlight_col=col)
        handles = [Patch(facecolor=FULL_COLOR, alpha=0.55, edgecolor=INK,
                         label="computed, no mask"),
                   Patch(facecolor=MASKED_COLOR, alpha=0.55, edgecolor=INK,
                         label="computed, masked (crosses the diagonal)"),
                   Patch(facecolor=SKIPPED_COLOR, alpha=0.12, hatch="//", edgecolor=INK,
                         label="skipped (above the diagonal)"),
                   plt.Line2D([], [], color=MAX_COLOR, label="causal boundary"),
                   plt.Line2D([], [], color=PATH_COLOR, marker=">", label="order of the loop")]
        fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=8,
                   frameon=False)
    return fig


def tiles_of_one_problem(n_queries: int, n_keys: int, block_q: int, block_k: int,
                         causal: bool, highlight_row: int | None = None) -> plt.Figure:
    """The tiles of one problem (unequal lengths allowed), as the forward pass sees them."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(5, 5 * n_queries / n_keys + 0.8), layout="constrained")
        kind = "causal" if causal else "no mask"
        _draw_tiles(ax, n_queries, n_keys, block_q, block_k, causal,
                    f"Nq = {n_queries}, Nk = {n_keys}, blocks {block_q} x {block_k}, {kind}",
                    highlight_row=highlight_row)
    return fig


def dkdv_ranges(n_queries: int, n_keys: int, block_m: int, block_n: int,
                causal: bool = True) -> list[tuple[int, int, str]]:
    """How a program of the dK/dV kernel (one key tile) splits the query tiles it visits,
    for every key tile: (key tile start, ...) -> the three ranges of query rows
    [first, unmasked_start) masked, [unmasked_start, whole_end) unmasked and
    [max(unmasked_start, whole_end), n_queries) ragged, as the kernel computes them.
    Returns, per key tile, a list of (start, stop, kind) with empty ranges left out."""
    whole_end = n_queries // block_m * block_m
    ranges = []
    for start_n in range(0, n_keys, block_n):
        if causal:
            offset = n_keys - n_queries
            first = max(start_n - offset, 0) // block_m * block_m
            unmasked = (start_n + block_n - 1 - offset + block_m - 1) // block_m * block_m
            unmasked = min(max(unmasked, first), n_queries)
        else:
            first = unmasked = 0
        parts = [(first, unmasked, "masked"), (unmasked, whole_end, "unmasked"),
                 (max(unmasked, whole_end), n_queries, "ragged")]
        ranges.append([(a, b, kind) for a, b, kind in parts if b > a])
    return ranges


RANGE_COLORS = {"masked": MASKED_COLOR, "unmasked": FULL_COLOR, "ragged": "#8E6CC4"}


def backward_kernel(n_queries: int = 120, n_keys: int = 120, block_m: int = 16,
                    block_n: int = 16, key_block: int = 5) -> plt.Figure:
    """The dK/dV kernel of the causal backward pass. Left: the program grid (one program
    per key tile, axis 0, and per batch and key/value head, axis 1) over the score matrix,
    with the query tiles one program visits split into its three passes: the tiles the
    diagonal crosses (masked), the tiles wholly below it (no mask) and the ragged last
    tile (bounds only). Right: what flows through one program."""
    ranges = dkdv_ranges(n_queries, n_keys, block_m, block_n, causal=True)
    if not 0 <= key_block < len(ranges):
        raise ValueError(f"key_block must be in [0, {len(ranges)}), got {key_block}")
    with plt.rc_context(_STYLE):
        fig, (ax, flow) = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained",
                                       gridspec_kw={"width_ratios": [1, 1.25]})
        _draw_tiles(ax, n_queries, n_keys, block_m, block_n, True,
                    f"dK, dV kernel: program_id(0) = {key_block} owns key tile "
                    f"{key_block + 1}\nand walks down the query tiles in three passes")
        x0 = key_block * block_n
        width = min(block_n, n_keys - x0)
        for start, stop, kind in ranges[key_block]:
            ax.add_patch(Rectangle((x0, start), width, stop - start, fill=False,
                                   edgecolor=RANGE_COLORS[kind], linewidth=3))
            ax.annotate(f"{kind}\nrows {start}-{stop - 1}", xy=(x0 + width, (start + stop) / 2),
                        xytext=(n_keys + 0.3 * block_n, (start + stop) / 2),
                        fontsize=8, color=INK, va="center",
                        arrowprops={"arrowstyle": "-", "color": RANGE_COLORS[kind]})
        for c in range(len(ranges)):  # the grid of programs along the keys
            ax.text(c * block_n + min(block_n, n_keys - c * block_n) / 2, 0.3 * block_m,
                    f"pid\n{c}", ha="center", va="center", fontsize=6.5, color=INK)
        flow.set_axis_off()
        flow.set_xlim(0, 10)
        flow.set_ylim(0, 10)
        boxes = [
            (5, 9.0, "loaded once per program:\nK tile, V tile  (BLOCK_N x d)", PATH_COLOR),
            (5, 6.9, "per query tile:  Q, dO  (BLOCK_M x d),\n"
                     "L (log-sum-exp), D = rowsum(dO * O)  (BLOCK_M)", PATH_COLOR),
            (5, 4.5, "recomputed, never stored:\nS^T = K Q^T scale,  P^T = exp(S^T - L)\n"
                     "dP^T = V dO^T,  dS^T = P^T * (dP^T - D)", MASKED_COLOR),
            (5, 2.2, "accumulated in registers:\ndV += P^T dO,   dK += dS^T Q", FULL_COLOR),
            (5, 0.5, "stored once: dK * scale, dV", FULL_COLOR),
        ]
        for x, y, text, color in boxes:
            flow.text(x, y, text, ha="center", va="center", fontsize=8.5, color=INK,
                      bbox={"boxstyle": "round,pad=0.4", "facecolor": "none",
                            "edgecolor": color, "linewidth": 1.6})
        for y0, y1 in [(8.35, 7.6), (6.25, 5.45), (3.55, 2.85), (1.6, 0.95)]:
            flow.add_patch(FancyArrowPatch((5, y0), (5, y1), arrowstyle="-|>",
                                           mutation_scale=12, color=INK, linewidth=1.2))
        flow.set_title("one program of the dK, dV kernel", fontsize=9)
        handles = [Patch(facecolor="none", edgecolor=RANGE_COLORS[k], linewidth=3,
                         label=f"{k} pass") for k in ("masked", "unmasked", "ragged")]
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8,
                   frameon=False)
    return fig
