import matplotlib

matplotlib.use("Agg")

from attnbook.viz import plot_accuracy_by_length, plot_losses  # noqa: E402


def test_plots_draw_what_they_are_given():
    ax = plot_losses([3.0, 2.0, 1.0] * 10, smooth=5)
    assert len(ax.lines) == 2 and list(ax.lines[0].get_ydata()[:3]) == [3.0, 2.0, 1.0]
    ax = plot_accuracy_by_length({"a": {"0-19": 0.9, "20-39": 0.5}, "b": {"0-19": 1.0}})
    assert [list(line.get_ydata()) for line in ax.lines] == [[90.0, 50.0], [100.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_extrapolation_plot_labels_lengths_a_model_cannot_run():
    from attnbook.viz import plot_extrapolation

    ax = plot_extrapolation({"alibi": {32: 0.99, 64: 0.98}, "learned": {32: 1.0, 64: None}}, 32)
    learned = [line for line in ax.lines if line.get_label() == "learned"][0]
    assert list(learned.get_xdata()) == [32] and list(learned.get_ydata()) == [100.0]
    assert [t.get_text() for t in ax.texts] == ["learned:\ncannot run"]


def test_temperature_plot_names_the_temperature_tau():
    import pytest
    import torch

    from attnbook.viz import plot_softmax_temperature

    ax = plot_softmax_temperature(torch.tensor([2.0, 0.0]), 0.5)
    assert ax.get_title() == "τ = 0.5"  # T is a target length in the notation
    heights = [bar.get_height() for bar in ax.patches]
    assert heights[0] > 0.98 and abs(sum(heights) - 1) < 1e-6
    with pytest.raises(ValueError, match="temperature"):
        plot_softmax_temperature(torch.tensor([1.0]), 0.0)
