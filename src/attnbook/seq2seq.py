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
from typing import NamedTuple

import torch
from torch import nn

from attnbook.attention import (
    AdditiveScore,
    ConcatScore,
    DotScore,
    GeneralScore,
    Score,
    local_attention_weights,
    masked_softmax,
    padding_mask,
)


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
        """tgt_in: (B, T) -> logits (B, T, |𝒱|) and attention weights (B, T, S) or None."""
        state = self.init_state(memory)
        all_logits, all_weights = [], []
        for t in range(tgt_in.shape[1]):
            logits, state, weights = self.step(tgt_in[:, t], state, memory)
            all_logits.append(logits)
            all_weights.append(weights)
        weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
        return torch.stack(all_logits, dim=1), weights


class ContextDecoder(Decoder):
    """The decoder of Cho et al. (2014): the encoder's final state starts the GRU
    and is fed again at every step. It is the only thing the decoder knows about
    the input: the bottleneck."""

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
        logits = self.out(torch.cat([state, context], dim=-1))  # (B, |𝒱|)
        return logits, state, None


class Seq2Seq(nn.Module):
    """An encoder and a decoder; `forward` uses teacher forcing."""

    def __init__(self, encoder: Encoder, decoder: Decoder, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bos_id, self.eos_id = bos_id, eos_id

    def forward(self, src, src_lengths, tgt_in):
        """Logits (B, T, |𝒱|) for every target position, reading the true previous tokens."""
        check_token_batch("src", src, src_lengths)
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


def bidirectional_bottleneck_model(src_vocab_size: int, tgt_vocab_size: int, embed_dim: int = 32,
                                   hidden_dim: int = 128) -> Seq2Seq:
    """The control for chapter 2: chapter 2's bidirectional encoder (hidden_dim // 2 per
    direction) and chapter 1's decoder, which sees only the final states, no attention."""
    encoder = Encoder(src_vocab_size, embed_dim, hidden_dim // 2, bidirectional=True)
    decoder = ContextDecoder(tgt_vocab_size, embed_dim, hidden_dim, encoder.output_dim)
    return Seq2Seq(encoder, decoder)


# Part I, chapters 2 and 3: decoders that attend to every encoder output.


class AttentionState(NamedTuple):
    """What an attention decoder carries from one step to the next."""

    hidden: torch.Tensor              # (B, H) the decoder GRU's state
    keys: torch.Tensor                # (B, S, ...) the score's key part, computed once per input
    feed: torch.Tensor | None = None  # (B, H) Luong's input feeding: the last attentional vector
    t: int = 0                        # the output position being written


def attend(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The context vector: the weighted sum of the values. (B, S), (B, S, D) -> (B, D)."""
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1)


class BahdanauDecoder(Decoder):
    """Bahdanau et al. (2014): before writing each character, the decoder scores every
    encoder output against its previous state, and reads their weighted mean (the
    context) together with the previous character."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, context_dim: int,
                 score: Score):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.bridge = nn.Linear(context_dim, hidden_dim)
        self.score = score  # query: the decoder state (hidden_dim); keys: encoder outputs (context_dim)
        self.cell = nn.GRUCell(embed_dim + context_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + context_dim + embed_dim, vocab_size)

    def init_state(self, memory: EncoderOutput) -> AttentionState:
        hidden = torch.tanh(self.bridge(memory.final))  # (B, H)
        return AttentionState(hidden, self.score.prepare_keys(memory.outputs))

    def step(self, prev_tokens, state, memory):
        scores = self.score(state.hidden, memory.outputs, memory.mask, prepared=state.keys)  # (B, S)
        weights = masked_softmax(scores)  # (B, S), zero at padding
        context = attend(weights, memory.outputs)  # (B, H_enc)
        embedded = self.embed(prev_tokens)  # (B, E)
        hidden = self.cell(torch.cat([embedded, context], dim=-1), state.hidden)
        logits = self.out(torch.cat([hidden, context, embedded], dim=-1))  # (B, |𝒱|)
        return logits, state._replace(hidden=hidden, t=state.t + 1), weights


class LocalWindow(nn.Module):
    """Luong et al.'s local attention: only the 2w + 1 source positions around a centre
    p_t take part, w = half_width (the paper's D). Local-m: p_t = t. Local-p:
    p_t = (L - 1) sigmoid(v . tanh(W h_t)), with L the input's length, and the weights
    are multiplied by a Gaussian of width w / 2."""

    def __init__(self, kind: str, half_width: int, hidden_dim: int, position_dim: int = 64):
        super().__init__()
        if kind not in ("m", "p"):
            raise ValueError(f"kind must be 'm' (monotonic) or 'p' (predictive), got {kind!r}")
        self.kind, self.half_width = kind, half_width
        if kind == "p":
            self.W_p = nn.Linear(hidden_dim, position_dim)
            self.v_p = nn.Linear(position_dim, 1, bias=False)

    def centers(self, hidden: torch.Tensor, t: int, lengths: torch.Tensor) -> torch.Tensor:
        """The window's centre p_t for every sequence: (B,)."""
        if self.kind == "m":
            return torch.full_like(lengths, t, dtype=hidden.dtype)
        where = torch.sigmoid(self.v_p(torch.tanh(self.W_p(hidden)))).squeeze(-1)  # (B,) in (0, 1)
        return (lengths - 1) * where

    def forward(self, scores, hidden, t, mask):
        """Scores (B, S) -> attention weights (B, S), zero outside the window."""
        centers = self.centers(hidden, t, mask.sum(dim=-1))  # (B,)
        return local_attention_weights(scores, centers, mask, self.half_width, self.kind == "p")


class LuongDecoder(Decoder):
    """Luong et al. (2015): the GRU steps first, and its new state is the query. The
    context and the state are combined into an attentional vector that predicts the
    character and, with input feeding, is fed into the next step."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, context_dim: int,
                 score: Score, window: LocalWindow | None = None, input_feeding: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.bridge = nn.Linear(context_dim, hidden_dim)
        self.input_feeding = input_feeding
        self.cell = nn.GRUCell(embed_dim + (hidden_dim if input_feeding else 0), hidden_dim)
        self.score, self.window = score, window  # window None: global attention
        self.combine = nn.Linear(context_dim + hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def init_state(self, memory: EncoderOutput) -> AttentionState:
        hidden = torch.tanh(self.bridge(memory.final))  # (B, H)
        feed = torch.zeros_like(hidden) if self.input_feeding else None
        return AttentionState(hidden, self.score.prepare_keys(memory.outputs), feed)

    def step(self, prev_tokens, state, memory):
        x = self.embed(prev_tokens)  # (B, E)
        if self.input_feeding:
            x = torch.cat([x, state.feed], dim=-1)
        hidden = self.cell(x, state.hidden)  # (B, H)
        scores = self.score(hidden, memory.outputs, memory.mask, prepared=state.keys)  # (B, S)
        if self.window is None:
            weights = masked_softmax(scores)
        else:
            weights = self.window(scores, hidden, state.t, memory.mask)
        context = attend(weights, memory.outputs)  # (B, H_enc)
        attentional = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))  # (B, H)
        logits = self.out(attentional)  # (B, |𝒱|)
        feed = attentional if self.input_feeding else None
        return logits, AttentionState(hidden, state.keys, feed, state.t + 1), weights


def bahdanau_model(src_vocab_size: int, tgt_vocab_size: int, embed_dim: int = 32,
                   hidden_dim: int = 128, attn_dim: int = 64) -> Seq2Seq:
    """Chapter 2's model: a bidirectional GRU encoder (hidden_dim // 2 per direction, so
    its outputs have hidden_dim features) and a decoder with additive attention."""
    encoder = Encoder(src_vocab_size, embed_dim, hidden_dim // 2, bidirectional=True)
    score = AdditiveScore(hidden_dim, encoder.output_dim, attn_dim)
    decoder = BahdanauDecoder(tgt_vocab_size, embed_dim, hidden_dim, encoder.output_dim, score)
    return Seq2Seq(encoder, decoder)


SCORES = {"dot": DotScore, "general": GeneralScore, "concat": ConcatScore, "additive": AdditiveScore}


def make_score(name: str, query_dim: int, key_dim: int, attn_dim: int = 64) -> Score:
    """One of Part I's score functions by name: 'dot', 'general', 'concat' or 'additive'."""
    if name not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {name!r}")
    if name in ("dot", "general"):
        return SCORES[name](query_dim, key_dim)
    return SCORES[name](query_dim, key_dim, attn_dim)


def luong_model(src_vocab_size: int, tgt_vocab_size: int, score: str = "general",
                local: str | None = None, half_width: int = 8, input_feeding: bool = True,
                embed_dim: int = 32, hidden_dim: int = 128, attn_dim: int = 64) -> Seq2Seq:
    """Chapter 3's model: chapter 2's encoder and a Luong decoder with the named score,
    global attention (local=None) or local attention (local='m' or 'p')."""
    encoder = Encoder(src_vocab_size, embed_dim, hidden_dim // 2, bidirectional=True)
    window = None if local is None else LocalWindow(local, half_width, hidden_dim)
    decoder = LuongDecoder(tgt_vocab_size, embed_dim, hidden_dim, encoder.output_dim,
                           make_score(score, hidden_dim, encoder.output_dim, attn_dim),
                           window, input_feeding)
    return Seq2Seq(encoder, decoder)


def translate(model: Seq2Seq, text: str, src_vocab, tgt_vocab, max_len: int = 64):
    """Greedy-decode one input string; return the output string and its alignment,
    a (len(output) + 1, len(text)) tensor of attention weights (the last row: <eos>),
    or None for a decoder without attention."""
    if not text:
        raise ValueError("text must have at least one character")
    device = next(model.parameters()).device
    src = torch.tensor([src_vocab.encode(text)], device=device)  # (1, S)
    model.eval()
    with torch.no_grad():
        tokens, weights = greedy_decode(model, src, torch.tensor([len(text)], device=device), max_len)
    output = tgt_vocab.decode(tokens[0])
    if weights is None:
        return output, None
    return output, weights[0, :len(output) + 1].cpu()
