"""Encoder-decoder models for the running task (Part I).

Chapter 1 builds the model without attention: the encoder squeezes the whole
input into one vector, and the decoder must write every output character from
it. Every decoder here shares one interface, so the same training loop and
greedy decoding work for the attention decoders of later chapters:

    state = decoder.init_state(memory)
    logits, state, weights = decoder.step(prev_tokens, state, memory)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnbook.attention import padding_mask


@dataclass
class EncoderOutput:
    """What the encoder hands the decoder. B = batch, S = source length."""

    outputs: torch.Tensor  # (B, S, H_enc) one vector per source position, zero at padding
    final: torch.Tensor    # (B, H_enc) the summary of the whole input
    mask: torch.Tensor     # (B, S) True at real (not padded) positions


def check_token_batch(name: str, tokens: torch.Tensor, lengths: torch.Tensor | None = None):
    """Raise a ValueError naming `name` unless `tokens` is a (B, S) integer batch
    and `lengths` (if given) is (B,) with 1 <= length <= S."""
    if not torch.is_tensor(tokens) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__
        raise ValueError(f"{name} must be a (batch, length) tensor of token ids, got {shape}")
    if tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if lengths is None:
        return
    if lengths.shape != tokens.shape[:1]:
        raise ValueError(f"lengths must have shape ({tokens.shape[0]},) to match {name} of shape "
                         f"{tuple(tokens.shape)}, got {tuple(lengths.shape)}")
    if lengths.min() < 1 or lengths.max() > tokens.shape[1]:
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}] for {name} of shape "
                         f"{tuple(tokens.shape)}, got min {lengths.min().item()} "
                         f"and max {lengths.max().item()}")


def last_real_state(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The output at each sequence's last real position: outputs[b, lengths[b] - 1].

    outputs: (B, S, H), lengths: (B,) -> (B, H). With padded batches,
    outputs[:, -1] would be the state after reading padding, not the input.
    """
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])  # (B, 1, H)
    return outputs.gather(1, index).squeeze(1)


class Encoder(nn.Module):
    """Character embedding followed by a GRU; padding never reaches the GRU."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int,
                 bidirectional: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=bidirectional)
        self.output_dim = hidden_dim * (2 if bidirectional else 1)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        check_token_batch("src", src, src_lengths)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(src), src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, h_n = self.rnn(packed)  # h_n: (directions, B, H)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(
            packed_outputs, batch_first=True, total_length=src.shape[1])  # (B, S, H_enc)
        final = torch.cat(list(h_n), dim=-1)  # forward (and backward) final states
        return EncoderOutput(outputs, final, padding_mask(src_lengths, src.shape[1]))


class Decoder(nn.Module):
    """Base class: teacher-forced decoding as a loop over `step`."""

    def init_state(self, memory: EncoderOutput):
        raise NotImplementedError

    def step(self, prev_tokens: torch.Tensor, state, memory: EncoderOutput):
        raise NotImplementedError

    def forward(self, tgt_in: torch.Tensor, memory: EncoderOutput):
        """tgt_in: (B, T) -> logits (B, T, V) and attention weights (B, T, S) or None."""
        state = self.init_state(memory)
        all_logits, all_weights = [], []
        for t in range(tgt_in.shape[1]):
            logits, state, weights = self.step(tgt_in[:, t], state, memory)
            all_logits.append(logits)
            all_weights.append(weights)
        weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
        return torch.stack(all_logits, dim=1), weights


class ContextDecoder(Decoder):
    """The decoder of Cho et al. (2014) and Sutskever et al. (2014): the encoder's
    final state starts the GRU and is fed again at every step. It is the only
    thing the decoder knows about the input: the bottleneck."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, context_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.bridge = nn.Linear(context_dim, hidden_dim)
        self.cell = nn.GRUCell(embed_dim + context_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + context_dim, vocab_size)

    def init_state(self, memory: EncoderOutput) -> torch.Tensor:
        return torch.tanh(self.bridge(memory.final))  # (B, H)

    def step(self, prev_tokens, state, memory):
        context = memory.final  # (B, H_enc), the same at every step
        x = torch.cat([self.embed(prev_tokens), context], dim=-1)
        state = self.cell(x, state)
        logits = self.out(torch.cat([state, context], dim=-1))  # (B, V)
        return logits, state, None


class Seq2Seq(nn.Module):
    """An encoder and a decoder; `forward` uses teacher forcing."""

    def __init__(self, encoder: Encoder, decoder: Decoder, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bos_id, self.eos_id = bos_id, eos_id

    def forward(self, src, src_lengths, tgt_in):
        """Logits (B, T, V) for every target position, reading the true previous tokens."""
        check_token_batch("tgt_in", tgt_in)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"src has batch size {src.shape[0]} (shape {tuple(src.shape)}) but "
                             f"tgt_in has {tgt_in.shape[0]} (shape {tuple(tgt_in.shape)})")
        logits, _ = self.decoder(tgt_in, self.encoder(src, src_lengths))
        return logits

    @torch.no_grad()
    def greedy_decode(self, src, src_lengths, max_len: int = 64):
        """Feed back the most likely token until every row has written <eos>.

        Returns tokens (B, L) without <bos>, and attention weights (B, L, S) or None.
        """
        return greedy_decode(self, src, src_lengths, max_len)


def greedy_decode(model: Seq2Seq, src, src_lengths, max_len: int = 64):
    """Greedy decoding with any decoder that follows the `step` interface."""
    memory = model.encoder(src, src_lengths)
    state = model.decoder.init_state(memory)
    tokens = torch.full((src.shape[0],), model.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    outputs, all_weights = [], []
    for _ in range(max_len):
        logits, state, weights = model.decoder.step(tokens, state, memory)
        tokens = logits.argmax(dim=-1)  # (B,)
        outputs.append(tokens)
        all_weights.append(weights)
        finished |= tokens == model.eos_id
        if finished.all():
            break
    weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
    return torch.stack(outputs, dim=1), weights


def bottleneck_model(src_vocab_size: int, tgt_vocab_size: int, embed_dim: int = 32,
                     hidden_dim: int = 128) -> Seq2Seq:
    """Chapter 1's model: a GRU encoder and a decoder that sees only its final state."""
    encoder = Encoder(src_vocab_size, embed_dim, hidden_dim)
    decoder = ContextDecoder(tgt_vocab_size, embed_dim, hidden_dim, encoder.output_dim)
    return Seq2Seq(encoder, decoder)
