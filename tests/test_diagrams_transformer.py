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
    assert "encoder outputs" in labels and "encoder self-attention" not in labels


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
