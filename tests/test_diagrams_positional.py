"""The chapter 6 diagrams draw RoPE and ALiBi with the package's own functions."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from attnbook.diagrams._draw import FONT, WIDTH, overlapping_texts, smallest_font  # noqa: E402
from attnbook.diagrams.positional import (  # noqa: E402
    alibi_diagram,
    rope_diagram,
    rotate_pair,
    texts,
)
from attnbook.positional import alibi_slopes, apply_rope  # noqa: E402


def legible(fig) -> None:
    assert fig.patch.get_alpha() == 0
    assert fig.get_size_inches()[0] <= WIDTH
    assert smallest_font(fig) >= FONT
    assert overlapping_texts(fig) == []


def test_rotate_pair_is_apply_rope_on_adjacent_dimensions():
    # the package pairs dimensions (2i, 2i + 1); pair 0 of a 4-dim vector turns by m * 1
    x = torch.tensor([[1.0, 0.2, 0.0, 0.0]], dtype=torch.float64)
    full = apply_rope(x, torch.tensor([3]))
    assert np.allclose(full[0, :2].tolist(), rotate_pair((1.0, 0.2), 3, 1.0))
    angle = math.atan2(*reversed(rotate_pair((1.0, 0.0), 3, 0.4)))
    assert math.isclose(angle, 1.2)


def test_rope_dot_product_depends_only_on_the_offset():
    fig = rope_diagram(position=3, theta=0.4, key_position=1, shift=2)
    left, right = fig.axes
    assert left.get_title().startswith("m = 3, n = 1: m − n = 2")
    assert right.get_title().startswith("m = 5, n = 3: m − n = 2")
    # the same dot product and angle in both panels
    assert left.get_title().split("\n")[1] == right.get_title().split("\n")[1]
    q, k = rotate_pair((1.0, 0.2), 3, 0.4), rotate_pair((0.7, 0.6), 1, 0.4)
    assert f"rotated q · k = {q[0] * k[0] + q[1] * k[1]:.3f}" in left.get_title()
    labels = texts(fig)
    for label in ("q at m = 3", "k at n = 1", "q at m = 5", "k at n = 3", "3θ", "1θ", "5θ"):
        assert label in labels
    assert "dimension 2i" in labels and "dimension 2i + 1" in labels
    legible(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="position"):
        rope_diagram(position=-1)
    with pytest.raises(ValueError, match="theta"):
        rope_diagram(theta=2.0)
    with pytest.raises(ValueError, match="shift"):
        rope_diagram(shift=0)


def test_alibi_draws_the_package_bias_with_its_slopes():
    fig = alibi_diagram(n=8, n_heads=4)
    heads = fig.axes[:4]
    slopes = alibi_slopes(4).tolist()
    assert slopes == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    for h, (ax, slope) in enumerate(zip(heads, slopes)):
        denominator = round(1 / slope)
        assert ax.get_title().startswith(f"head {h + 1}: m = 1/{denominator}")
        assert f"{-7 * slope:.2f}".replace("-", "−") in ax.get_title()
        shown = ax.images[0].get_array()
        i, j = np.indices((8, 8))
        assert np.allclose(shown.data[j <= i], (-slope * (i - j))[j <= i])
        assert shown.mask[j > i].all() and not shown.mask[j <= i].any()
        assert len([p for p in ax.patches if p.get_hatch()]) == 28  # masked, hatched
    labels = texts(fig)
    assert "masked: key after the query (causal)" in labels
    assert "bias −m (i − j)" in labels
    legible(fig)
    plt.close(fig)
    both_sides = alibi_diagram(n=6, n_heads=8, causal=False)
    assert len(both_sides.axes) == 5  # four of the eight heads and the colour bar
    assert [ax.get_title().split(":")[0] for ax in both_sides.axes[:4]] == [
        "head 1", "head 3", "head 6", "head 8"]
    assert "bias −m |i − j|" in texts(both_sides)
    plt.close(both_sides)
    with pytest.raises(ValueError, match="heads"):
        alibi_diagram(n_heads=4, heads=(4,))
    with pytest.raises(ValueError, match="n must"):
        alibi_diagram(n=1)
