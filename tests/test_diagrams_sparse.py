"""Tests of attnbook.diagrams.sparse: the figures draw and carry their labelled parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from attnbook.diagrams.sparse import (  # noqa: E402
    chunked_linear,
    linear_reordering,
    pattern_masks,
    score_patterns,
)


def texts(fig) -> str:
    return " | ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_score_patterns_shows_four_patterns_with_their_cost():
    fig = score_patterns(n=32, window=6, n_global=2, stride=6)
    shown = texts(fig)
    counts = {name: int(mask.sum()) for name, mask in pattern_masks(32, 6, 2, 6).items()}
    for name, pairs in counts.items():
        assert name in shown
        assert f"{pairs} of 32² = 1024 pairs" in shown
    assert counts["dense causal"] == 32 * 33 // 2
    assert fig.get_facecolor()[3] == 0  # transparent
    plt.close(fig)


def test_linear_reordering_shows_both_orders():
    fig = linear_reordering()
    shown = texts(fig)
    for part in ["QKᵀ\nN×N", "KᵀV\nd×d", "Q\nN×d", "O\nN×d", "step 1", "step 2",
                 "4N²d FLOPs", "4Nd² FLOPs"]:
        assert part in shown, part
    plt.close(fig)


def test_chunked_linear_shows_blocks_and_state():
    fig = chunked_linear(n=16, chunk=4)
    shown = texts(fig)
    for part in ["S0 = 0, z0 = 0", "S3, z3", "read from S1, z1", "masked", "+ φ(K2)ᵀV2",
                 "chunks of 4"]:
        assert part in shown, part
    assert shown.count("masked") == 4
    plt.close(fig)
