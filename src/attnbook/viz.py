"""Plots shared by the chapters. Each function draws on an Axes and returns it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from attnbook.attention import masked_softmax


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


def plot_attention_weights(weights, ax=None, xlabels=None, ylabels=None, title: str = "",
                           xlabel: str = "key", ylabel: str = "query", annotate: bool = False):
    """Heatmap of one (Lq, Lk) matrix of attention weights: row i is what query i reads.

    Masked entries (weight exactly 0) show white, so masks are easy to see.
    """
    weights = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if weights.ndim != 2:
        raise ValueError(f"weights must be a 2-D (queries, keys) matrix, got shape {weights.shape}")
    ax = _axes(ax, figsize=(min(0.45 * weights.shape[1] + 2, 8), min(0.45 * weights.shape[0] + 1, 6)))
    shown = np.ma.masked_where(weights == 0, weights)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(weights.max(), 1e-9), aspect="auto")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if xlabels is not None or weights.shape[1] <= 30:  # else leave matplotlib's own ticks
        ax.set_xticks(range(weights.shape[1]), xlabels if xlabels is not None else range(weights.shape[1]))
    if ylabels is not None or weights.shape[0] <= 30:
        ax.set_yticks(range(weights.shape[0]), ylabels if ylabels is not None else range(weights.shape[0]))
    if annotate:
        for (i, j), w in np.ndenumerate(weights):
            if w == 0:
                continue  # masked: left blank
            ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if w > 0.6 * weights.max() else "black")
    plt.colorbar(image, ax=ax, shrink=0.8)
    return ax


def plot_softmax_temperature(logits, temperature: float, ax=None, labels=None):
    """Bars of softmax(logits / temperature): low temperatures sharpen, high ones flatten."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = torch.as_tensor(logits, dtype=torch.float64)
    weights = masked_softmax(logits / temperature).numpy()
    ax = _axes(ax, figsize=(4, 3))
    ax.bar(range(len(logits)), weights, color="C0")
    ax.set_xticks(range(len(logits)), labels if labels is not None else range(len(logits)))
    ax.set(ylim=(0, 1.02), ylabel="weight", title=f"τ = {temperature:g}")
    return ax


def _visible(char: str) -> str:
    """A character as a tick label: spaces become '␣' so that they can be seen."""
    return "␣" if char == " " else char


def plot_alignment(weights, source: str, output: str, ax=None, title: str = ""):
    """Attention weights as a heatmap: one row per output character (top to bottom),
    one column per source character (left to right); darker = more weight.

    weights: (T, S) with T >= len(output) and S >= len(source); extra rows (<eos>)
    and columns (padding) are not drawn.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[0] < len(output) or weights.shape[1] < len(source):
        raise ValueError(f"weights of shape {weights.shape} do not cover an output of "
                         f"{len(output)} and a source of {len(source)} characters")
    weights = weights[:len(output), :len(source)]
    if ax is None:
        width, height = 1.2 + 0.14 * len(source), 0.9 + 0.2 * len(output)
        _, ax = plt.subplots(figsize=(width, height), layout="constrained")
    ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(len(source)), [_visible(c) for c in source], fontsize=8,
                  fontfamily="monospace")
    ax.set_yticks(range(len(output)), list(output), fontsize=8, fontfamily="monospace")
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source character", fontsize=9)
    ax.set_ylabel("output character", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def alignment_explorer(model, src_vocab, tgt_vocab, text: str = "Sat 5 Jun 1999"):
    """A text box and the model's output with its alignment, redrawn as you type.

    Needs a running kernel (ipywidgets); the website shows static figures instead.
    """
    import ipywidgets as widgets

    from attnbook.seq2seq import translate

    box = widgets.Text(value=text, description="input:", continuous_update=False,
                       layout=widgets.Layout(width="90%"))
    shown = widgets.Output()

    def redraw(_=None):
        with shown:
            shown.clear_output(wait=True)
            try:
                output, weights = translate(model, box.value, src_vocab, tgt_vocab)
            except ValueError as error:
                print(error)
                return
            print(f"output: {output}")
            plot_alignment(weights, box.value, output)
            plt.show()

    box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([box, shown])


def plot_position_table(table, ax=None, title: str = "", cmap: str = "RdBu"):
    """A (positions, dimensions) table of position vectors as an image, positions down."""
    ax = _axes(ax)
    table = np.asarray(table)
    image = ax.imshow(table, aspect="auto", cmap=cmap, vmin=-np.abs(table).max(), vmax=np.abs(table).max(),
                      interpolation="nearest")
    ax.figure.colorbar(image, ax=ax)
    ax.set(xlabel="dimension", ylabel="position", title=title)
    return ax


def plot_extrapolation(results: dict[str, dict[int, float | None]], train_length: int, ax=None,
                       ylabel: str = "accuracy (%)", title: str = ""):
    """One line per encoding: accuracy at each test length; None marks "cannot run"."""
    ax = _axes(ax)
    for i, (name, by_length) in enumerate(results.items()):
        lengths = [n for n, a in by_length.items() if a is not None]
        ax.plot(lengths, [100 * by_length[n] for n in lengths], marker="o", color=f"C{i}", label=name)
        for n in [n for n, a in by_length.items() if a is None]:
            # Not a 0% point: the model cannot be applied at this length at all.
            ax.annotate(f"{name}:\ncannot run", (n, 8), color=f"C{i}", ha="center",
                        fontsize="small")
    ax.axvline(train_length, color="gray", linestyle=":", label="training length")
    ax.set(xscale="log", xlabel="test sequence length", ylabel=ylabel, ylim=(-5, 105), title=title)
    lengths = sorted({n for by_length in results.values() for n in by_length})
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_head_weights(weights, tokens=None, axes=None, titles=None):
    """Attention weights of each head, (H, Lq, Lk), side by side; queries down, keys across."""
    weights = np.asarray(weights)
    n_heads = weights.shape[0]
    if axes is None:
        _, axes = plt.subplots(1, n_heads, figsize=(3.2 * n_heads, 3.2), layout="constrained",
                               squeeze=False)
        axes = axes[0]
    for h, ax in enumerate(axes):
        ax.imshow(weights[h], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set(xlabel="key position", ylabel="query position" if h == 0 else None,
               title=titles[h] if titles else f"head {h}")
        if tokens is not None:
            ax.set_xticks(range(len(tokens)), tokens, fontsize="x-small")
            ax.set_yticks(range(len(tokens)), tokens, fontsize="x-small")
    return axes


FLASH_IMPLS = {"triton": "this book's Triton kernel", "sdpa-cudnn": "SDPA, cuDNN backend",
               "sdpa-flash": "SDPA, flash backend", "sdpa-efficient": "SDPA, efficient backend",
               "plain": "plain attention"}


def _row_label(row: dict) -> str:
    return f"{row['B']}×{row['H']}×{row['N']}×{row['d']}" + (" causal" if row["causal"] else "")


def plot_flash_throughput(rows: list[dict], which_pass: str, ax=None, impls=tuple(FLASH_IMPLS)):
    """TFLOP/s of each implementation on each benchmark row (B×H×N×d, causal or not):
    grouped horizontal bars, one group per row of the benchmark, for one pass
    ("forward" or "forward+backward")."""
    timed = [r for r in rows if r["kind"] == "time" and r["pass"] == which_pass and "tflops" in r]
    shapes = list(dict.fromkeys(_row_label(r) for r in timed))
    present = [name for name in impls if any(r["impl"] == name for r in timed)]
    ax = _axes(ax, figsize=(7, 0.5 + 0.45 * len(shapes) * max(1, len(present)) / 2))
    height = 0.8 / max(1, len(present))
    for i, name in enumerate(present):
        values = {_row_label(r): r["tflops"] for r in timed if r["impl"] == name}
        ys = [s - 0.4 + height * (i + 0.5) for s in range(len(shapes))]
        ax.barh(ys, [values.get(shape, 0.0) for shape in shapes], height=height,
                label=FLASH_IMPLS.get(name, name), color=f"C{i}")
    ax.set_yticks(range(len(shapes)), shapes)
    ax.invert_yaxis()
    ax.set(xlabel="TFLOP/s", title=which_pass)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize="small")
    return ax


def plot_flash_ratios(files: dict[str, list[dict]], ax=None):
    """The Triton kernel's ratio to the fastest PyTorch backend on each row, one marker
    per results file (e.g. before and after tuning), with the 1.0 line of the target."""
    ax = _axes(ax, figsize=(7, 4))
    for i, (name, rows) in enumerate(files.items()):
        ours = [r for r in rows if r["impl"] == "triton" and "ratio" in r]
        labels = [f"{_row_label(r)} {'fwd' if r['pass'] == 'forward' else 'fwd+bwd'}" for r in ours]
        ax.scatter([r["ratio"] for r in ours], range(len(ours)), label=name, color=f"C{i}",
                   marker="os^"[i % 3])
        ax.set_yticks(range(len(ours)), labels, fontsize="small")
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set(xlabel="TFLOP/s ratio to the fastest scaled_dot_product_attention backend")
    ax.legend(loc="upper left", fontsize="small")
    return ax
