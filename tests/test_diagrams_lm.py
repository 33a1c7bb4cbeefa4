"""The chapter 9 diagrams draw, with their labelled parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from attnbook.diagrams.lm import kv_cache_diagram, kv_sharing_diagram  # noqa: E402


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts + [ax.title]]


def test_kv_cache_diagram_counts_scores_and_labels_the_cache():
    fig = kv_cache_diagram(step=5, max_len=8)
    labels = texts(fig)
    assert "recompute: step 5 computes 15 scores" in labels
    assert "KV cache: step 5 computes 5 scores" in labels
    assert "cache" in labels and "new query" in labels
    assert fig.patch.get_alpha() == 0
    # left: 15 query-key cells; right: 15 cells (faded and new) and 8 cache slots
    assert [len(ax.patches) for ax in fig.axes] == [15, 23]
    plt.close(fig)


def test_kv_sharing_diagram_names_each_variant():
    fig = kv_sharing_diagram(8, (8, 2, 1))
    labels = texts(fig)
    assert any(label.startswith("multi-head") for label in labels)
    assert any(label.startswith("grouped-query, 2 groups") for label in labels)
    assert any(label.startswith("multi-query") for label in labels)
    assert [len(ax.patches) for ax in fig.axes] == [16, 10, 9]
    assert [len(ax.lines) for ax in fig.axes] == [8, 8, 8]
    plt.close(fig)
    with pytest.raises(ValueError, match="divide n_heads=8"):
        kv_sharing_diagram(8, (3,))
