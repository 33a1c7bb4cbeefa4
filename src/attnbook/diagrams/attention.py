"""Diagrams of chapters 4 and 5: attention as a soft lookup, the masks on the score
matrix, and how self-attention, recurrence and convolution mix positions.

`soft_lookup_diagram()` puts a dictionary lookup beside attention on one small
example whose numbers the package computes (`attention.scaled_dot_product_attention`).
`score_mask_diagram()` draws the padding and causal masks of `attention.padding_mask`
and `attention.causal_mask` (True = may attend) on the query x key grid and their
logical and. `mixing_diagram()` draws how one output position draws on the inputs
in each kind of layer, with the three columns of Vaswani et al.'s Table 1.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch, Rectangle

from attnbook.attention import causal_mask, padding_mask, scaled_dot_product_attention
from attnbook.diagrams._draw import (
    COLOURS,
    FONT,
    INK,
    WIDTH,
    arrow,
    box,
    frame,
    note,
    texts,
    transparent,
)

__all__ = ["soft_lookup_diagram", "score_mask_diagram", "mixing_diagram", "lookup_numbers",
           "texts"]

ALLOWED, HIDDEN = "#4a90d0", "#a0a0a0"
PATH = "#d06050"


def lookup_numbers(query=(1.0, 2.0), keys=((2.0, 0.0), (0.0, 1.0), (1.0, 1.0), (-1.0, 1.0)),
                   values=(10.0, 20.0, 30.0, 40.0)) -> dict:
    """The numbers of the soft lookup: scores q . k_j / sqrt(d), weights and output, from
    the package's scaled_dot_product_attention."""
    q = torch.tensor([query], dtype=torch.float64)                 # (1, d)
    k = torch.tensor(keys, dtype=torch.float64)                    # (n, d)
    v = torch.tensor(values, dtype=torch.float64)[:, None]         # (n, 1)
    if k.shape[-1] != q.shape[-1] or len(values) != len(keys):
        raise ValueError(f"query {tuple(q.shape)}, keys {tuple(k.shape)} and "
                         f"{len(values)} values do not fit together")
    output, weights = scaled_dot_product_attention(q, k, v)
    scores = (q @ k.T / math.sqrt(q.shape[-1]))[0]
    return {"scores": scores.tolist(), "weights": weights[0].tolist(),
            "output": output.item()}


def _sub(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def _vector(v) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def soft_lookup_diagram(query=(1.0, 2.0),
                        keys=((2.0, 0.0), (0.0, 1.0), (1.0, 1.0), (-1.0, 1.0)),
                        values=(10.0, 20.0, 30.0, 40.0)) -> Figure:
    """A dictionary lookup (left: the query equals one key, whose value is returned)
    beside attention (right: the query is scored against every key, the softmax of the
    scores weights the values, and the output is their weighted sum)."""
    numbers = lookup_numbers(query, keys, values)
    n = len(keys)
    height = 1.5 + 0.42 * n
    fig, ax = frame(WIDTH, height, (0, WIDTH), (0, height))
    row_y = [height - 1.2 - 0.42 * j for j in range(n)]
    out_y = row_y[-1] - 0.5

    # left: a Python dict, exact matching
    months = ["Jan", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][:n]
    codes = {"Jan": "01", "Jun": "06", "Jul": "07", "Aug": "08", "Sep": "09", "Oct": "10",
             "Nov": "11", "Dec": "12"}
    note(ax, 1.35, height - 0.1, "hard lookup: a Python dict", va="top")
    box(ax, 1.35, height - 0.55, "query: 'Jun'", COLOURS["score"], 1.3, 0.32)
    for x, head in [(0.45, "key"), (1.35, "key == query?"), (2.3, "value")]:
        note(ax, x, row_y[0] + 0.3, head)
    for j, month in enumerate(months):
        hit = month == "Jun"
        box(ax, 0.45, row_y[j], f"'{month}'", COLOURS["encoder"], 0.6, 0.3)
        note(ax, 1.35, row_y[j], "1" if hit else "0")
        box(ax, 2.3, row_y[j], f"'{codes[month]}'", COLOURS["context"], 0.55, 0.3,
            alpha=0.9 if hit else 0.25)
    box(ax, 1.35, out_y, "output: '06'", COLOURS["output"], 1.3, 0.32)
    arrow(ax, (2.3, row_y[1] - 0.15), (1.85, out_y + 0.16))

    # right: attention, a weighted sum over every key
    x0 = 3.15
    cols = {"key": x0 + 0.5, "score": x0 + 1.4, "weight": x0 + 2.25, "value": x0 + 3.35}
    note(ax, x0 + 1.95, height - 0.1, "soft lookup: attention", va="top")
    box(ax, cols["key"] + 0.1, height - 0.55, f"query q = {_vector(query)}",
        COLOURS["score"], 1.3, 0.32)
    d = len(query)
    heads = {"key": "key", "score": f"q·kⱼ / √{d}", "weight": "αⱼ (softmax)", "value": "value"}
    for name, x in cols.items():
        note(ax, x, row_y[0] + 0.3, heads[name])
    for j in range(n):
        weight = numbers["weights"][j]
        box(ax, cols["key"], row_y[j], f"k{_sub(j + 1)} = {_vector(keys[j])}",
            COLOURS["encoder"], 1.0, 0.3)
        note(ax, cols["score"], row_y[j], f"{numbers['scores'][j]:.2f}")
        bar = 0.55 * weight / max(numbers["weights"])
        ax.add_patch(Rectangle((cols["weight"] - 0.35, row_y[j] - 0.11), bar, 0.22,
                               facecolor=COLOURS["score"], alpha=0.7, edgecolor="none"))
        note(ax, cols["weight"] - 0.3 + bar, row_y[j], f"{weight:.2f}", ha="left")
        box(ax, cols["value"], row_y[j], f"v{_sub(j + 1)} = {values[j]:g}",
            COLOURS["context"], 0.75, 0.3)
    box(ax, cols["weight"] + 0.2, out_y, f"output Σⱼ αⱼ vⱼ = {numbers['output']:.1f}",
        COLOURS["output"], 2.0, 0.32)
    arrow(ax, (cols["value"], row_y[-1] - 0.15), (cols["weight"] + 1.2, out_y + 0.16))
    ax.plot([3.0, 3.0], [out_y - 0.2, height - 0.1], color=INK, linewidth=0.8, linestyle=":")
    return fig


def _grid(ax, allowed: torch.Tensor, tokens, real: int, title: str, outline: bool) -> None:
    """One (queries x keys) grid: allowed cells filled, hidden ones hatched grey; the
    rows of padded queries outlined with a dashed line."""
    n_q, n_k = allowed.shape
    for i in range(n_q):
        for j in range(n_k):
            if allowed[i, j]:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=ALLOWED, alpha=0.6,
                                       edgecolor=INK, linewidth=0.6))
            else:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=HIDDEN, alpha=0.25,
                                       hatch="xx", edgecolor=INK, linewidth=0.6))
    if outline and real < n_q:
        ax.add_patch(Rectangle((0, real), n_k, n_q - real, fill=False, edgecolor=PATH,
                               linewidth=1.6, linestyle="--"))
    ax.set_xlim(0, n_k)
    ax.set_ylim(n_q, 0)  # query 0 at the top, as in a matrix
    ax.set_aspect("equal")
    ax.set_xticks([j + 0.5 for j in range(n_k)], tokens, fontsize=FONT, rotation=90)
    ax.set_yticks([i + 0.5 for i in range(n_q)], tokens, fontsize=FONT)
    ax.tick_params(length=0, colors=INK)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=FONT, color=INK, pad=4)


def score_mask_diagram(length: int = 3, n: int = 5,
                       tokens: tuple[str, ...] = ("I", "saw", "it")) -> Figure:
    """The score matrix of one sequence of `length` real tokens padded to `n`: queries
    down, keys across. The padding mask hides the padded keys' columns (the padded
    queries' rows, outlined, still get outputs, which the loss ignores); the causal
    mask hides the keys after each query (j > i); combined, a cell is kept only where
    both allow it. The cells come from `padding_mask` and `causal_mask`."""
    if not 1 <= length <= n:
        raise ValueError(f"length must lie in [1, n={n}], got {length}")
    if len(tokens) < length:
        raise ValueError(f"tokens must name the {length} real tokens, got {tokens}")
    names = list(tokens[:length]) + ["pad"] * (n - length)
    keys_real = padding_mask(torch.tensor([length]), n)[:, None, :][0]  # (1, n): per key
    causal = causal_mask(n)                                             # (n, n)
    both = keys_real & causal                                           # (n, n)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.3), layout="constrained")
    panels = [(keys_real.expand(n, n), "padding mask\nTrue where key j is real", True),
              (causal, "causal mask\nTrue where j ≤ i", False),
              (both, "both: padding & causal\n(a logical and)", True)]
    for ax, (allowed, title, outline) in zip(axes, panels):
        _grid(ax, allowed, names, length, title, outline)
    axes[0].set_ylabel("queries i", fontsize=FONT, color=INK)
    for ax in axes:
        ax.set_xlabel("keys j", fontsize=FONT, color=INK)
    handles = [Patch(facecolor=ALLOWED, alpha=0.6, edgecolor=INK, label="True: may attend"),
               Patch(facecolor=HIDDEN, alpha=0.25, hatch="xx", edgecolor=INK,
                     label="False: score −∞, weight 0"),
               Patch(facecolor="none", edgecolor=PATH, linestyle="--", linewidth=1.6,
                     label="padded queries (outputs ignored)")]
    legend = fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=FONT,
                        frameon=False)
    for text in legend.get_texts():
        text.set_color(INK)
    return transparent(fig)


def _node(ax, x, y, colour, highlight=False):
    ax.add_patch(Circle((x, y), 0.11, facecolor=colour, alpha=0.9 if highlight else 0.45,
                        edgecolor=PATH if highlight else INK, linewidth=1.4 if highlight else 0.8))


def _edge(ax, start, end, highlight=False, faint=False):
    arrow(ax, start, end, colour=PATH if highlight else INK, width=1.6 if highlight else 0.7,
          alpha=0.25 if faint else 1.0, shrink=6)


def mixing_diagram(n: int = 6, kernel_size: int = 3) -> Figure:
    """How the last output position draws on the inputs in one layer of each kind:
    recurrence (a chain: x1 reaches y_n through n steps, one after another),
    convolution (a window of kernel_size: x1 reaches y_n only after
    ceil((n - 1) / ((k - 1) / 2)) layers; two are drawn) and self-attention (every input
    in one step, n^2 pairs), each annotated with Vaswani et al.'s Table 1."""
    if n < 3:
        raise ValueError(f"n must be at least 3, got {n}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size}")
    layers_needed = math.ceil((n - 1) / ((kernel_size - 1) // 2))
    width = WIDTH / 3
    step = (width - 0.5) / (n - 1)
    fig, ax = frame(WIDTH, 3.3, (0, WIDTH), (-1.3, 2.0))
    ys = (0.0, 0.7, 1.4)
    panels = ["recurrence", f"convolution (k = {kernel_size})", "self-attention"]
    tables = [
        "sequential steps: O(n)\npath length: O(n)\nwork: O(n·d²)",
        "sequential steps: O(1)\npath length: O(n/k),\n$O(\\log_k n)$ dilated\n"
        "work: O(k·n·d²)",
        "sequential steps: O(1)\npath length: O(1)\nwork: O(n²·d)",
    ]
    last, half = n - 1, (kernel_size - 1) // 2
    field = {2: {last}}  # the convolution's receptive field of y_n, layer by layer
    field[1] = {j for j in range(last - half, last + half + 1) if 0 <= j < n}
    field[0] = {j for i in field[1] for j in range(i - half, i + half + 1) if 0 <= j < n}
    for p, (title, table) in enumerate(zip(panels, tables)):
        xs = [p * width + 0.25 + step * i for i in range(n)]
        note(ax, p * width + width / 2, 1.95, title, va="top")
        for i, x in enumerate(xs):
            # outlined: x1 where a path from it is drawn; in the convolution, which
            # does not reach x1 in two layers, the inputs its field does reach
            lit = i in field[0] if p == 1 else i == 0
            _node(ax, x, ys[0], COLOURS["input"], highlight=lit)
            note(ax, x, ys[0] - 0.17, f"x{_sub(i + 1)}", va="top")
        note(ax, p * width + width / 2, -0.5, table, va="top")
        note(ax, xs[-1], ys[2] + 0.14, f"y{_sub(n)}", va="bottom")
        if p == 0:  # recurrence: input -> state, state -> next state, last state -> output
            for i, x in enumerate(xs):
                _node(ax, x, ys[1], COLOURS["encoder"], highlight=True)
                _edge(ax, (x, ys[0]), (x, ys[1]), highlight=i == 0)
                if i:
                    _edge(ax, (xs[i - 1], ys[1]), (x, ys[1]), highlight=True)
            _node(ax, xs[last], ys[2], COLOURS["output"], highlight=True)
            _edge(ax, (xs[last], ys[1]), (xs[last], ys[2]), highlight=True)
            note(ax, xs[0] - 0.12, ys[2], f"{n} steps,\nin order", ha="left")
        elif p == 1:  # convolution: two layers of windows; the last output's field
            for level in (1, 2):
                for i, x in enumerate(xs):
                    if level == 2 and i != last:
                        continue
                    lit = i in field[level]
                    _node(ax, x, ys[level], COLOURS["encoder"] if level == 1
                          else COLOURS["output"], highlight=lit)
                    for j in range(i - half, i + half + 1):
                        if 0 <= j < n:
                            _edge(ax, (xs[j], ys[level - 1]), (x, ys[level]),
                                  highlight=lit and j in field[level - 1], faint=not lit)
            note(ax, xs[0] - 0.12, ys[2], f"x₁ needs\n{layers_needed} layers", ha="left")
        else:  # self-attention: every input, one step
            _node(ax, xs[last], ys[2], COLOURS["output"], highlight=True)
            for x in xs:
                _edge(ax, (x, ys[0]), (xs[last], ys[2]), highlight=True)
            note(ax, xs[0] - 0.12, ys[2], f"1 step;\n{n}² = {n * n}\npairs", ha="left")
    for p in (1, 2):
        ax.plot([p * width, p * width], [-1.25, 1.95], color=INK, linewidth=0.8,
                linestyle=":")
    return fig
