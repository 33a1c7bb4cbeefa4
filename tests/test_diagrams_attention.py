"""The chapter 4 and 5 diagrams draw, with their labelled parts, from the package's masks."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from attnbook.attention import causal_mask, padding_mask  # noqa: E402
from attnbook.diagrams._draw import (  # noqa: E402
    FONT,
    WIDTH,
    labels_outside_their_boxes,
    overlapping_texts,
    smallest_font,
)
from attnbook.diagrams.attention import (  # noqa: E402
    ALLOWED,
    HIDDEN,
    lookup_numbers,
    mixing_diagram,
    score_mask_diagram,
    soft_lookup_diagram,
    texts,
)


def legible(fig) -> None:
    assert fig.patch.get_alpha() == 0
    assert fig.get_size_inches()[0] <= WIDTH
    assert smallest_font(fig) >= FONT
    assert overlapping_texts(fig) == []
    assert labels_outside_their_boxes(fig) == []


def test_soft_lookup_beside_the_hard_one_with_the_package_numbers():
    fig = soft_lookup_diagram()
    labels = texts(fig)
    assert "hard lookup: a Python dict" in labels and "soft lookup: attention" in labels
    assert "output: '06'" in labels and labels.count("1") == 1  # one key matches
    numbers = lookup_numbers()
    scores = torch.tensor([[2.0, 2.0, 3.0, 1.0]]) / math.sqrt(2)  # q . k_j / sqrt(2)
    assert torch.allclose(torch.tensor(numbers["scores"], dtype=torch.float32), scores[0])
    weights = torch.softmax(scores, dim=-1)[0]
    assert torch.allclose(torch.tensor(numbers["weights"], dtype=torch.float32), weights)
    output = (weights * torch.tensor([10.0, 20.0, 30.0, 40.0])).sum()
    assert f"output Σⱼ αⱼ vⱼ = {output.item():.1f}" in labels
    for w in weights.tolist():
        assert f"{w:.2f}" in labels
    assert "k₃ = (1, 1)" in labels and "v₄ = 40" in labels
    legible(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="do not fit"):
        soft_lookup_diagram(query=(1.0, 2.0, 3.0))


def cells(ax) -> dict[tuple[int, int], str]:
    """(query, key) -> 'allowed' or 'hidden', from the grid's unit squares."""
    kinds = {}
    for p in ax.patches:
        if isinstance(p, Rectangle) and p.get_width() == 1 and p.get_height() == 1:
            colour = matplotlib.colors.to_hex(p.get_facecolor()[:3])
            kinds[int(p.get_y()), int(p.get_x())] = {ALLOWED: "allowed", HIDDEN: "hidden"}[colour]
            if colour == HIDDEN:
                assert p.get_hatch()  # hidden is not told by colour alone
    return kinds


def test_score_masks_follow_padding_mask_and_causal_mask():
    fig = score_mask_diagram(length=3, n=5)
    padding, causal, both = fig.axes[:3]
    real = padding_mask(torch.tensor([3]), 5)[0]
    for ax, allowed in [(padding, real.expand(5, 5)), (causal, causal_mask(5)),
                        (both, real & causal_mask(5))]:
        kinds = cells(ax)
        assert len(kinds) == 25
        for (i, j), kind in kinds.items():
            assert (kind == "allowed") == bool(allowed[i, j]), (ax.get_title(), i, j)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["I", "saw", "it", "pad", "pad"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["I", "saw", "it", "pad", "pad"]
    labels = texts(fig)
    assert "True: may attend" in labels and "False: score −∞, weight 0" in labels
    assert "padded queries (outputs ignored)" in labels
    assert "queries i" in labels and "keys j" in labels
    # the padded queries' rows are outlined where padding applies
    outlined = [ax for ax in fig.axes[:3] if any(
        isinstance(p, Rectangle) and not p.get_fill() for p in ax.patches)]
    assert outlined == [padding, both]
    legible(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="length"):
        score_mask_diagram(length=6, n=5)
    with pytest.raises(ValueError, match="tokens"):
        score_mask_diagram(length=4, n=5)


def test_mixing_compares_recurrence_convolution_and_attention():
    fig = mixing_diagram(n=6, kernel_size=3)
    labels = texts(fig)
    for title in ("recurrence", "convolution (k = 3)", "self-attention"):
        assert title in labels
    tables = [t for t in labels if t.startswith("sequential steps")]
    assert tables[0].startswith("sequential steps: O(n)\npath length: O(n)")
    assert "work: O(k·n·d²)" in tables[1] and "O(n/k)" in tables[1]
    assert tables[2] == "sequential steps: O(1)\npath length: O(1)\nwork: O(n²·d)"
    # chapter 5's path lengths: ceil((n - 1) / ((k - 1) / 2)) layers of convolution
    assert "x₁ needs\n5 layers" in labels
    assert "1 step;\n6² = 36\npairs" in labels and "6 steps,\nin order" in labels
    assert labels.count("x₁") == 3 and labels.count("y₆") == 3
    # the inputs outlined in red: x1 in the recurrence and in self-attention, which
    # draw a path from it; in the convolution only the field of y6 after two layers
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Circle

    from attnbook.diagrams.attention import PATH

    width, step = WIDTH / 3, (WIDTH / 3 - 0.5) / 5
    inputs = [c for c in fig.axes[0].patches if isinstance(c, Circle) and c.center[1] == 0]
    assert len(inputs) == 18
    outlined = [(int(c.center[0] // width), round((c.center[0] % width - 0.25) / step))
                for c in inputs if c.get_edgecolor()[:3] == to_rgba(PATH)[:3]]
    assert outlined == [(0, 0), (1, 3), (1, 4), (1, 5), (2, 0)], outlined  # x1; x4-x6; x1
    legible(fig)
    plt.close(fig)
    assert "x₁ needs\n4 layers" in texts(mixing_diagram(n=9, kernel_size=5))
    with pytest.raises(ValueError, match="kernel_size"):
        mixing_diagram(kernel_size=4)
    with pytest.raises(ValueError, match="n must"):
        mixing_diagram(n=2)
