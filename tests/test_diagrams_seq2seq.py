"""The Part I diagrams (chapters 1-3) draw, with their labelled parts, legibly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from attnbook.diagrams._draw import (  # noqa: E402
    FONT,
    WIDTH,
    labels_outside_their_boxes,
    overlapping_texts,
    smallest_font,
)
from attnbook.diagrams.seq2seq import (  # noqa: E402
    STYLES,
    decoder_step_diagram,
    encoder_decoder_diagram,
    texts,
)


def legible(fig) -> None:
    """Transparent, at most the book's width, fonts of at least 9 pt, no label on
    another, none outside the figure, every box's label inside its box."""
    assert fig.patch.get_alpha() == 0
    assert fig.get_size_inches()[0] <= WIDTH
    assert smallest_font(fig) >= FONT
    assert overlapping_texts(fig) == []
    assert labels_outside_their_boxes(fig) == []


def test_without_attention_the_decoder_gets_one_vector():
    fig = encoder_decoder_diagram(attention=False)
    labels = texts(fig)
    # one encoder state per character of "5 Jun 1999", one decoder state per output
    assert [f"h{s}" for s in "₁₂₃₄₅₆₇₈₉"] + ["h₁₀"] == [t for t in labels if t.startswith("h")]
    assert "s₁₁" in labels and "s₁₂" not in labels
    assert "c = h₁₀" in labels  # the bottleneck, the final state
    assert labels.count("c") == 11  # the same c read at every step
    assert "<bos>" in labels and "<eos>" in labels and "␣" in labels
    assert not any(t.startswith("c₁") for t in labels)
    assert any(r"$s_0 = \tanh(W_b\, c)$" in t for t in labels)  # chapter 1's W_b
    assert labels.count("s₀") == 1  # the first state, where c enters step 1
    legible(fig)
    plt.close(fig)


def test_with_attention_each_step_reads_its_own_context():
    fig = encoder_decoder_diagram(attention=True)
    labels = texts(fig)
    assert "c = h₁₀" not in labels and "c" not in labels
    assert [f"c{s}" for s in "₁₂₃₄₅₆₇₈₉"] + ["c₁₀", "c₁₁"] == [
        t for t in labels if t.startswith("c") and len(t) <= 3]
    assert "c₉ = Σⱼ α₉ⱼ hⱼ" in labels  # the highlighted step's context
    assert any("a(s₈, hⱼ)" in t for t in labels)  # scored against the previous state
    assert ".80" in labels and ".06" in labels  # one weight per source character
    legible(fig)
    plt.close(fig)


def test_encoder_decoder_bad_arguments():
    with pytest.raises(ValueError, match="step"):
        encoder_decoder_diagram(attention=True, step=12)
    with pytest.raises(ValueError, match="weights"):
        encoder_decoder_diagram(attention=True, weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="non-empty"):
        encoder_decoder_diagram(source="")


def numbered(fig) -> list[str]:
    return [t for t in texts(fig) if t[:1].isdigit() and t[1:3] == ". "]


def test_bahdanau_attends_before_the_gru_update():
    steps = numbered(decoder_step_diagram("bahdanau"))
    assert [s[0] for s in steps] == ["1", "2", "3", "4", "5"]
    order = [next(i for i, s in enumerate(steps) if word in s)
             for word in ("score", "weights", "context", "GRU update", "output")]
    assert order == sorted(order)
    assert "s_{t-1}" in steps[0]  # the query is the previous state
    assert "[y_{t-1}; c_t]" in steps[3]  # the GRU reads the context
    assert "[s_t; c_t; y_{t-1}]" in steps[4]  # as BahdanauDecoder.out does


def test_luong_updates_the_gru_first_and_feeds_the_attentional_state():
    fig = decoder_step_diagram("luong")
    steps = numbered(fig)
    assert [s[0] for s in steps] == ["1", "2", "3", "4", "5", "6"]
    assert "GRU update" in steps[0] and "\\tilde{h}_{t-1}" in steps[0]  # input feeding
    assert "score}(h_t" in steps[1]  # the new state is the query
    assert "\\tilde{h}_t = \\tanh(W_c [c_t; h_t])" in steps[4]
    assert "W_o \\tilde{h}_t" in steps[5]
    assert any("input\nfeeding" in t for t in texts(fig))
    without = decoder_step_diagram("luong", input_feeding=False)
    assert "tilde" not in numbered(without)[0]
    assert not any("input\nfeeding" in t for t in texts(without))


@pytest.mark.parametrize("style", STYLES)
def test_decoder_steps_are_legible(style):
    legible(decoder_step_diagram(style))


def test_decoder_step_bad_style():
    with pytest.raises(ValueError, match="style"):
        decoder_step_diagram("transformer")


def test_the_legibility_checks_catch_overlaps_and_overflowing_labels():
    from attnbook.diagrams._draw import box, frame, note

    fig, ax = frame(3, 2, (0, 3), (0, 2))
    box(ax, 1, 1, "a label far wider than its box", "#4a90d0", width=0.3, height=0.3)
    note(ax, 1.05, 1.02, "on top")
    note(ax, 2.9, 1.9, "leaves the figure", ha="left")
    assert labels_outside_their_boxes(fig) == ["a label far wider than its box"]
    pairs = overlapping_texts(fig)
    assert ("a label far wider than its box", "on top") in pairs
    assert ("leaves the figure", "<outside the figure>") in pairs


@pytest.mark.parametrize("options", [
    {"source": "Thu 3 Jun 2004", "target": "2004-06-03"},
    {"source": "18 June 2025", "target": "2025-06-18", "attention": True,
     "weights": [1 / 12] * 12, "step": 3},
])
def test_other_examples_stay_legible(options):
    fig = encoder_decoder_diagram(**options)
    legible(fig)
    n_src = len(options["source"])
    states = [t for t in texts(fig) if t[:1] == "h" and t[1:] and set(t[1:]) <= set("₀₁₂₃₄₅₆₇₈₉")]
    assert len(states) == n_src
