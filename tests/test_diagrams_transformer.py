import matplotlib
import pytest

matplotlib.use("Agg")

from attnbook.diagrams.transformer import (  # noqa: E402
    STAGES,
    box_labels,
    sublayer_diagram,
    transformer_diagram,
)


def test_encoder_stage_has_only_the_encoder():
    labels = box_labels(transformer_diagram("encoder"))
    assert "encoder self-attention" in labels and "feed-forward" in labels
    assert "+ sinusoidal positions" in labels and "N ×" in labels
    assert "cross-attention" not in labels and "masked self-attention" not in labels


def test_decoder_stage_has_three_sublayers_and_reads_the_encoder():
    labels = box_labels(transformer_diagram("decoder"))
    for name in ("masked self-attention", "cross-attention", "feed-forward"):
        assert name in labels
    assert labels.count("add & LayerNorm") == 3
    assert "encoder outputs\n(keys, values)" in labels
    assert "encoder self-attention" not in labels


def test_whole_model_joins_both_with_the_output_layer():
    labels = box_labels(transformer_diagram("model"))
    assert "encoder self-attention" in labels and "cross-attention" in labels
    assert "linear → softmax" in labels and "keys and values" in labels
    assert labels.count("add & LayerNorm") == 5


def test_pre_norm_labels_and_sublayer_order():
    assert "add (LayerNorm before)" in box_labels(transformer_diagram("model", norm="pre"))
    post, pre = box_labels(sublayer_diagram("post")), box_labels(sublayer_diagram("pre"))
    assert post.index("sub-layer f") < post.index("LayerNorm")
    assert pre.index("LayerNorm") < pre.index("sub-layer f")
    assert "residual" in post and "residual" in pre


def test_transparent_background_and_bad_arguments():
    for stage in STAGES:
        fig = transformer_diagram(stage)
        assert fig.patch.get_alpha() == 0
    with pytest.raises(ValueError, match="stage"):
        transformer_diagram("everything")
    with pytest.raises(ValueError, match="norm"):
        sublayer_diagram("sandwich")


def test_sublayers_side_by_side_on_given_axes():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    assert sublayer_diagram("post", ax=axes[0]) is fig
    sublayer_diagram("pre", ax=axes[1])
    assert box_labels(fig).count("LayerNorm") == 2
    plt.close(fig)


def _extents(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(t.get_text(), t.get_window_extent(renderer)) for ax in fig.axes for t in ax.texts
             if t.get_text()]
    boxes = [(p.get_gid(), p.get_window_extent(renderer)) for ax in fig.axes
             for p in ax.patches if p.get_gid()]
    return texts, boxes


@pytest.mark.parametrize("stage, norm", [(s, n) for s in STAGES for n in ("post", "pre")])
def test_no_label_overlaps_another_or_overflows_its_box(stage, norm):
    fig = transformer_diagram(stage, norm=norm)
    texts, boxes = _extents(fig)
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            assert not box_a.overlaps(box_b), (a, b)
    for text, extent in texts:
        holders = [box for gid, box in boxes if gid == text
                   and box.contains(*extent.padded(-0.01).get_points().mean(0))]
        if holders:  # a box's own label stays inside it
            box = holders[0]
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text
        else:  # a note lies in no box at all
            for _, box in boxes:
                assert not box.overlaps(extent), text


def test_encoder_outputs_leave_the_top_of_the_stack_and_decoder_input_is_shifted():
    fig = transformer_diagram("model")
    ax = fig.axes[0]
    labels = box_labels(fig)
    assert "the target shifted right: <bos>, y₁, y₂, …" in labels
    assert "the source characters" in labels
    (route,) = ax.lines  # encoder output -> cross-attention, drawn as one polyline
    xs, ys = route.get_data()
    top_box = max(p.get_y() + p.get_height() for p in ax.patches
                  if p.get_gid() == "add & LayerNorm" and p.get_x() < 0)
    assert xs[0] == 0.0 and ys[0] > top_box  # starts above the encoder, on its axis
    decoder = transformer_diagram("decoder")
    assert "encoder outputs\n(keys, values)" in box_labels(decoder)
