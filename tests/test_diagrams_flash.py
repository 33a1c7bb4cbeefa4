"""Tests of attnbook.diagrams.flash: the figures draw and carry their labelled parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from attnbook.diagrams.flash import (  # noqa: E402
    FULL_COLOR,
    MASKED_COLOR,
    SKIPPED_COLOR,
    backward_kernel,
    dkdv_ranges,
    flash_tiles,
    online_softmax_trace,
    tiles_of_one_problem,
)


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def tile_colors(ax) -> list[str]:
    return [matplotlib.colors.to_hex(p.get_facecolor()[:3]).upper() for p in ax.patches
            if isinstance(p, Rectangle) and p is not ax.patch]


def test_online_softmax_trace_shows_blocks_maxima_and_lse():
    x = torch.tensor([0.5, 1.0, -0.5, 0.2, 2.0, 1.5, -1.0, 0.3, 1.0, 3.0, 0.0, 2.5])
    fig = online_softmax_trace(x, 4)
    shown = texts(fig)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"block 1", "block 2", "block 3", "running maximum m"} <= set(labels)
    for m in ["m = 1.00", "m = 2.00", "m = 3.00"]:  # the maximum after each block
        assert any(t.startswith(m) for t in shown), m
    assert any("log-sum-exp" in label and "4.02" in label for label in labels)
    assert fig.get_facecolor()[3] == 0  # transparent
    plt.close(fig)
    with pytest.raises(ValueError, match="1-D"):
        online_softmax_trace(torch.zeros(2, 3), 2)


def test_flash_tiles_colours_every_tile_by_what_the_forward_does():
    fig = flash_tiles(n_queries=128, n_keys=128, block_q=16, block_k=16, highlight=5)
    plain, causal, backward = fig.axes
    assert tile_colors(plain).count(FULL_COLOR) == 64
    colors = tile_colors(causal)
    # 8 x 8 tiles: 8 on the diagonal masked, 28 below it full, 28 above it skipped
    assert colors.count(MASKED_COLOR) == 8 and colors.count(FULL_COLOR) == 28
    assert colors.count(SKIPPED_COLOR) == 28
    # the forward numbers the 6 tiles of query block 6; the backward the 3 of key block 6
    assert [t.get_text() for t in causal.texts] == ["1", "2", "3", "4", "5", "6"]
    assert [t.get_text() for t in backward.texts] == ["1", "2", "3"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["computed, no mask", "computed, masked (crosses the diagonal)",
                      "skipped (above the diagonal)", "causal boundary", "order of the loop"]
    assert "causal forward: query block 6" in causal.get_title()
    plt.close(fig)


def test_tiles_of_unequal_lengths():
    fig = tiles_of_one_problem(40, 100, 16, 16, causal=True, highlight_row=1)
    ax = fig.axes[0]
    # 3 x 7 tiles; query block 2 (rows 16-31) visits key blocks 1-6
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3", "4", "5", "6"]
    assert len(tile_colors(ax)) == 21
    assert ax.get_title() == "Nq = 40, Nk = 100, blocks 16 x 16, causal"
    plt.close(fig)


def test_dkdv_ranges_cover_exactly_the_query_tiles_the_reference_visits():
    """The kernel's three passes over the query tiles of one key tile (masked, unmasked,
    ragged) cover, without overlap, the query blocks the reference backward pass visits
    for that key block, and a masked range holds every tile the diagonal crosses."""
    from attnbook.flash.reference import tile_schedule

    for n_q, n_k, causal in [(120, 120, True), (40, 100, True), (37, 37, True),
                             (33, 50, False), (64, 64, True)]:
        tiles = tile_schedule(n_q, n_k, 16, 16, causal)
        for c, parts in enumerate(dkdv_ranges(n_q, n_k, 16, 16, causal)):
            rows = [r for start, stop, _ in parts for r in range(start, stop, 16)]
            assert len(rows) == len(set(rows))
            visited = sorted(qs for qs, _, ks, _, _ in tiles if ks == 16 * c)
            assert sorted(rows) == visited, (n_q, n_k, c, parts)
            masked = {qs for qs, _, ks, _, m in tiles if ks == 16 * c and m}
            in_masked = {r for start, stop, kind in parts if kind == "masked"
                         for r in range(start, stop, 16)}
            assert masked <= in_masked


def test_backward_kernel_draws_the_three_passes_and_the_data_flow():
    fig = backward_kernel(120, 120, 16, 16, key_block=5)
    words = " ".join(texts(fig))
    for part in ["masked\nrows 80-95", "unmasked\nrows 96-111", "ragged\nrows 112-119",
                 "program_id(0) = 5", "dV += P^T dO", "L (log-sum-exp)", "pid\n7"]:
        assert part in words, part
    assert fig.get_facecolor()[3] == 0
    with pytest.raises(ValueError, match="key_block"):
        backward_kernel(key_block=8)
    plt.close("all")
