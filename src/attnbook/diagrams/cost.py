"""Diagrams of chapter 10, "The cost of attention": where the bytes go, and the roofline.

Each function returns a matplotlib Figure with a transparent background and
mid-tone strokes and text, so that it reads on light and dark pages alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from attnbook.cost import (
    GPU,
    H100_SXM,
    arithmetic_intensity,
    attainable_flops,
    attention_flops,
    package_attention_hbm_bytes,
    plain_attention_hbm_bytes,
    tiled_attention_hbm_bytes,
)

INK = "#808080"  # mid-grey: text and strokes on light and dark pages
HBM_COLOR, CHIP_COLOR, BIG_COLOR = "#4C9BE8", "#E8A33D", "#D9534F"
PLAIN_COLOR, TILED_COLOR, MATMUL_COLOR = "#D9534F", "#2CA58D", "#8E6CC4"
_STYLE = {"text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK,
          "xtick.color": INK, "ytick.color": INK, "figure.facecolor": "none",
          "axes.facecolor": "none", "savefig.transparent": True}


def _box(ax, x, y, w, h, text, color, fontsize=9, alpha=0.35, text_color=None):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor=color, alpha=alpha, linewidth=1.5))
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor="none", edgecolor=color, linewidth=1.5))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            color=text_color or INK)


def _arrow(ax, start, end, color=INK, label=None, width=1.4):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                 color=color, linewidth=width, shrinkA=2, shrinkB=2))
    if label:
        ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, label, fontsize=7,
                color=color, va="center")


def attention_traffic() -> plt.Figure:
    """Plain attention as three kernels that write and read two N x N matrices in HBM,
    next to the tiled algorithm, one kernel whose tiles of scores never leave the chip."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained",
                                 gridspec_kw={"width_ratios": [1.35, 1]})
        for ax in axes:
            ax.set_xlim(0, 10)
            ax.set_ylim(-0.4, 4.6)
            ax.axis("off")
            ax.add_patch(Rectangle((0.05, 2.55), 9.9, 1.75, facecolor=HBM_COLOR, alpha=0.08,
                                   edgecolor=HBM_COLOR, linestyle="--"))
            ax.text(0.2, 4.1, "HBM (GPU memory): large, slow", fontsize=8, color=HBM_COLOR,
                    va="center")
            ax.add_patch(Rectangle((0.05, -0.3), 9.9, 1.65, facecolor=CHIP_COLOR, alpha=0.08,
                                   edgecolor=CHIP_COLOR, linestyle="--"))
            ax.text(0.2, -0.12, "on chip (SRAM, registers): small, fast", fontsize=8,
                    color=CHIP_COLOR, va="center")

        ax = axes[0]
        ax.set_title("plain attention: three kernels\n4N² + 4Nd elements cross the bus",
                     color=INK, fontsize=10)
        _box(ax, 0.3, 2.9, 0.9, 0.8, "Q\nN×d", HBM_COLOR)
        _box(ax, 1.4, 2.9, 0.9, 0.8, "K\nN×d", HBM_COLOR)
        _box(ax, 2.9, 2.75, 1.6, 1.1, "S\nN×N", BIG_COLOR, fontsize=10)
        _box(ax, 5.1, 2.75, 1.6, 1.1, "P\nN×N", BIG_COLOR, fontsize=10)
        _box(ax, 7.3, 2.9, 0.9, 0.8, "V\nN×d", HBM_COLOR)
        _box(ax, 8.7, 2.9, 0.9, 0.8, "O\nN×d", HBM_COLOR)
        _box(ax, 0.8, 0.2, 2.2, 0.8, "1: S = QKᵀ/√d", CHIP_COLOR)
        _box(ax, 3.9, 0.2, 2.2, 0.8, "2: P = softmax(S)", CHIP_COLOR)
        _box(ax, 7.0, 0.2, 2.2, 0.8, "3: O = PV", CHIP_COLOR)
        _arrow(ax, (0.75, 2.9), (1.5, 1.0))
        _arrow(ax, (1.85, 2.9), (2.0, 1.0))
        _arrow(ax, (2.6, 1.0), (3.4, 2.75), BIG_COLOR, "write N²")
        _arrow(ax, (3.9, 2.75), (4.5, 1.0), BIG_COLOR, "read N²")
        _arrow(ax, (5.5, 1.0), (5.8, 2.75), BIG_COLOR, "write N²")
        _arrow(ax, (6.3, 2.75), (7.4, 1.0), BIG_COLOR, "read N²")
        _arrow(ax, (7.75, 2.9), (7.9, 1.0))
        _arrow(ax, (8.6, 1.0), (9.1, 2.9))

        ax = axes[1]
        ax.set_title("tiled (FlashAttention): one kernel\n2Nd(1 + N/B_q) elements; "
                     "4Nd if K, V stay in cache",
                     color=INK, fontsize=10)
        for i, name in enumerate("QKVO"):
            _box(ax, 0.8 + 2.2 * i, 2.9, 1.1, 0.8, f"{name}\nN×d", HBM_COLOR)
        _box(ax, 1.2, 0.1, 7.6, 1.0, "", CHIP_COLOR, alpha=0.2)
        ax.text(3.0, 0.6, "for each block of queries,\nfor each block of keys:\n"
                "S, P of one tile, O updated", fontsize=7.5, ha="center", va="center")
        for i in range(3):
            for j in range(3):
                color = BIG_COLOR if (i, j) == (1, 2) else INK
                ax.add_patch(Rectangle((5.6 + 0.32 * j, 0.2 + 0.27 * (2 - i)), 0.28, 0.23,
                                       facecolor=color, alpha=0.6 if color == BIG_COLOR else 0.2,
                                       edgecolor=color))
        ax.text(7.25, 0.6, "B×B tile\nof S", fontsize=7.5, ha="left", va="center", color=BIG_COLOR)
        for i in range(3):
            _arrow(ax, (1.35 + 2.2 * i, 2.9), (2.0 + 2.0 * i, 1.1))
        _arrow(ax, (7.6, 1.1), (7.45, 2.9))
    return fig


Row = dict


def _dtype_bytes(name: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1}.get(
        str(name).replace("torch.", ""), 2)


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16}.get(
        str(name).replace("torch.", ""), torch.bfloat16)


def _is_plain(impl: str) -> bool:
    return any(word in impl.lower() for word in ("plain", "naive", "eager", "math", "reference"))


def measured_intensity(row: Row, block_q: int = 128) -> float:
    """Arithmetic intensity of a measured forward pass (a row of benchmark results, with
    keys "impl", "B", "H", "N", "d", "dtype"): for "plain", the package's own
    `scaled_dot_product_attention`, the bytes it moves as implemented
    (`cost.package_attention_hbm_bytes`, one kernel per operation); the three-kernel plain
    model for another implementation whose name says plain / naive / eager / math /
    reference; else the tiled model with `block_q` queries per block. A forward+backward
    row is placed at its forward intensity."""
    n, d, heads = int(row["N"]), int(row["d"]), int(row["B"]) * int(row["H"])
    size = _dtype_bytes(row.get("dtype", "bfloat16"))
    flops = attention_flops(n, d, batch_heads=heads)
    if str(row["impl"]) == "plain":
        moved = package_attention_hbm_bytes(n, d, heads, _torch_dtype(row.get("dtype", "")))
    elif _is_plain(str(row["impl"])):
        moved = plain_attention_hbm_bytes(n, d, heads, size)
    else:
        moved = tiled_attention_hbm_bytes(n, d, heads, size, block_q=min(block_q, n))
    return arithmetic_intensity(flops, moved)


def _point_color(label: str) -> str:
    """The colour of a point on the roofline, by the kind of kernel its label names."""
    label = label.lower()
    for word, color in [("matmul", MATMUL_COLOR), ("matrix multiply", MATMUL_COLOR),
                        ("tiled", TILED_COLOR), ("flash", TILED_COLOR), ("plain", PLAIN_COLOR)]:
        if word in label:
            return color
    return INK


def roofline(points: dict[str, float], gpu: GPU = H100_SXM, other_gpus: Iterable[GPU] = (),
             measured: Iterable[Row] | None = None,
             intensity_of: Callable[[Row], float] = measured_intensity) -> plt.Figure:
    """The roofline of `gpu`: attainable TFLOP/s against arithmetic intensity (FLOP/byte).

    `points` maps a label to an intensity; each is drawn on the roof, where it would run
    at best, coloured by the kind of kernel its label names (plain, tiled, matmul), with
    a different marker for each point of the same kind. `other_gpus` adds their roofs as
    thinner lines. `measured` (rows of benchmark results with "impl", "N", "d", "B", "H",
    "dtype", "tflops", "pass") adds each measured speed at `intensity_of(row)`, one marker per implementation.
    """
    intensities = np.logspace(0, 5, 400)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
        for other in other_gpus:
            roof = [attainable_flops(i, other) / 1e12 for i in intensities]
            ax.plot(intensities, roof, color=INK, linewidth=1, linestyle="--",
                    label=f"{other.name}: {other.bandwidth / 1e12:.2f} TB/s")
        roof = [attainable_flops(i, gpu) / 1e12 for i in intensities]
        ax.plot(intensities, roof, color=HBM_COLOR, linewidth=2.5,
                label=f"{gpu.name}: {gpu.peak_flops / 1e12:.0f} TFLOP/s, "
                      f"{gpu.bandwidth / 1e12:.2f} TB/s")
        ax.axvline(gpu.ridge, color=HBM_COLOR, linewidth=0.8, linestyle=":")
        ax.text(gpu.ridge * 1.08, 3, f"ridge: {gpu.ridge:.0f} FLOP/B", color=HBM_COLOR,
                fontsize=8, rotation=90, va="bottom")
        ax.text(1.5, 60, "memory-bound\n(left of the ridge)", color=INK, fontsize=8)
        ax.text(gpu.ridge * 1.3, gpu.peak_flops / 1e12 * 1.3, "compute-bound (right of the ridge)",
                color=INK, fontsize=8)
        families = {}  # a colour per kind of point, a marker per point of that kind
        for label, intensity in points.items():
            color = _point_color(label)
            marker = "oDhp"[families.get(color, 0) % 4]
            families[color] = families.get(color, 0) + 1
            shown = f"{intensity:.0f}" if intensity >= 10 else f"{intensity:.1f}"
            ax.plot(intensity, attainable_flops(intensity, gpu) / 1e12, marker, markersize=8,
                    color=color, label=f"{label}: {shown} FLOP/B")
        if measured is not None:
            markers = iter("s^vDP*X")
            by_impl: dict[str, list[Row]] = {}
            for row in measured:
                by_impl.setdefault(str(row["impl"]), []).append(row)
            for impl, rows in by_impl.items():
                ax.plot([intensity_of(r) for r in rows], [float(r["tflops"]) for r in rows],
                        next(markers, "o"), markersize=6, fillstyle="none", linestyle="none",
                        label=f"measured: {impl}")
        ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte of HBM)",
               ylabel="attainable TFLOP/s", ylim=(1, gpu.peak_flops / 1e12 * 2.5),
               xlim=(intensities[0], intensities[-1]))
        ax.grid(alpha=0.25, color=INK)
        legend = ax.legend(fontsize=7.5, loc="lower right", framealpha=0)
        for text in legend.get_texts():
            text.set_color(INK)
    return fig
