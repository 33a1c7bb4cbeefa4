"""Diagrams of chapter 8: the Transformer, built up block by block.

`sublayer_diagram(norm)` draws one sub-layer with its residual connection, in the
post-norm or pre-norm arrangement. `transformer_diagram(stage)` draws the model as
the chapter builds it: stage "encoder" (the encoder stack alone), "decoder" (the
decoder stack, with its masked self-attention and cross-attention) and "model" (both,
with the output layer). Colours are mid-tones on a transparent background, so the
figures read in light and dark mode.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

INK = "#808080"  # strokes and text: mid-grey reads on white and on black
COLOURS = {
    "attention": "#e0a030",
    "masked": "#d06050",
    "cross": "#9070c0",
    "ff": "#4a90d0",
    "norm": "#50a878",
    "embed": "#a0a0a0",
    "out": "#c080a0",
}
STAGES = ("encoder", "decoder", "model")


def _box(ax, x, y, text, kind, width=2.8, height=0.5):
    patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                           boxstyle="round,pad=0.02,rounding_size=0.08",
                           facecolor=COLOURS[kind], edgecolor=INK, alpha=0.55, linewidth=1.2,
                           gid=text)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=9, color="black")
    return patch


def _arrow(ax, start, end, style="-|>", connection="arc3", dashed=False):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=INK,
                                 connectionstyle=connection, linewidth=1.2,
                                 linestyle="--" if dashed else "-"))


def _frame(width: float, height: float) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(width, height))
    fig.patch.set_alpha(0)
    ax.patch.set_alpha(0)
    ax.set_axis_off()
    return fig, ax


def sublayer_diagram(norm: str = "post", ax: plt.Axes | None = None) -> Figure:
    """One sub-layer f with its residual connection: post-norm LayerNorm(x + f(x))
    or pre-norm x + f(LayerNorm(x)). Draws on `ax` when given."""
    if norm not in ("post", "pre"):
        raise ValueError(f"norm must be 'post' or 'pre', got {norm!r}")
    if ax is None:
        fig, ax = _frame(3.2, 4.2)
    else:
        fig = ax.figure
        fig.patch.set_alpha(0)
        ax.patch.set_alpha(0)
        ax.set_axis_off()
    ax.set_xlim(-2, 2)
    ax.set_ylim(-0.2, 5.2)
    ax.text(0, 0.1, "x", ha="center", fontsize=11, color=INK)
    if norm == "post":
        layers = [(1.6, "sub-layer f", "attention"), (2.7, "dropout", "embed"),
                  (3.8, "add", "embed"), (4.7, "LayerNorm", "norm")]
        add_y = 3.8
    else:
        layers = [(1.2, "LayerNorm", "norm"), (2.2, "sub-layer f", "attention"),
                  (3.2, "dropout", "embed"), (4.4, "add", "embed")]
        add_y = 4.4
    previous = 0.35
    for y, text, kind in layers:
        _box(ax, 0, y, text, kind)
        _arrow(ax, (0, previous), (0, y - 0.25))
        previous = y + 0.25
    _arrow(ax, (-1.5, 0.6), (-1.3, add_y), connection="arc3,rad=-0.25")  # the residual path
    ax.text(-1.85, (0.6 + add_y) / 2, "residual", rotation=90, va="center", color=INK, fontsize=9)
    ax.set_title(f"{norm}-norm", color=INK)
    return fig


def _stack(ax, x, bottom, rows, label, label_side="left"):
    """Boxes from bottom to top, joined by arrows, inside a frame marked `label` (e.g. 'N x')
    on its `label_side`."""
    y = bottom
    centres = []
    for text, kind in rows:
        _box(ax, x, y, text, kind)
        centres.append(y)
        y += 0.8
    for lower, upper in zip(centres, centres[1:]):
        _arrow(ax, (x, lower + 0.25), (x, upper - 0.25))
    ax.add_patch(FancyBboxPatch((x - 1.6, bottom - 0.45), 3.2, y - bottom - 0.1,
                                boxstyle="round,pad=0.02,rounding_size=0.15", fill=False,
                                edgecolor=INK, linewidth=1.0, linestyle=":"))
    side = -1 if label_side == "left" else 1
    ax.text(x + side * 1.75, bottom + (y - bottom) / 2 - 0.4, label,
            ha="right" if side < 0 else "left", va="center", color=INK, fontsize=10)
    return centres


def _inputs(ax, x, text, note):
    """The two boxes under a stack (embedding, positions) and a note saying what is fed."""
    ax.text(x, -0.75, note, ha="center", va="center", color=INK, fontsize=8)
    _arrow(ax, (x, -0.5), (x, -0.25))
    _box(ax, x, 0.0, text, "embed")
    _box(ax, x, 0.8, "+ sinusoidal positions", "embed")
    _arrow(ax, (x, 0.25), (x, 0.55))


def transformer_diagram(stage: str = "model", norm: str = "post") -> Figure:
    """The encoder-decoder Transformer as the chapter builds it.

    stage "encoder": the encoder stack; "decoder": the decoder stack, reading an
    encoder it does not show; "model": both, with the output layer. The decoder's
    input is the target shifted right (<bos> first); the encoder's outputs leave the
    top of its stack and are the keys and values of every cross-attention.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if norm not in ("post", "pre"):
        raise ValueError(f"norm must be 'post' or 'pre', got {norm!r}")
    add_norm = "add & LayerNorm" if norm == "post" else "add (LayerNorm before)"
    show_encoder, show_decoder = stage in ("encoder", "model"), stage in ("decoder", "model")
    fig, ax = _frame(7.5 if stage == "model" else 4.2, 7.0)
    xs = {"encoder": 0.0, "decoder": 5.2 if stage == "model" else 0.0}
    left = -3.4 if stage == "decoder" else -2.6
    ax.set_xlim(left, (xs["decoder"] if show_decoder else 0) + (2.0 if stage == "decoder" else 2.6))
    ax.set_ylim(-1.1, 8.6)
    if show_encoder:
        x = xs["encoder"]
        _inputs(ax, x, "source embedding × √D", "the source characters")
        rows = [("encoder self-attention", "attention"), (add_norm, "norm"),
                ("feed-forward", "ff"), (add_norm, "norm")]
        centres = _stack(ax, x, 2.0, rows, "N ×")
        _arrow(ax, (x, 1.05), (x, centres[0] - 0.25))
        out_y = centres[-1] + 0.85  # above the stack's frame
        _arrow(ax, (x, centres[-1] + 0.25), (x, out_y))
        ax.text(x, out_y + 0.3, "encoder outputs (memory)", ha="center", va="center",
                color=INK, fontsize=9)
    if show_decoder:
        x = xs["decoder"]
        _inputs(ax, x, "output embedding × √D", "the target shifted right: <bos>, y₁, y₂, …")
        rows = [("masked self-attention", "masked"), (add_norm, "norm"),
                ("cross-attention", "cross"), (add_norm, "norm"),
                ("feed-forward", "ff"), (add_norm, "norm")]
        centres = _stack(ax, x, 2.0, rows, "N ×", label_side="right")
        _arrow(ax, (x, 1.05), (x, centres[0] - 0.25))
        cross_left = (x - 1.4, centres[2])
        if show_encoder:
            # from the encoder's output, across the gap, into every cross-attention
            gap_x = (xs["encoder"] + 1.6 + x - 1.6) / 2
            ax.plot([xs["encoder"], xs["encoder"], gap_x, gap_x],
                    [out_y, out_y + 0.05, out_y + 0.05, centres[2]], color=INK,
                    linewidth=1.2, solid_capstyle="butt")
            _arrow(ax, (gap_x, centres[2]), cross_left)
            ax.text(gap_x + 0.12, (centres[2] + out_y) / 2 + 0.15, "keys and values", rotation=90,
                    ha="left", va="center", color=INK, fontsize=9)
        else:
            _arrow(ax, (x - 3.35, centres[2]), cross_left, dashed=True)
            ax.text(x - 3.35, centres[2] + 0.15, "encoder outputs\n(keys, values)",
                    ha="left", va="bottom", color=INK, fontsize=8)
        if stage == "model":
            _box(ax, x, centres[-1] + 0.95, "linear → softmax", "out")
            _arrow(ax, (x, centres[-1] + 0.25), (x, centres[-1] + 0.7))
            ax.text(x, centres[-1] + 1.45, "next-character probabilities", ha="center",
                    color=INK, fontsize=9)
    titles = {"encoder": "the encoder", "decoder": "the decoder", "model": "the Transformer"}
    ax.set_title(f"{titles[stage]} ({norm}-norm)", color=INK)
    return fig


def box_labels(fig: Figure) -> list[str]:
    """The text of every labelled box and note in a diagram (for tests and alt text)."""
    return [t.get_text() for ax in fig.axes for t in ax.texts]
