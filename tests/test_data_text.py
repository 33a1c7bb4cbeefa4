"""Tests of attnbook.data_text: the standard-library corpus and the character vocabulary."""

from __future__ import annotations

import pytest

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


def test_stdlib_text_is_the_same_text_every_time():
    text = stdlib_text(n_chars=50_000)
    assert len(text) == 50_000 and text == stdlib_text(n_chars=50_000)
    assert text.startswith("# Author: Steven J. Bethard")


def test_corpus_holds_out_the_end_of_every_file(tmp_path):
    (tmp_path / "a.py").write_text("a" * 90 + "b" * 10)
    (tmp_path / "b.py").write_text("c" * 45 + "d" * 5)
    corpus = stdlib_corpus(0.1, files=("a.py", "b.py"), root=tmp_path)
    vocab = corpus.vocab
    assert vocab.decode(corpus.train) == "a" * 90 + "\n" + "c" * 45
    assert vocab.decode(corpus.val) == "b" * 10 + "\n" + "d" * 5
    assert corpus.text == "a" * 90 + "b" * 10 + "\n" + "c" * 45 + "d" * 5


def test_the_chapter_corpus_validates_on_every_file():
    corpus = stdlib_corpus(val_fraction=0.1)
    val = corpus.vocab.decode(corpus.val)
    assert len(corpus.train) + len(corpus.val) == len(corpus.text) + len(corpus.files) - 1
    assert 0.09 < len(corpus.val) / len(corpus.text) < 0.11
    # text from the end of the first file (argparse) and of the last (textwrap)
    assert "intermixed" in val and "dedent(" in val


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        stdlib_corpus(val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="missing"):
        stdlib_text(files=("no_such_module.py",))
    (tmp_path / "tiny.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="fewer than n_chars"):
        stdlib_text(files=("tiny.py",), n_chars=100, root=tmp_path)
