import pytest
import torch

from attnbook.data import date_vocabs, make_date_task
from attnbook.seq2seq import bottleneck_model
from attnbook.train import (
    accuracy_by_length,
    char_accuracy,
    date_exact_match,
    exact_match,
    position_accuracy,
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


def test_date_exact_match_scores_each_date_by_its_place():
    targets = ["2000-01-02;1999-12-31;2010-05-06", "2000-01-02", "1950-01-01;2049-12-31"]
    predictions = ["2000-01-02;1999-12-31;2010-05-07", "2000-01-02", "1950-01-01"]
    assert date_exact_match(predictions, targets) == [1.0, 0.5, 0.0]
    # A dropped character costs its own date, not every character after it
    # (as a position-wise character score would count it).
    slipped = ["2000-1-02;1999-12-31;2010-05-06"]
    assert date_exact_match(slipped, targets[:1]) == [0.0, 1.0, 1.0]
    assert char_accuracy(slipped, targets[:1]) < 0.3
    assert date_exact_match(["a|b"], ["a|c"], separator="|") == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        date_exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one target"):
        date_exact_match([], [])


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


def test_after_epoch_is_called_after_validation_and_leaves_training_unchanged():
    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=128, n_valid=16, n_test=10, max_dates=1, seed=0)
    calls = []

    def look(epoch, model):
        # The model as it is after this epoch: predict with it (no random numbers).
        calls.append((epoch, exact_match(predict(model, task.valid, src_vocab, tgt_vocab),
                                         [e.target for e in task.valid])))

    def run(after_epoch):
        set_seed(0)
        model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16)
        return train_seq2seq(model, task.train, src_vocab, tgt_vocab, epochs=2,
                             batch_size=32, valid=task.valid, progress=False,
                             after_epoch=after_epoch)

    plain, watched = run(None), run(look)
    assert watched.step_losses == plain.step_losses
    assert [epoch for epoch, _ in calls] == [1, 2]
    # Called after validation, on the same model state that validation saw:
    assert [a for _, a in calls] == watched.epoch_valid_exact


def test_position_accuracy_scores_every_position_on_the_true_prefix():
    src_vocab, tgt_vocab = date_vocabs()
    examples = make_date_task(n_train=20, n_valid=1, n_test=1, max_dates=2, seed=0).train

    class Oracle(torch.nn.Module):
        """Predicts the true next character, except `wrong` at position 3."""

        def __init__(self, wrong=None):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.wrong = wrong

        def forward(self, src, src_lengths, tgt_in):
            nxt = torch.cat([tgt_in[:, 1:], torch.full_like(tgt_in[:, :1], 0)], dim=1)
            last = (tgt_in != 0).sum(dim=1) - 1  # where <eos> is due
            nxt[torch.arange(len(nxt)), last] = tgt_vocab.eos_id
            if self.wrong is not None:
                nxt[:, 3] = self.wrong
            return torch.nn.functional.one_hot(nxt, len(tgt_vocab)).float()

    accuracy = position_accuracy(Oracle(), examples, src_vocab, tgt_vocab, batch_size=7)
    assert len(accuracy) == max(len(e.target) for e in examples) and min(accuracy) == 1.0
    # One wrong position costs that position only, never the ones after it.
    wrong = tgt_vocab.stoi["-"]
    slipped = position_accuracy(Oracle(wrong), examples, src_vocab, tgt_vocab)
    assert slipped[3] == 0.0 and slipped[:3] == [1.0] * 3 and min(slipped[4:]) == 1.0
    with pytest.raises(ValueError, match="at least one example"):
        position_accuracy(Oracle(), [], src_vocab, tgt_vocab)


def test_after_step_sees_every_step_and_leaves_training_unchanged():
    from attnbook.seq2seq import translate

    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=96, n_valid=8, n_test=4, max_dates=1, seed=0)
    seen = []

    def snapshot(step, model):
        # Training mode, restored after the previous call's switch to eval mode:
        assert model.training
        # Greedy decoding in eval mode draws no random numbers.
        seen.append((step, translate(model, "5 Jun 1999", src_vocab, tgt_vocab)[0]))

    def run(after_step):
        set_seed(0)
        model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16)
        history = train_seq2seq(model, task.train, src_vocab, tgt_vocab, epochs=2,
                                batch_size=32, valid=task.valid, progress=False,
                                after_step=after_step)
        return history, model

    (plain, _), (watched, _) = run(None), run(snapshot)
    assert watched.step_losses == plain.step_losses
    assert watched.epoch_valid_exact == plain.epoch_valid_exact
    assert [step for step, _ in seen] == list(range(1, 7))  # 3 batches x 2 epochs
