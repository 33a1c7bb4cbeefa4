"""Diagrams of Part I (chapters 1-3): the encoder-decoder, with and without attention,
and the order of the steps inside one step of Bahdanau's and Luong's decoders.

`encoder_decoder_diagram(attention)` draws the running date task's model on one
example: without attention (chapter 1's `ContextDecoder`) the encoder's final state
is one vector c that starts the decoder and is read again at every step; with
attention (chapter 2's `BahdanauDecoder`) each step reads its own context, a weighted
sum of every encoder state. `decoder_step_diagram(style)` numbers the steps of one
decoder step in the order `BahdanauDecoder.step` and `LuongDecoder.step` run them.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from attnbook.diagrams._draw import COLOURS, INK, WIDTH, arrow, box, frame, note, texts

__all__ = ["encoder_decoder_diagram", "decoder_step_diagram", "texts", "STYLES",
           "EXAMPLE_WEIGHTS"]

STYLES = ("bahdanau", "luong")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
# Illustrative weights of the step that writes the "0" of the day "05": most of the
# mass on the input's "5", the day (a trained model's are drawn in chapter 2).
EXAMPLE_WEIGHTS = (0.80, 0.06, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01, 0.02)


def _sub(n: int) -> str:
    return str(n).translate(_SUB)


def _shown(char: str) -> str:
    return "␣" if char == " " else char


def encoder_decoder_diagram(attention: bool = False, source: str = "5 Jun 1999",
                            target: str = "1999-06-05", step: int = 9,
                            weights: tuple[float, ...] | None = None) -> Figure:
    """The encoder-decoder on one input of the date task, one box per character.

    attention False (chapter 1): the encoder's final state h_S is the one vector c that
    the decoder gets; it sets the first state, s0 = tanh(W_b c) (the arrow labelled s0
    that enters s1), and is concatenated to the previous character at every step.
    attention True (chapter 2): step `step`
    (1-based) scores every encoder state against the decoder's previous state, turns
    the scores into weights (`weights`, one per source character; by default
    EXAMPLE_WEIGHTS, illustrative) and reads their weighted sum, its own context c_t.
    """
    if not source or not target:
        raise ValueError(f"source and target must be non-empty, got {source!r}, {target!r}")
    n_src, n_steps = len(source), len(target) + 1  # the last step writes <eos>
    if attention:
        if not 1 <= step <= n_steps:
            raise ValueError(f"step must lie in [1, {n_steps}] for a target of "
                             f"{len(target)} characters, got {step}")
        weights = EXAMPLE_WEIGHTS if weights is None else tuple(weights)
        if len(weights) != n_src or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
            raise ValueError(f"weights must be {n_src} non-negative numbers summing to 1 "
                             f"(one per source character), got {weights}")
    slots = max(n_src + (0 if attention else 1.8), n_steps + 0.2)
    x_left, x_right = -1.5, slots - 0.4
    enc_y = 0.9
    gap = 1.7 if attention else 1.35  # from the encoder's boxes to the decoder's inputs
    cell_y, dec_y = enc_y + gap + 0.45, enc_y + gap + 1.15
    out_y = dec_y + 0.8
    y_top = out_y + 1.05
    height = (y_top + 0.2) * 0.565  # inches: a unit up is 0.565 in, whatever the length
    fig, ax = frame(WIDTH, height, (x_left, x_right), (-0.2, y_top))
    state_w, state_h = 0.66, 0.46

    # the encoder: one state per character, left to right (both directions with attention)
    for j, char in enumerate(source):
        note(ax, j, 0.2, _shown(char), colour=INK)
        arrow(ax, (j, 0.38), (j, enc_y - state_h / 2))
        box(ax, j, enc_y, f"h{_sub(j + 1)}", COLOURS["encoder"], state_w, state_h)
        if j:
            arrow(ax, (j - 1 + state_w / 2, enc_y), (j - state_w / 2, enc_y),
                  style="<|-|>" if attention else "-|>")
    note(ax, -1.2, enc_y, "encoder", rotation=90)
    note(ax, -1.2, dec_y, "decoder", rotation=90)

    # the decoder: step t reads [previous character; context] and writes a character
    inputs = ["<bos>", *target]
    outputs = [*target, "<eos>"]
    for t in range(1, n_steps + 1):
        x = t - 1
        grey_w, chip_w = 0.26, 0.46
        box(ax, x - chip_w / 2, cell_y, "", COLOURS["input"], grey_w, 0.34)
        label = f"c{_sub(t)}" if attention else "c"
        highlight = attention and t == step
        box(ax, x + grey_w / 2, cell_y, label, COLOURS["context"], chip_w, 0.34,
            alpha=0.9 if highlight or not attention else 0.4)
        note(ax, x, cell_y - 0.36, _shown(inputs[t - 1]), va="top")
        arrow(ax, (x, cell_y + 0.17), (x, dec_y - state_h / 2))
        box(ax, x, dec_y, f"s{_sub(t)}", COLOURS["decoder"], state_w, state_h,
            dashed=attention and t == step - 1)
        if t > 1:
            arrow(ax, (x - 1 + state_w / 2, dec_y), (x - state_w / 2, dec_y))
        arrow(ax, (x, dec_y + state_h / 2), (x, out_y - 0.12))
        note(ax, x, out_y, _shown(outputs[t - 1]), va="bottom")

    if not attention:
        # the bottleneck: the final state is the one vector c
        cx = n_src + 0.45
        box(ax, cx, enc_y, "c = h" + _sub(n_src), COLOURS["context"], 1.1, state_h, alpha=0.9)
        arrow(ax, (n_src - 1 + state_w / 2, enc_y), (cx - 0.55, enc_y))
        route = enc_y + 0.62
        ax.plot([cx, cx, -0.62, -0.62], [enc_y + state_h / 2, route, route, dec_y],
                color=COLOURS["context"], linewidth=2.2, solid_capstyle="butt")
        arrow(ax, (-0.62, dec_y), (-state_w / 2, dec_y), colour=COLOURS["context"], width=2.2)
        note(ax, -0.72, dec_y, "s₀", ha="right")  # the state before step 1, as in chapter 2
        note(ax, n_src / 2 - 0.5, route + 0.07,
             r"c sets the first state, $s_0 = \tanh(W_b\, c)$, and is read again at every step",
             va="bottom")
        title = (f"without attention: one vector c = h{_sub(n_src)} carries the whole "
                 f"input \u201c{source}\u201d")
    else:
        # the step `step` reads every encoder state through its weights
        x_t = step - 1
        cx, cy = x_t + 0.35, enc_y + 1.05
        box(ax, cx, cy, f"c{_sub(step)} = Σⱼ α{_sub(step)}ⱼ hⱼ", COLOURS["context"], 1.9, 0.42,
            alpha=0.9)
        for j, w in enumerate(weights):
            note(ax, j, enc_y + state_h / 2 + 0.04, f"{w:.2f}".lstrip("0"), va="bottom")
            ax.plot([j, cx - 0.6 + 1.2 * j / max(1, n_src - 1)],
                    [enc_y + state_h / 2 + 0.3, cy - 0.21], color=COLOURS["context"],
                    linewidth=0.6 + 5 * w, alpha=0.35 + 0.65 * w, solid_capstyle="round")
        arrow(ax, (x_t + 0.13, cy + 0.21), (x_t + 0.13, cell_y - 0.17),
              colour=COLOURS["context"], width=2.0)
        # the query: the previous state s_{t-1}
        arrow(ax, (x_t - 1 + state_w / 2 - 0.08, dec_y - state_h / 2),
              (cx - 0.9, cy + 0.21), colour=COLOURS["score"], dashed=True, width=1.6)
        left = x_t > (n_steps - 1) / 2  # the note on the side with more room
        note(ax, cx - 1.15 if left else cx + 1.15, cy + 0.02,
             f"weights α{_sub(step)}ⱼ = softmax of the scores a(s{_sub(step - 1)}, hⱼ)",
             ha="right" if left else "left")
        arrow(ax, (-0.75, dec_y), (-state_w / 2, dec_y))
        note(ax, -0.8, dec_y, "s₀", ha="right")
        title = (f"with attention: step {step} scores every encoder state against "
                 f"s{_sub(step - 1)} and reads its own context c{_sub(step)}")
    note(ax, (x_left + x_right) / 2, y_top - 0.05, title, va="top")
    note(ax, (x_left + x_right) / 2, y_top - 0.42, "the input of each step: "
         "[the previous character (grey); " + ("its context" if attention else "c") + "]",
         va="top")
    return fig


def _flow(steps, inputs, leaving, title) -> Figure:
    """Numbered boxes from top to bottom; `inputs` maps a step to the external inputs
    drawn on its left, `leaving` a step to what it hands on, drawn on its right."""
    gap, box_h = 0.62, 0.46
    height = 0.62 + (len(steps) - 1) * gap + box_h / 2 + 0.1
    fig, ax = frame(WIDTH, height, (0, WIDTH), (0, height))
    x, w = 3.72, 3.75
    ys = []
    for i, (text, kind) in enumerate(steps):
        y = height - 0.62 - i * gap
        ys.append(y)
        box(ax, x, y, f"{i + 1}. {text}", COLOURS[kind], w, box_h)
        if i:
            arrow(ax, (x, ys[i - 1] - box_h / 2), (x, y + box_h / 2))
    for i, names in inputs.items():
        note(ax, 1.6, ys[i], names, ha="right")
        arrow(ax, (1.64, ys[i]), (x - w / 2, ys[i]))
    for i, (name, dashed) in leaving.items():
        arrow(ax, (x + w / 2, ys[i]), (x + w / 2 + 0.3, ys[i]), dashed=dashed)
        note(ax, x + w / 2 + 0.35, ys[i], name, ha="left")
    note(ax, WIDTH / 2, height - 0.08, title, va="top")
    return fig


def decoder_step_diagram(style: str = "bahdanau", input_feeding: bool = True) -> Figure:
    """One decoder step, writing character t, as the book's code runs it.

    "bahdanau" (`BahdanauDecoder.step`): the previous state s_{t-1} is the query;
    scores, weights and context come first, then the GRU reads [y_{t-1}; c_t], then
    the output layer reads [s_t; c_t; y_{t-1}]. "luong" (`LuongDecoder.step`): the GRU
    steps first, and its new state h_t is the query; the context and h_t make the
    attentional state h~_t = tanh(W_c [c_t; h_t]), which predicts the character and,
    with input feeding (`input_feeding`, the book's default), is read by the next
    step's GRU.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "bahdanau":
        steps = [("score each encoder state against the previous state:\n"
                  r"$e_{tj} = v^\top \tanh(W_q s_{t-1} + W_k h_j)$ (additive)", "score"),
                 (r"weights: $\alpha_t = $ masked softmax$(e_t)$", "score"),
                 (r"context: $c_t = \Sigma_j\, \alpha_{tj} h_j$", "context"),
                 (r"GRU update: $s_t = \mathrm{GRU}([y_{t-1}; c_t], s_{t-1})$", "decoder"),
                 (r"output: logits $= W_o [s_t; c_t; y_{t-1}]$", "output")]
        inputs = {0: "$s_{t-1}$ (query),\n$h_1 \\ldots h_S$ (keys)",
                  2: "$h_1 \\ldots h_S$ (values)", 3: "$y_{t-1}$, $s_{t-1}$",
                  4: "$y_{t-1}$"}
        leaving = {3: ("$s_t$ to\nstep $t + 1$", False), 4: ("next\ncharacter", False)}
        title = "one step of Bahdanau's decoder (chapter 2): attend, then update the state"
    else:
        gru = (r"GRU update: $h_t = \mathrm{GRU}([y_{t-1}; \tilde{h}_{t-1}], h_{t-1})$"
               if input_feeding else r"GRU update: $h_t = \mathrm{GRU}(y_{t-1}, h_{t-1})$")
        steps = [(gru, "decoder"),
                 ("score each encoder state against the new state:\n"
                  r"$e_{tj} = \mathrm{score}(h_t, \bar{h}_j)$, e.g. $h_t^\top W \bar{h}_j$",
                  "score"),
                 ("weights: $\\alpha_t = $ masked softmax$(e_t)$\n"
                  "(local attention: only a window around $p_t$)", "score"),
                 (r"context: $c_t = \Sigma_j\, \alpha_{tj} \bar{h}_j$", "context"),
                 (r"attentional state: $\tilde{h}_t = \tanh(W_c [c_t; h_t])$", "decoder"),
                 (r"output: logits $= W_o \tilde{h}_t$", "output")]
        inputs = {0: "$y_{t-1}$, $h_{t-1}$" + (",\n$\\tilde{h}_{t-1}$" if input_feeding else ""),
                  1: "$\\bar{h}_1 \\ldots \\bar{h}_S$ (keys)",
                  3: "$\\bar{h}_1 \\ldots \\bar{h}_S$ (values)"}
        leaving = {0: ("$h_t$ to\nstep $t + 1$", False), 5: ("next\ncharacter", False)}
        if input_feeding:
            leaving[4] = ("$\\tilde{h}_t$ to step\n$t + 1$ (input\nfeeding)", True)
        title = "one step of Luong's decoder (chapter 3): update the state, then attend"
    return _flow(steps, inputs, leaving, title)
