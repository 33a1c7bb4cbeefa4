"""Diagrams of ring attention (chapter 12): the ring of processes, who computes which
block of the score matrix at which step, and the bytes each step sends.

Each function returns a matplotlib Figure with a transparent background and mid-tone
strokes and text, so that it reads on light and dark pages alike. What is drawn comes
from `attnbook.ring` (ring_block_plan, chunks_of_rank, work_per_rank), the same code
the ring runs.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, Patch, Rectangle

from attnbook.ring import chunks_of_rank, ring_block_plan, visible_pairs, work_per_rank

INK = "#808080"  # mid-grey: text and strokes on light and dark pages
RANK_COLORS = ["#4C9BE8", "#E8A33D", "#2CA58D", "#D9534F", "#8E6CC4", "#C28E0E"]
HIDDEN_COLOR = "#808080"
_STYLE = {"text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK,
          "xtick.color": INK, "ytick.color": INK, "figure.facecolor": "none",
          "axes.facecolor": "none", "savefig.transparent": True}


def _check_world(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) \
            or not 1 <= world_size <= len(RANK_COLORS):
        raise ValueError(f"world_size must be an int from 1 to {len(RANK_COLORS)}, got "
                         f"{world_size!r}")


def rank_color(rank: int) -> str:
    return RANK_COLORS[rank % len(RANK_COLORS)]


def ring_steps(world_size: int = 4) -> plt.Figure:
    """One panel per ring step: the W ranks on a circle, each keeping its own query block
    Q_r and holding the key/value block KV_src of rank src = (r - step) mod W; arrows
    show the transfer that follows the step (r sends to r + 1). The block a rank holds
    is drawn in its owner's colour."""
    _check_world(world_size)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, world_size, figsize=(3.1 * world_size, 3.4),
                                 layout="constrained", squeeze=False)
        for step, ax in enumerate(axes[0]):
            ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal")
            ax.axis("off")
            ax.set_title(f"step {step}", color=INK)
            where = {}
            for rank in range(world_size):
                angle = math.pi / 2 - 2 * math.pi * rank / world_size
                x, y = math.cos(angle), math.sin(angle)
                where[rank] = (x, y)
                src = (rank - step) % world_size
                ax.add_patch(Circle((x, y), 0.42, facecolor=rank_color(rank), alpha=0.3,
                                    edgecolor=rank_color(rank), linewidth=2))
                ax.text(x, y + 0.13, f"rank {rank}\nQ{rank}", ha="center", va="center",
                        fontsize=8, color=INK)
                ax.text(x, y - 0.2, f"KV{src}", ha="center", va="center", fontsize=9,
                        fontweight="bold", color=rank_color(src))
            if world_size > 1 and step < world_size - 1:
                for rank in range(world_size):
                    (x0, y0), (x1, y1) = where[rank], where[(rank + 1) % world_size]
                    ax.add_patch(FancyArrowPatch(
                        (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                        shrinkA=24, shrinkB=24, color=INK, linewidth=1.3,
                        connectionstyle="arc3,rad=-0.25"))
            elif world_size > 1:
                ax.text(0, 0, "every rank\nhas seen\nevery block", ha="center", va="center",
                        fontsize=8, color=INK)
        fig.suptitle(f"ring attention, W = {world_size}: the queries stay, the key/value "
                     "blocks travel to the next rank after each step", color=INK)
    return fig


def _block_cells(world_size: int, layout: str, causal: bool):
    """(query chunk, key chunk, computing rank, step, masked) for every chunk pair a ring
    computes, in the chunks of the layout (W of them, or 2W for zigzag)."""
    pieces = world_size if layout == "contiguous" else 2 * world_size
    n_local = pieces // world_size  # one position per chunk: plans in chunk units
    cells = []
    for rank in range(world_size):
        mine = chunks_of_rank(rank, world_size, layout)
        for step in range(world_size):
            theirs = chunks_of_rank((rank - step) % world_size, world_size, layout)
            for q0, q1, k0, k1, masked in ring_block_plan(rank, step, world_size, n_local,
                                                          layout, causal):
                for qc in mine[q0:q1]:
                    for kc in theirs[k0:k1]:
                        if causal and kc > qc:
                            continue  # inside a masked block: the hidden corner
                        cells.append((qc, kc, rank, step, masked and kc == qc))
    return pieces, cells


def _draw_matrix(ax, world_size: int, layout: str, causal: bool) -> None:
    pieces, cells = _block_cells(world_size, layout, causal)
    for qc in range(pieces):
        for kc in range(pieces):
            if causal and kc > qc:
                ax.add_patch(Rectangle((kc, qc), 1, 1, facecolor=HIDDEN_COLOR, alpha=0.12,
                                       edgecolor=INK, linewidth=0.5))
    for qc, kc, rank, step, masked in cells:
        ax.add_patch(Rectangle((kc, qc), 1, 1, facecolor=rank_color(rank),
                               alpha=0.35 if masked else 0.65, edgecolor=INK,
                               linewidth=0.5, hatch="//" if masked else None))
        ax.text(kc + 0.5, qc + 0.5, str(step), ha="center", va="center", fontsize=9,
                color=INK)
    ax.set(xlim=(0, pieces), ylim=(pieces, 0), aspect="equal",
           xticks=[c + 0.5 for c in range(pieces)], yticks=[c + 0.5 for c in range(pieces)],
           xticklabels=range(pieces), yticklabels=range(pieces),
           xlabel="key chunk", ylabel="query chunk")
    ax.tick_params(length=0, labelsize=9)


def ring_work_split(world_size: int = 4, n_local: int = 1024) -> plt.Figure:
    """The causal score matrix in chunks, each computed chunk pair coloured by the rank
    that computes it and labelled with the ring step (hatched: on the diagonal, with the
    causal mask; grey: hidden, skipped), for the contiguous split (W chunks) and the
    zigzag split (2W chunks); and the query-key pairs per rank of each, for blocks of
    n_local positions per rank (work_per_rank)."""
    _check_world(world_size)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained",
                                 gridspec_kw={"width_ratios": [1, 1, 0.9]})
        for ax, layout in zip(axes[:2], ("contiguous", "zigzag")):
            _draw_matrix(ax, world_size, layout, causal=True)
            ax.set_title(f"{layout} split: who computes what (numbers: step)", fontsize=10,
                         color=INK)
        n = n_local * world_size
        width = 0.38
        ranks = list(range(world_size))
        biggest = max(work_per_rank(n, world_size, "contiguous", causal=True))
        unit, unit_name = (1e6, "millions") if biggest >= 1e6 else (1e3, "thousands")
        for offset, layout in ((-width / 2, "contiguous"), (width / 2, "zigzag")):
            work = work_per_rank(n, world_size, layout, causal=True)
            axes[2].bar([r + offset for r in ranks], [w / unit for w in work], width,
                        color=[rank_color(r) for r in ranks],
                        alpha=0.65 if layout == "contiguous" else 0.35,
                        hatch=None if layout == "contiguous" else "..", edgecolor=INK,
                        label=f"{layout}: max/min = {max(work) / min(work):.2f}")
        axes[2].set(xticks=ranks, xticklabels=[f"rank {r}" for r in ranks],
                    ylabel=f"query-key pairs scored ({unit_name})",
                    title=f"work per rank, causal, N = {n}")
        axes[2].title.set_fontsize(10)
        axes[2].legend(fontsize=8, frameon=False, loc="upper left")
        handles = [Patch(facecolor=rank_color(r), alpha=0.65, label=f"rank {r}")
                   for r in ranks]
        handles.append(Patch(facecolor=HIDDEN_COLOR, alpha=0.12, label="hidden: skipped"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                   frameon=False, fontsize=8)
    return fig


def ring_traffic(forward_bytes: list[list[int]], backward_bytes: list[list[int]] | None = None,
                 formula_bytes: int | None = None) -> plt.Figure:
    """Bytes each rank sends at each ring step, as grouped bars: forward_bytes[r][s] (and
    backward_bytes[r][s], the keys and values with their gradients), with the formula's
    bytes per step (ring_traffic_bytes) as a dashed line."""
    if not forward_bytes or any(len(row) != len(forward_bytes[0]) for row in forward_bytes):
        raise ValueError("forward_bytes must hold one equal-length list of bytes per step "
                         "for every rank")
    passes = [("forward", forward_bytes)]
    if backward_bytes is not None:
        passes.append(("backward", backward_bytes))
    world_size, steps = len(forward_bytes), len(forward_bytes[0])
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(passes), figsize=(5.2 * len(passes), 3.4),
                                 layout="constrained", squeeze=False, sharey=True)
        width = 0.8 / world_size
        for ax, (name, table) in zip(axes[0], passes):
            for rank, row in enumerate(table):
                ax.bar([s - 0.4 + width * (rank + 0.5) for s in range(steps)],
                       [b / 1024 for b in row], width, color=rank_color(rank), alpha=0.65,
                       label=f"rank {rank}")
            if formula_bytes is not None:
                ax.axhline(formula_bytes / 1024, color=INK, linestyle="--", linewidth=1.2,
                           label="formula: 2 B H_kv N_local d x itemsize")
            ax.set(xticks=range(steps), xlabel="ring step", title=f"{name} pass")
            ax.title.set_fontsize(10)
        axes[0][0].set_ylabel("KiB sent by each rank")
        axes[0][0].legend(fontsize=8, frameon=False)
    return fig


def pairs_of_cells(world_size: int, layout: str) -> dict[int, int]:
    """Chunk pairs each rank computes (a diagonal pair counting half, by visible_pairs of
    a 2 x 2 block: used by the tests to tie the drawing to the work per rank)."""
    _, cells = _block_cells(world_size, layout, causal=True)
    count = {r: 0 for r in range(world_size)}
    for _, _, rank, _, masked in cells:
        count[rank] += visible_pairs(2, 2, True) if masked else 4
    return count


__all__ = ["ring_steps", "ring_work_split", "ring_traffic", "rank_color", "RANK_COLORS",
           "HIDDEN_COLOR", "pairs_of_cells"]
