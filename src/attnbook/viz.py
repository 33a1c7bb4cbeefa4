"""Plots shared by the chapters. Each function draws on an Axes and returns it."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json

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


ALIGNMENT_MAX_WIDTH = 9.0  # inches: about the width of the notebook's column


def alignment_figsize(n_source: int, n_output: int) -> tuple[float, float]:
    """A figure size for an alignment of n_source columns and n_output rows, at most
    ALIGNMENT_MAX_WIDTH inches wide (and as tall, less, for long inputs: cells stay square)."""
    width = 1.2 + 0.14 * n_source
    height = 0.9 + 0.2 * n_output
    if width > ALIGNMENT_MAX_WIDTH:
        height = 0.9 + (height - 0.9) * (ALIGNMENT_MAX_WIDTH - 1.2) / (width - 1.2)
        width = ALIGNMENT_MAX_WIDTH
    return width, height


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
    size = 8  # the labels' font size
    if ax is None:
        _, ax = plt.subplots(figsize=alignment_figsize(len(source), len(output)),
                             layout="constrained")
        if len(source) > 55:  # the figure stops growing (alignment_figsize): smaller labels
            size = max(4.5, 8 * 55 / len(source))
    ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(len(source)), [_visible(c) for c in source], fontsize=size,
                  fontfamily="monospace")
    ax.set_yticks(range(len(output)), list(output), fontsize=size, fontfamily="monospace")
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


# --- Sliders that work without a kernel -------------------------------------------
# A widget explorer needs a running kernel. Its static twin is a SliderFigure: a few
# precomputed frames (small PNGs, as data: URIs) and an <input type="range"> that shows
# one of them, in one self-contained text/html output with a few lines of script. It
# runs in the reader's browser on the website (which fetches nothing from elsewhere)
# and in a trusted notebook.

_SLIDER_SCRIPT = """(function () {
  var box = document.getElementById("%s");
  var data = JSON.parse(box.querySelector("script[type='application/json']").textContent);
  var img = box.querySelector("img"), slider = box.querySelector("input");
  var shown = box.querySelector("output");
  function show() {
    var i = Number(slider.value);
    img.src = data.src[i];
    img.alt = data.alt[i];
    shown.textContent = data.text[i];
    slider.setAttribute("aria-valuetext", data.text[i]);
  }
  slider.addEventListener("input", show);
  slider.addEventListener("change", show);
})();"""


def figure_png(fig, dpi: int = 100, colors: int = 64) -> bytes:
    """A matplotlib figure as a small PNG (a palette of `colors`); closes the figure."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    plt.close(fig)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors).save(out, format="png", optimize=True)
    return out.getvalue()


class SliderFigure:
    """Frames of a figure and a slider that picks one; shown as HTML (`_repr_html_`).

    frames: PNG bytes (or matplotlib figures, converted with `figure_png`), all of one
    size; values: what the slider sets, one per frame; texts: how each value reads next
    to the slider (default "label = value"); alts: the alt text of each frame (the
    figure's description, with what this frame shows); label: the slider's name, also
    its aria-label; start: the frame shown first; details: anything measured for each
    frame (kept, not shown), for a notebook to assert what the frames show.
    """

    def __init__(self, frames, values, label: str, alts, texts=None, start: int = 0,
                 details=None):
        from PIL import Image

        frames = [f if isinstance(f, bytes) else figure_png(f) for f in frames]
        values = list(values)
        texts = [f"{label} = {v}" for v in values] if texts is None else list(texts)
        alts = [alts] * len(frames) if isinstance(alts, str) else list(alts)
        if not frames:
            raise ValueError("a slider needs at least one frame")
        if not len(frames) == len(values) == len(texts) == len(alts):
            raise ValueError(f"{len(frames)} frames, {len(values)} values, "
                             f"{len(texts)} texts and {len(alts)} alt texts: need "
                             "one of each per frame")
        if not all(a.strip() for a in alts):
            raise ValueError("every frame needs a non-empty alt text")
        if not 0 <= start < len(frames):
            raise ValueError(f"start must index a frame (0 to {len(frames) - 1}), "
                             f"got {start}")
        sizes = {Image.open(io.BytesIO(f)).size for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"every frame must have the same size in pixels, "
                             f"got {sizes}")
        (self.width, self.height), = sizes
        self.frames, self.values, self.texts, self.alts = frames, values, texts, alts
        self.label, self.start = label, start
        self.details = [None] * len(frames) if details is None else list(details)

    def __repr__(self):
        return (f"SliderFigure({len(self.frames)} frames, {self.label}: "
                f"{self.texts[0]} to {self.texts[-1]})")

    def _repr_html_(self) -> str:
        sources = ["data:image/png;base64," + base64.b64encode(f).decode("ascii")
                   for f in self.frames]
        data = json.dumps({"src": sources, "alt": self.alts, "text": self.texts})
        data = data.replace("</", "<\\/")  # cannot close the script element
        uid = "attnbook-slider-" + hashlib.sha1(data.encode()).hexdigest()[:12]
        i, label = self.start, html.escape(self.label, quote=True)
        return (
            f'<figure class="attnbook-slider" id="{uid}" style="margin: 0.5em 0">'
            f'<img src="{sources[i]}" alt="{html.escape(self.alts[i], quote=True)}" '
            f'width="{self.width}" height="{self.height}" '
            'style="max-width: 100%; height: auto; display: block">'
            '<figcaption style="display: flex; gap: 0.8em; align-items: center; '
            'color: inherit; font-size: 1rem">'
            f'<label for="{uid}-range">{label}</label>'
            f'<input type="range" id="{uid}-range" min="0" '
            f'max="{len(self.frames) - 1}" '
            f'step="1" value="{i}" aria-label="{label}" '
            f'aria-valuetext="{html.escape(self.texts[i], quote=True)}" '
            'style="flex: 1; max-width: 24em">'
            f'<output for="{uid}-range">{html.escape(self.texts[i])}</output>'
            '</figcaption>'
            f'<script type="application/json">{data}</script>'
            f"<script>{_SLIDER_SCRIPT % uid}</script></figure>")

    @property
    def n_bytes(self) -> int:
        """The size of the HTML output, as stored in the notebook."""
        return len(self._repr_html_().encode())


def temperature_slider(logits, temperatures, labels=None) -> SliderFigure:
    """plot_softmax_temperature at each temperature, on a slider (starting at τ = 1 if
    it is one of them): the static twin of a temperature widget."""
    temperatures = [float(t) for t in temperatures]
    logits = torch.as_tensor(logits, dtype=torch.float64)
    frames, alts, details = [], [], []
    for t in temperatures:
        fig, ax = plt.subplots(figsize=(4.5, 3), layout="constrained")
        plot_softmax_temperature(logits, t, ax=ax, labels=labels)
        frames.append(figure_png(fig))
        weights = masked_softmax(logits / t)
        scores = ", ".join(f"{s:g}" for s in logits.tolist())
        shares = ", ".join(f"{w:.2f}" for w in weights.tolist())
        alts.append(f"Bars of the softmax of {len(logits)} scores ({scores}) at "
                    f"temperature τ = {t:g}: weights {shares}.")
        details.append({"weights": weights.tolist()})
    start = temperatures.index(1.0) if 1.0 in temperatures else 0
    return SliderFigure(frames, temperatures, "temperature τ", alts,
                        texts=[f"τ = {t:g}" for t in temperatures], start=start,
                        details=details)


def scaled_scores_slider(dims, n_keys: int = 32, seed: int = 0,
                         start: int | None = None) -> SliderFigure:
    """One random query's scores against n_keys random keys, and its softmax weights,
    with and without the 1/√d, at each size d on a slider.

    The entries come from one draw of its own generator (`seed`), and size d uses the
    first d of them, so moving the slider adds dimensions to the same vectors.
    Left: the scores, unscaled q·k (spread √d) and scaled q·k/√d (spread 1), on one
    axis for every d; right: the weights, largest first.
    """
    dims = [int(d) for d in dims]
    if not dims or min(dims) < 1:
        raise ValueError(f"dims must be positive sizes, got {dims}")
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(max(dims), generator=generator, dtype=torch.float64)
    k = torch.randn(n_keys, max(dims), generator=generator, dtype=torch.float64)
    reach = 3.2 * max(dims) ** 0.5  # the x-axis: about 3 spreads at the largest d
    frames, alts, details = [], [], []
    for d in dims:
        unscaled = k[:, :d] @ q[:d]  # (n_keys,)
        variants = {"unscaled": unscaled, "scaled by 1/√d": unscaled / d ** 0.5}
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3), layout="constrained")
        largest = {}
        for row, (name, scores) in enumerate(variants.items()):
            left.scatter(scores, np.full(n_keys, row), s=14, color=f"C{row}", alpha=0.7)
            weights = masked_softmax(scores).sort(descending=True).values
            largest[name] = weights[0].item()
            right.plot(range(1, n_keys + 1), weights, "o-", markersize=3,
                       color=f"C{row}", label=f"{name}: largest {largest[name]:.2f}")
        left.set_yticks([0, 1], list(variants))
        left.set(xlim=(-reach, reach), ylim=(-0.6, 1.6), xlabel="score",
                 title=f"one query's {n_keys} scores, d = {d}")
        left.grid(axis="x", alpha=0.3)
        right.set(ylim=(0, 1.02), xlabel="key, by weight", ylabel="weight",
                  title="its softmax weights, largest first")
        right.legend(fontsize="small", loc="upper right")
        frames.append(figure_png(fig))
        spread = {name: s.std().item() for name, s in variants.items()}
        details.append({"spread": spread, "largest": largest})
        alts.append(
            f"At d = {d}, one query's {n_keys} scores: unscaled they spread with a "
            f"standard deviation of {spread['unscaled']:.1f}, scaled by 1/√d of "
            f"{spread['scaled by 1/√d']:.1f}. The largest softmax weight is "
            f"{largest['unscaled']:.2f} unscaled and "
            f"{largest['scaled by 1/√d']:.2f} scaled.")
    if start is None:
        start = len(dims) // 2
    return SliderFigure(frames, dims, "size d", alts, texts=[f"d = {d}" for d in dims],
                        start=start, details=details)


def _rotate(vector, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def rope_slider(shifts, theta: float = 0.4, position: int = 3, key_position: int = 1,
                query=(1.0, 0.2), key=(0.7, 0.6)) -> SliderFigure:
    """RoPE on one pair of dimensions as both positions move by each shift on a slider.

    Left: the query at m = position + shift and the key at n = key_position + shift,
    turned by mθ and nθ (dashed: before rotation). Right: their dot product against
    the shift, flat, next to the same query's dot product with the key left at
    n = key_position, which changes: only the offset m − n matters.
    """
    shifts = [int(s) for s in shifts]
    if not shifts or min(shifts) < 0:
        raise ValueError(f"shifts must be non-negative integers, got {shifts}")
    query, key = np.asarray(query, dtype=float), np.asarray(key, dtype=float)
    axis = np.arange(min(shifts), max(shifts) + 1)

    def dot(m, n):
        return float(_rotate(query, m * theta) @ _rotate(key, n * theta))

    both = [dot(position + s, key_position + s) for s in axis]
    query_only = [dot(position + s, key_position) for s in axis]
    frames, alts, details = [], [], []
    for shift in shifts:
        m, n = position + shift, key_position + shift
        q, k = _rotate(query, m * theta), _rotate(key, n * theta)
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.2),
                                          layout="constrained", width_ratios=[1, 1.4])
        circle = np.linspace(0, 2 * np.pi, 200)
        left.plot(np.cos(circle), np.sin(circle), color="0.8", linewidth=0.8)
        arrows = [(query, "C0", "q", "--"), (key, "C1", "k", "--"),
                  (q, "C0", f"q at m = {m}", "-"), (k, "C1", f"k at n = {n}", "-")]
        for vector, colour, name, style in arrows:
            left.annotate("", xy=vector, xytext=(0, 0), arrowprops=dict(
                arrowstyle="->", color=colour, linestyle=style, linewidth=1.5))
            left.text(*(1.08 * vector), name, color=colour, fontsize=8,
                      ha="left" if vector[0] >= 0 else "right",
                      va="bottom" if vector[1] >= 0 else "top")
        left.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal", xticks=[],
                 yticks=[], title=f"shift {shift}: m − n = {m - n}")
        right.plot(axis, both, color="C2", label="both moved: q at m, k at n")
        right.plot(axis, query_only, color="0.5", linestyle=":",
                   label=f"only q moved (k at n = {key_position})")
        right.plot([shift], [dot(m, n)], "o", color="C2")
        right.plot([shift], [dot(m, key_position)], "o", color="0.5")
        right.set(xlabel="shift of the positions", ylabel="rotated q · k",
                  ylim=(-1.15, 1.8), title=f"θ = {theta:g} per position")
        right.legend(fontsize="small", loc="upper right")
        frames.append(figure_png(fig))
        alts.append(
            f"RoPE on one pair of dimensions, both positions shifted by {shift}: "
            f"the query at m = {m} is turned by {m * theta:.1f} radians and the key "
            f"at n = {n} by {n * theta:.1f}; their dot product stays "
            f"{dot(m, n):.3f}, while with the key left at n = {key_position} it "
            f"would be {dot(m, key_position):.3f}.")
        details.append({"m": m, "n": n, "dot": dot(m, n),
                        "query only": dot(m, key_position)})
    return SliderFigure(frames, shifts, "shift of the positions", alts,
                        texts=[f"shift {s}: m = {position + s}, n = {key_position + s}"
                               for s in shifts], details=details)


def alignment_slider(snapshots, source: str, label: str = "training step",
                     rows: int | None = None) -> SliderFigure:
    """Alignments of one input at several points of training, on a slider.

    snapshots: (step, output, weights) for each point, as `seq2seq.translate` returns
    output and weights. Every frame has `rows` rows (default: the longest output, at
    most 2 more than the last one's), so the frames line up; longer outputs are cut.
    """
    snapshots = list(snapshots)
    if not snapshots:
        raise ValueError("alignment_slider needs at least one snapshot")
    if rows is None:
        rows = min(max(len(o) for _, o, _ in snapshots), len(snapshots[-1][1]) + 2)
    frames, alts, details = [], [], []
    for step, output, weights in snapshots:
        weights = np.asarray(weights, dtype=float)[:, :len(source)]
        shown = output[:rows]
        padded = np.zeros((rows, len(source)))
        padded[:len(shown)] = weights[:len(shown)]
        width = alignment_figsize(len(source), rows)[0]
        # square cells, and room for the labels and the title
        height = 1.25 + (width - 1.2) * rows / len(source)
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
        plot_alignment(padded, source, shown.ljust(rows), ax=ax,
                       title=f"after {step} steps: {output[:40]!r}")
        frames.append(figure_png(fig))
        sharpness = weights[:len(shown)].max(axis=1).mean() if shown else 0.0
        alts.append(
            f"Attention weights for the input {source!r} after {step} training "
            f"steps, one row per output character, one column per input character: "
            f"the model writes {output!r}; each row's largest weight is "
            f"{sharpness:.2f} on average.")
        details.append({"output": output, "sharpness": float(sharpness)})
    return SliderFigure(frames, [s for s, _, _ in snapshots], label, alts,
                        texts=[f"step {s}" for s, _, _ in snapshots],
                        start=len(snapshots) - 1, details=details)
