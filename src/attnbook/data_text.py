"""Real text that needs no download: the Python standard library's own source.

Every Python installation ships its standard library as `.py` files under
``sysconfig.get_paths()["stdlib"]``. Chapter 9 trains a character-level
language model on a fixed, sorted list of those files, read whole; the last
10% of every file is held out for validation, so that validation text comes
from every file, not from whichever one happens to come last. The files change
a little between Python versions (the book's outputs were made with Python
3.11), so the text, and the losses measured on it, differ slightly on another
version; the chapter's claims hold with margins.

The vocabulary is fixed, not learned from the text: the newline and the 95
printable ASCII characters. Tabs become four spaces and any other character
(a few accented letters in comments) is dropped when the corpus is built; a
character outside the vocabulary in text to encode raises a ValueError.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

# Sorted; long-lived modules of plain Python, present in every CPython 3.x since 3.7.
STDLIB_FILES = ("argparse.py", "calendar.py", "dataclasses.py", "difflib.py", "functools.py",
                "heapq.py", "pprint.py", "textwrap.py")
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


class CharVocab:
    """Characters <-> ids over a fixed alphabet (default: newline and printable ASCII)."""

    def __init__(self, characters: str = CHARACTERS):
        if len(set(characters)) != len(characters) or not characters:
            raise ValueError("characters must be a non-empty string without repeats")
        self.characters = characters
        self.index = {c: i for i, c in enumerate(characters)}

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> torch.Tensor:
        """text -> (len(text),) int64 ids; a character outside the vocabulary raises."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got a {type(text).__name__}")
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError as error:
            char = error.args[0]
            position = text.index(char)
            raise ValueError(f"text holds the character {char!r} (at index {position}), which "
                             f"is not in the vocabulary of {len(self)} characters") from None

    def decode(self, ids) -> str:
        """ids (a 1-D tensor or a list of ints) -> text."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"ids must lie in [0, {len(self)}), got {bad[0]}")
        return "".join(self.characters[i] for i in ids)


def clean(text: str, vocab: CharVocab) -> str:
    """Tabs as four spaces, Windows line ends as newlines, and other characters dropped."""
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return "".join(c for c in text if c in vocab.index)


@dataclass
class TextCorpus:
    """A corpus split once per file: the first (1 - val_fraction) of every file for
    training, the rest of every file for validation (each part joined by newlines)."""

    text: str            # every file whole, joined by newlines
    train: torch.Tensor  # (N_train,) int64
    val: torch.Tensor    # (N_val,) int64
    vocab: CharVocab
    files: tuple[str, ...]


def stdlib_files(files: tuple[str, ...] = STDLIB_FILES, vocab: CharVocab | None = None,
                 root: str | Path | None = None) -> list[str]:
    """The cleaned text of each file (in the given order)."""
    vocab = CharVocab() if vocab is None else vocab
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    parts = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"the standard library file {name} is missing under the "
                                    "stdlib folder of this Python installation")
        parts.append(clean(path.read_text(encoding="utf-8"), vocab))
    return parts


def stdlib_text(files: tuple[str, ...] = STDLIB_FILES, n_chars: int = 300_000,
                vocab: CharVocab | None = None, root: str | Path | None = None) -> str:
    """The first `n_chars` characters of the cleaned, concatenated files (in the given order)."""
    if not isinstance(n_chars, int) or n_chars < 1:
        raise ValueError(f"n_chars must be a positive int, got {n_chars!r}")
    text = "\n".join(stdlib_files(files, vocab, root))
    if len(text) < n_chars:
        raise ValueError(f"the files hold {len(text)} characters, fewer than n_chars={n_chars}")
    return text[:n_chars]


def stdlib_corpus(val_fraction: float = 0.1, files: tuple[str, ...] = STDLIB_FILES,
                  root: str | Path | None = None) -> TextCorpus:
    """The chapter's corpus: every file whole, the last `val_fraction` of each file held
    out for validation; training and validation text each joined by newlines."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    vocab = CharVocab()
    parts = stdlib_files(files, vocab, root)
    cuts = [int(len(part) * (1 - val_fraction)) for part in parts]
    train = "\n".join(part[:cut] for part, cut in zip(parts, cuts))
    val = "\n".join(part[cut:] for part, cut in zip(parts, cuts))
    return TextCorpus("\n".join(parts), vocab.encode(train), vocab.encode(val), vocab,
                      tuple(files))


__all__ = ["STDLIB_FILES", "CHARACTERS", "CharVocab", "clean", "TextCorpus", "stdlib_files",
           "stdlib_text", "stdlib_corpus"]
