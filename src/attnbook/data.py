"""The course's running task, its vocabularies and its batches.

The task: read one or more calendar dates written the way people write them
("3 April 2021; Sat 5 Jun 1999") and write them in ISO 8601
("2021-04-03;1999-06-05"). The number of dates sets the input length, so the
same task measures how a model copes as inputs grow. Everything is generated
from a seed; nothing is downloaded.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import torch

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST_DAY = dt.date(1950, 1, 1)
LAST_DAY = dt.date(2049, 12, 31)
INPUT_SEPARATOR = "; "
OUTPUT_SEPARATOR = ";"


def ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Every format is day-before-month or spells the month, so no input is ambiguous.
def _formats(d: dt.date) -> list[str]:
    month, mon = MONTHS[d.month - 1], MONTHS[d.month - 1][:3]
    weekday, wkd = WEEKDAYS[d.weekday()], WEEKDAYS[d.weekday()][:3]
    return [
        f"{d.day} {month} {d.year}",
        f"{month} {d.day}, {d.year}",
        f"{d.day} {mon} {d.year}",
        f"{mon} {d.day}, {d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{d.day}/{d.month}/{d.year}",
        f"{weekday}, {d.day} {month} {d.year}",
        f"{wkd} {d.day} {mon} {d.year}",
        f"the {ordinal(d.day)} of {month} {d.year}",
        f"{month} {ordinal(d.day)}, {d.year}",
        f"{d.year}, {month} {d.day}",
    ]


N_FORMATS = len(_formats(FIRST_DAY))


def format_date(d: dt.date, style: int) -> str:
    """Write `d` in human format number `style` (0 <= style < N_FORMATS)."""
    if not 0 <= style < N_FORMATS:
        raise ValueError(f"style must be in [0, {N_FORMATS}), got {style}")
    return _formats(d)[style]


@dataclass(frozen=True)
class Example:
    source: str  # what a person wrote
    target: str  # the ISO 8601 answer
    n_dates: int


def random_example(rng: random.Random, n_dates: int) -> Example:
    """One example with `n_dates` dates, drawn with `rng`."""
    span = (LAST_DAY - FIRST_DAY).days
    dates = [FIRST_DAY + dt.timedelta(days=rng.randrange(span + 1)) for _ in range(n_dates)]
    sources = [format_date(d, rng.randrange(N_FORMATS)) for d in dates]
    return Example(
        source=INPUT_SEPARATOR.join(sources),
        target=OUTPUT_SEPARATOR.join(d.isoformat() for d in dates),
        n_dates=n_dates,
    )


@dataclass
class DateTask:
    """Train, validation and test splits of the date task; no input is in two splits."""

    train: list[Example]
    valid: list[Example]
    test: list[Example]


def make_date_task(
    n_train: int = 20_000,
    n_valid: int = 1_000,
    n_test: int = 2_000,
    min_dates: int = 1,
    max_dates: int = 3,
    seed: int = 0,
) -> DateTask:
    """Generate the task from `seed`. The number of dates per example is uniform
    in [min_dates, max_dates]; it controls the input length."""
    for name, value in [("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(min_dates, int) or min_dates < 1:
        raise ValueError(f"min_dates must be an integer >= 1, got {min_dates!r}")
    if not isinstance(max_dates, int) or max_dates < min_dates:
        raise ValueError(f"max_dates must be an integer >= min_dates={min_dates}, got {max_dates!r}")
    if max_dates > 10:
        raise ValueError(f"max_dates must be at most 10 (inputs of ~300 characters), got {max_dates}")
    total = n_train + n_valid + n_test
    if min_dates == max_dates == 1 and total > 20_000:
        raise ValueError(f"n_train + n_valid + n_test = {total} is more than the ~20,000 "
                         "distinct one-date inputs that are safe to draw; lower the sizes")

    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[Example] = []
    while len(examples) < total:
        example = random_example(rng, rng.randint(min_dates, max_dates))
        if example.source not in seen:  # a repeated input would leak across splits
            seen.add(example.source)
            examples.append(example)
    return DateTask(
        train=examples[:n_train],
        valid=examples[n_train:n_train + n_valid],
        test=examples[n_train + n_valid:],
    )


class Vocab:
    """Characters <-> integer ids, with padding, begin and end of sequence."""

    PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

    def __init__(self, characters: str):
        specials = [self.PAD, self.BOS, self.EOS]
        chars = sorted(set(characters))
        self.itos: list[str] = specials + chars
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @classmethod
    def from_texts(cls, texts: list[str]) -> Vocab:
        return cls("".join(texts))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self.stoi})
        if unknown:
            raise ValueError(f"text {text!r} has characters not in the vocabulary: {unknown}")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        """Ids to text, stopping at the first <eos> and skipping <pad> and <bos>."""
        chars = []
        for i in (ids.tolist() if torch.is_tensor(ids) else ids):
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                chars.append(self.itos[i])
        return "".join(chars)


@dataclass
class Batch:
    """A padded batch. B = batch size, S = longest source, T = longest target + 1."""

    src: torch.Tensor          # (B, S) source ids, padded with pad_id
    src_lengths: torch.Tensor  # (B,) number of real source characters
    tgt_in: torch.Tensor       # (B, T) <bos> + target: what the decoder reads
    tgt_out: torch.Tensor      # (B, T) target + <eos>: what it must predict
    examples: list[Example]

    def to(self, device) -> Batch:
        return Batch(self.src.to(device), self.src_lengths.to(device),
                     self.tgt_in.to(device), self.tgt_out.to(device), self.examples)


def pad_sequences(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad integer sequences into a (len(sequences), longest) tensor."""
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def make_batch(examples: list[Example], src_vocab: Vocab, tgt_vocab: Vocab) -> Batch:
    sources = [src_vocab.encode(e.source) for e in examples]
    targets = [tgt_vocab.encode(e.target) for e in examples]
    return Batch(
        src=pad_sequences(sources, src_vocab.pad_id),
        src_lengths=torch.tensor([len(s) for s in sources], dtype=torch.long),
        tgt_in=pad_sequences([[tgt_vocab.bos_id] + t for t in targets], tgt_vocab.pad_id),
        tgt_out=pad_sequences([t + [tgt_vocab.eos_id] for t in targets], tgt_vocab.pad_id),
        examples=list(examples),
    )


def batches(examples: list[Example], src_vocab: Vocab, tgt_vocab: Vocab, batch_size: int,
            shuffle: bool = False, seed: int = 0):
    """Yield padded batches; with `shuffle`, in an order drawn from `seed`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(examples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        yield make_batch(chunk, src_vocab, tgt_vocab)


def date_vocabs() -> tuple[Vocab, Vocab]:
    """Source and target vocabularies: every character the generator can write."""
    every_format = "".join("".join(_formats(dt.date(2000, month, 28))) for month in range(1, 13))
    source_chars = every_format + "".join(WEEKDAYS) + "0123456789" + INPUT_SEPARATOR + "stndrh"
    target_chars = "0123456789-" + OUTPUT_SEPARATOR
    return Vocab(source_chars), Vocab(target_chars)
