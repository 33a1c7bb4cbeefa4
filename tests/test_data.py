import datetime as dt
import random

import pytest
import torch

from attnbook.data import (
    N_FORMATS,
    Vocab,
    batches,
    date_vocabs,
    format_date,
    make_batch,
    make_date_task,
    ordinal,
    random_example,
)


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]


def test_every_format_names_the_date_unambiguously():
    day = dt.date(2021, 4, 3)  # a Saturday
    written = [format_date(day, style) for style in range(N_FORMATS)]
    assert "3 April 2021" in written and "Sat 3 Apr 2021" in written and "03.04.2021" in written
    assert "Saturday, 3 April 2021" in written and "the 3rd of April 2021" in written
    assert len(set(written)) == N_FORMATS


def test_format_date_rejects_unknown_style():
    with pytest.raises(ValueError, match="style"):
        format_date(dt.date(2000, 1, 1), N_FORMATS)


def test_targets_are_iso_dates_matching_the_count():
    rng = random.Random(3)
    for n in (1, 2, 3):
        example = random_example(rng, n)
        parts = example.target.split(";")
        assert len(parts) == n == example.n_dates
        for part in parts:
            dt.date.fromisoformat(part)  # raises if not ISO 8601


def test_task_is_deterministic_and_splits_never_overlap():
    a = make_date_task(n_train=500, n_valid=100, n_test=100, seed=7)
    b = make_date_task(n_train=500, n_valid=100, n_test=100, seed=7)
    assert a == b
    assert make_date_task(n_train=500, n_valid=100, n_test=100, seed=8) != a
    train, valid, test = ({e.source for e in split} for split in (a.train, a.valid, a.test))
    assert len(train) == 500 and len(valid) == 100 and len(test) == 100
    assert not (train & valid) and not (train & test) and not (valid & test)


def test_number_of_dates_controls_input_length():
    short = make_date_task(n_train=200, n_valid=10, n_test=10, min_dates=1, max_dates=1, seed=0)
    long = make_date_task(n_train=200, n_valid=10, n_test=10, min_dates=3, max_dates=3, seed=0)
    mean = lambda split: sum(len(e.source) for e in split) / len(split)  # noqa: E731
    assert mean(long.train) > 2.5 * mean(short.train)
    assert {e.n_dates for e in long.train} == {3}


@pytest.mark.parametrize("kwargs, word", [
    ({"n_train": 0}, "n_train"),
    ({"n_test": -5}, "n_test"),
    ({"min_dates": 0}, "min_dates"),
    ({"min_dates": 3, "max_dates": 2}, "max_dates"),
    ({"max_dates": 11}, "max_dates"),
    ({"min_dates": 1, "max_dates": 1, "n_train": 50_000}, "n_train"),
])
def test_impossible_sizes_are_rejected_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_date_task(**kwargs)


def test_vocab_round_trip_and_unknown_characters():
    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=300, n_valid=10, n_test=10, seed=1)
    for example in task.train:
        assert src_vocab.decode(src_vocab.encode(example.source)) == example.source
        assert tgt_vocab.decode(tgt_vocab.encode(example.target)) == example.target
    assert tgt_vocab.decode([5, 6, tgt_vocab.eos_id, 7]) == tgt_vocab.decode([5, 6])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tgt_vocab.encode("2021-04-03Z")


def test_vocab_specials_come_first():
    vocab = Vocab("cab")
    assert vocab.itos[:3] == ["<pad>", "<bos>", "<eos>"] and vocab.itos[3:] == ["a", "b", "c"]


def test_batch_is_padded_and_shifted():
    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=50, n_valid=10, n_test=10, seed=2)
    batch = make_batch(task.train[:5], src_vocab, tgt_vocab)
    lengths = [len(e.source) for e in task.train[:5]]
    assert batch.src.shape == (5, max(lengths))
    assert batch.src_lengths.tolist() == lengths
    for row, length in enumerate(lengths):
        assert (batch.src[row, length:] == src_vocab.pad_id).all()
        assert (batch.src[row, :length] != src_vocab.pad_id).all()
    assert (batch.tgt_in[:, 0] == tgt_vocab.bos_id).all()
    # tgt_out is tgt_in shifted left by one, with <eos> after each target
    for row, example in enumerate(task.train[:5]):
        n = len(example.target)
        assert torch.equal(batch.tgt_in[row, 1:n + 1], batch.tgt_out[row, :n])
        assert batch.tgt_out[row, n] == tgt_vocab.eos_id


def test_batches_cover_every_example_once_and_shuffle_by_seed():
    src_vocab, tgt_vocab = date_vocabs()
    examples = make_date_task(n_train=103, n_valid=10, n_test=10, seed=4).train
    seen = [e for b in batches(examples, src_vocab, tgt_vocab, 10, shuffle=True, seed=1)
            for e in b.examples]
    assert sorted(e.source for e in seen) == sorted(e.source for e in examples)
    again = [e for b in batches(examples, src_vocab, tgt_vocab, 10, shuffle=True, seed=1)
             for e in b.examples]
    assert seen == again and seen != examples
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(examples, src_vocab, tgt_vocab, 0))
