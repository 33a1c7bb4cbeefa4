"""Tests of attnbook.diagrams.ring: the figures draw and carry their labelled parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle  # noqa: E402

from attnbook.diagrams.ring import (  # noqa: E402
    HIDDEN_COLOR,
    pairs_of_cells,
    rank_color,
    ring_steps,
    ring_traffic,
    ring_work_split,
)
from attnbook.ring import work_per_rank, work_ratio  # noqa: E402


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def colors(ax) -> list[str]:
    return [matplotlib.colors.to_hex(p.get_facecolor()[:3]).upper() for p in ax.patches
            if isinstance(p, Rectangle) and p is not ax.patch]


def test_ring_steps_moves_the_key_value_blocks_one_rank_per_step():
    fig = ring_steps(4)
    assert len(fig.axes) == 4
    for step, ax in enumerate(fig.axes):
        assert ax.get_title() == f"step {step}"
        shown = texts(ax)
        for rank in range(4):
            assert f"rank {rank}\nQ{rank}" in shown
        held = [t for t in shown if t.startswith("KV")]
        assert held == [f"KV{(r - step) % 4}" for r in range(4)]
        assert sum(isinstance(p, Circle) for p in ax.patches) == 4
        arrows = sum(isinstance(p, FancyArrowPatch) for p in ax.patches)
        assert arrows == (4 if step < 3 else 0)  # no transfer after the last step
    assert fig.get_facecolor()[3] == 0  # transparent
    plt.close(fig)
    with pytest.raises(ValueError, match="world_size"):
        ring_steps(0)


@pytest.mark.parametrize("world_size", [2, 4])
def test_work_split_colours_each_block_by_its_rank_and_step(world_size):
    fig = ring_work_split(world_size, n_local=64)
    plain, zigzag, bars = fig.axes
    w = world_size
    plain_colors, zigzag_colors = colors(plain), colors(zigzag)
    # contiguous: W (W + 1) / 2 blocks computed, rank r owns row r (r + 1 blocks)
    for r in range(w):
        assert plain_colors.count(rank_color(r).upper()) == r + 1
        # zigzag: 2W + 1 chunk pairs per rank, the same for all
        assert zigzag_colors.count(rank_color(r).upper()) == 2 * w + 1
    assert plain_colors.count(HIDDEN_COLOR) == w * (w - 1) // 2
    assert zigzag_colors.count(HIDDEN_COLOR) == 2 * w * (2 * w - 1) // 2
    assert set(texts(plain)) == {str(s) for s in range(w)}  # steps written in the cells
    labels = bars.get_legend_handles_labels()[1]
    ratio = work_ratio(work_per_rank(64 * w, w, "contiguous"))
    assert labels == [f"contiguous: max/min = {ratio:.2f}", "zigzag: max/min = 1.00"]
    heights = [p.get_height() for p in bars.patches if isinstance(p, Rectangle)]
    assert len(heights) == 2 * w
    assert len(set(round(h, 9) for h in heights[w:])) == 1  # zigzag bars all equal
    assert len(set(pairs_of_cells(w, "zigzag").values())) == 1
    plt.close(fig)


def test_traffic_draws_a_bar_per_rank_and_step_and_the_formula():
    forward = [[4096, 4096, 0]] * 3
    backward = [[8192, 8192, 4096]] * 3
    fig = ring_traffic(forward, backward, formula_bytes=4096)
    ax_f, ax_b = fig.axes
    assert ax_f.get_title() == "forward pass" and ax_b.get_title() == "backward pass"
    assert [p.get_height() for p in ax_f.patches if isinstance(p, Rectangle)] == \
        [4.0, 4.0, 0.0] * 3
    labels = ax_f.get_legend_handles_labels()[1]
    assert labels[0].startswith("formula") and "rank 2" in labels
    assert ax_f.get_ylabel() == "KiB sent by each rank"
    plt.close(fig)
    with pytest.raises(ValueError, match="forward_bytes"):
        ring_traffic([[1, 2], [3]])
