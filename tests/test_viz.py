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


def _html_parts(slider):
    """The slider's HTML: the first frame's src and alt, the range input, the data."""
    import json
    import re

    page = slider._repr_html_()
    img = re.search(r'<img src="([^"]+)" alt="([^"]+)"', page)
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>',
                                page, re.S).group(1).replace("<\\/", "</"))
    return page, img.group(1), img.group(2), data


def test_slider_figure_shows_its_start_frame_and_holds_every_frame():
    import matplotlib.pyplot as plt
    import pytest

    from attnbook.viz import SliderFigure

    figures = []
    for colour in ["red", "blue", "green"]:
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.set_facecolor(colour)
        figures.append(fig)
    slider = SliderFigure(figures, [1, 2, 3], "size", [f"frame {i}" for i in range(3)],
                          start=1)
    assert len(set(slider.frames)) == 3 and slider.width == 200 and slider.height == 150
    page, src, alt, data = _html_parts(slider)
    assert src == data["src"][1] and alt == "frame 1" and data["alt"][2] == "frame 2"
    assert data["text"] == ["size = 1", "size = 2", "size = 3"]
    assert 'type="range"' in page and 'min="0" max="2"' in page and 'value="1"' in page
    assert 'aria-label="size"' in page and 'aria-valuetext="size = 2"' in page
    assert "http" not in page  # everything is in the output itself
    assert repr(slider) == "SliderFigure(3 frames, size: size = 1 to size = 3)"
    small = plt.subplots(figsize=(1, 1))[0]
    with pytest.raises(ValueError, match="same size"):
        SliderFigure([small, plt.subplots(figsize=(2, 1))[0]], [1, 2], "x", "a figure")
    with pytest.raises(ValueError, match="one of each per frame"):
        SliderFigure(slider.frames, [1, 2], "x", "a figure")
    with pytest.raises(ValueError, match="alt text"):
        SliderFigure(slider.frames[:1], [1], "x", " ")
    with pytest.raises(ValueError, match="start"):
        SliderFigure(slider.frames[:1], [1], "x", "a figure", start=1)


def test_slider_script_cannot_be_closed_by_its_data():
    from attnbook.viz import SliderFigure

    png = SliderFigure([_tiny_figure()], [0], "x", "a </script> tag").frames
    page = SliderFigure(png, [0], "x", "a </script> tag")._repr_html_()
    assert page.count("</script>") == 2  # the data's and the code's, nothing else


def _tiny_figure():
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(1, 1))[0]


def test_temperature_slider_covers_its_temperatures_and_starts_at_one():
    from attnbook.viz import temperature_slider

    slider = temperature_slider([2.0, 0.0, -1.0], [0.1, 1, 10])
    assert slider.values == [0.1, 1.0, 10.0] and slider.start == 1
    assert slider.texts == ["τ = 0.1", "τ = 1", "τ = 10"]
    assert len(set(slider.frames)) == 3
    assert "weights 1.00, 0.00, 0.00" in slider.alts[0]  # nearly one-hot at 0.1
    assert "weights 0.39, 0.32, 0.29" in slider.alts[2]  # nearly even at 10


def test_scaled_scores_slider_saturates_unscaled_only():
    import re

    from attnbook.viz import scaled_scores_slider

    slider = scaled_scores_slider([4, 1024], n_keys=8)
    assert slider.values == [4, 1024] and len(set(slider.frames)) == 2
    largest = [[float(x) for x in re.findall(r"(\d\.\d\d) (?:un)?scaled", alt)]
               for alt in slider.alts]
    assert largest[1][0] > 0.95 > largest[1][1]  # d = 1024: one-hot unscaled only
    assert abs(slider.details[1]["largest"]["unscaled"] - largest[1][0]) <= 0.005
    assert slider.n_bytes < 200_000


def test_rope_slider_keeps_the_score_as_both_positions_move():
    import re

    from attnbook.viz import rope_slider

    slider = rope_slider([0, 4, 9])
    assert slider.values == [0, 4, 9] and len(set(slider.frames)) == 3
    stays = {re.search(r"stays (-?\d\.\d+)", alt).group(1) for alt in slider.alts}
    alone = {re.search(r"would be (-?\d\.\d+)", alt).group(1) for alt in slider.alts}
    assert len(stays) == 1 and len(alone) == 3
    assert slider.texts[1] == "shift 4: m = 7, n = 5"
    assert slider.details[2]["m"] == 12 and slider.details[2]["n"] == 10


def test_alignment_slider_lines_up_frames_of_different_outputs():
    import numpy as np

    from attnbook.viz import alignment_slider

    source = "5 Jun 1999"
    snapshots = [(0, "19999999999999", np.full((15, 10), 0.1)),
                 (50, "1999-06", np.eye(8, 10)),
                 (100, "1999-06-05", np.eye(11, 10))]
    slider = alignment_slider(snapshots, source)
    assert slider.values == [0, 50, 100] and slider.start == 2
    assert len(set(slider.frames)) == 3
    assert "writes '1999-06-05'" in slider.alts[2]
    assert "is 1.00 on average" in slider.alts[2]
    assert "is 0.10 on average" in slider.alts[0]
    assert [round(d["sharpness"], 6) for d in slider.details] == [0.1, 1.0, 1.0]


def test_alignment_figure_is_capped_at_the_column_width():
    from attnbook.viz import ALIGNMENT_MAX_WIDTH, alignment_figsize, plot_alignment

    assert alignment_figsize(20, 10)[0] < ALIGNMENT_MAX_WIDTH
    width, height = alignment_figsize(120, 40)
    assert width == ALIGNMENT_MAX_WIDTH and height < 0.9 + 0.2 * 40
    import numpy as np

    ax = plot_alignment(np.full((5, 120), 1 / 120), "x" * 120, "abcde")
    assert ax.figure.get_size_inches()[0] == ALIGNMENT_MAX_WIDTH
