"""The chapter 7 diagram splits and merges heads as multihead.split_heads does."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from attnbook.diagrams._draw import (  # noqa: E402
    FONT,
    HEAD_COLOURS,
    WIDTH,
    labels_outside_their_boxes,
    overlapping_texts,
    smallest_font,
)
from attnbook.diagrams.multihead import head_of_feature, heads_diagram, texts  # noqa: E402


def test_head_of_feature_follows_split_heads():
    assert head_of_feature(8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert head_of_feature(6, 2) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="divisible"):
        head_of_feature(8, 3)


def test_heads_diagram_writes_the_shapes_in_order():
    fig = heads_diagram(n_heads=4, d_model=8)
    labels = texts(fig)
    # the names of split_heads' source and of the chapter: L positions, d per head
    order = ["input x: (B, L, d_model)", "q_proj, k_proj, v_proj (d_model × d_model)",
             "Q, K, V:\n(B, L, d_model)\neach",
             "split_heads: view (B, L, H, d), transpose(1, 2)", "(B, H, L, d) each",
             "head 1", "head 4", "(B, H, L, d)", "merge_heads: transpose(1, 2), reshape",
             "linear map out_proj (d_model × d_model)", "output: (B, L, d_model)"]
    ys = {t.get_text(): t.get_position()[1] for t in fig.axes[0].texts}
    for label in order:
        assert label in labels, label
    heights = [ys[label] for label in order]
    assert heights == sorted(heights, reverse=True)  # top to bottom, in this order
    assert labels.count("(B, L, d_model)") == 2  # after merge_heads and after out_proj
    assert not any("N" in t or "D/H" in t for t in labels), labels
    # the forward drops attention weights in training, after the softmax
    per_head = next(t for t in labels if t.startswith("attention per head"))
    assert per_head.index("softmax") < per_head.index("dropout (training)")
    assert ["0–1", "2–3", "4–5", "6–7"] == [t for t in labels if "–" in t]
    assert "d = d_model / H = 2 per head" in labels and "one token: d_model = 8" in labels
    # the feature cells: D before the split, D/H per head, D after the merge
    colours = [matplotlib.colors.to_hex(p.get_facecolor()[:3]) for p in fig.axes[0].patches
               if isinstance(p, matplotlib.patches.Rectangle)]
    for h in range(4):
        assert colours.count(HEAD_COLOURS[h]) == 2 + 2 + 2
    assert fig.patch.get_alpha() == 0 and fig.get_size_inches()[0] <= WIDTH
    assert smallest_font(fig) >= FONT
    assert overlapping_texts(fig) == [] and labels_outside_their_boxes(fig) == []
    plt.close(fig)


@pytest.mark.parametrize("n_heads, d_model", [(1, 8), (2, 6), (8, 16)])
def test_other_head_counts_stay_legible(n_heads, d_model):
    fig = heads_diagram(n_heads, d_model)
    assert overlapping_texts(fig) == [] and labels_outside_their_boxes(fig) == []
    assert sum(t.startswith("head ") or t.isdigit() for t in texts(fig)) == n_heads
    plt.close(fig)


def test_heads_diagram_bad_arguments():
    with pytest.raises(ValueError, match="n_heads"):
        heads_diagram(n_heads=0)
    with pytest.raises(ValueError, match="d_model"):
        heads_diagram(n_heads=4, d_model=32)
    with pytest.raises(ValueError, match="divisible"):
        heads_diagram(n_heads=3, d_model=8)
