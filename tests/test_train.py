import pytest
import torch

from attnbook.data import date_vocabs, make_date_task
from attnbook.seq2seq import bottleneck_model
from attnbook.train import (
    accuracy_by_length,
    char_accuracy,
    exact_match,
    predict,
    sequence_loss,
    set_seed,
    train_seq2seq,
)


def test_exact_and_char_accuracy():
    assert exact_match(["ab", "cd"], ["ab", "ce"]) == 0.5
    assert char_accuracy(["ab", "c"], ["ab", "ce"]) == 3 / 4
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        exact_match(["a", "b"], ["a"])


def test_sequence_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 0], [3, 0, 0]])
    full = torch.nn.functional.cross_entropy(logits[0, :2], targets[0, :2], reduction="sum")
    full = full + torch.nn.functional.cross_entropy(logits[1, :1], targets[1, :1], reduction="sum")
    assert torch.isclose(sequence_loss(logits, targets, pad_id=0), full / 3)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 2\)"):
        sequence_loss(logits, targets[:, :2])


def test_accuracy_by_length_buckets():
    task = make_date_task(n_train=60, n_valid=10, n_test=10, seed=0)
    examples = task.train
    predictions = [e.target if len(e.source) < 30 else "wrong" for e in examples]
    result = accuracy_by_length(examples, predictions, [0, 30, 200])
    assert result == {"0-29": 1.0, "30-199": 0.0}
    with pytest.raises(ValueError, match="edges"):
        accuracy_by_length(examples, predictions, [30, 0])


def test_training_reduces_loss_and_is_reproducible():
    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=256, n_valid=32, n_test=10, max_dates=1, seed=0)

    def run():
        set_seed(0)
        model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=32)
        history = train_seq2seq(model, task.train, src_vocab, tgt_vocab, epochs=3, batch_size=32,
                                valid=task.valid, progress=False)
        return model, history

    model, history = run()
    _, again = run()
    assert history.step_losses == again.step_losses
    assert sum(history.step_losses[-4:]) < 0.9 * sum(history.step_losses[:4])
    assert len(history.epoch_valid_exact) == 3
    predictions = predict(model, task.valid, src_vocab, tgt_vocab)
    assert len(predictions) == len(task.valid) and all(isinstance(p, str) for p in predictions)
