"""Tests of attnbook.data_text: the standard-library corpus and the character vocabulary."""

from __future__ import annotations

import pytest
import torch

from attnbook.data_text import CHARACTERS, CharVocab, clean, stdlib_corpus, stdlib_text


def test_vocabulary_round_trip_and_unknown_character():
    vocab = CharVocab()
    assert len(vocab) == 96 and CHARACTERS[0] == "\n"
    text = "def f(x):\n    return x ** 2  # ok\n"
    assert vocab.decode(vocab.encode(text)) == text
    with pytest.raises(ValueError, match=r"character 'é' \(at index 3\).*not in the vocabulary"):
        vocab.encode("caf\u00e9")
    with pytest.raises(ValueError, match="ids must lie in"):
        vocab.decode([96])


def test_clean_expands_tabs_and_drops_other_characters():
    assert clean("a\tb\r\nc\u00e7", CharVocab()) == "a    b\nc"


def test_corpus_is_the_same_text_every_time_and_split_in_order():
    corpus = stdlib_corpus(n_chars=50_000, val_fraction=0.1)
    assert len(corpus.text) == 50_000
    assert corpus.text == stdlib_text(n_chars=50_000)
    assert torch.equal(torch.cat([corpus.train, corpus.val]), corpus.vocab.encode(corpus.text))
    assert len(corpus.val) == 5_000
    assert corpus.text.startswith("# Author: Steven J. Bethard")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        stdlib_corpus(val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="missing"):
        stdlib_text(files=("no_such_module.py",))
    (tmp_path / "tiny.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="fewer than n_chars"):
        stdlib_text(files=("tiny.py",), n_chars=100, root=tmp_path)
