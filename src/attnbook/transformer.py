"""The Transformer of Vaswani et al. (2017): blocks, encoder, decoder (chapter 8).

Every block is a sub-layer wrapped in a residual connection and a LayerNorm, in one
of two arrangements:

    post-norm (the paper):  x = LayerNorm(x + Dropout(sublayer(x)))
    pre-norm (Xiong et al.): x = x + Dropout(sublayer(LayerNorm(x)))   (+ a final LayerNorm)

An encoder block has two sub-layers (self-attention, feed-forward), a decoder block
three (masked self-attention, cross-attention to the encoder, feed-forward).
`Transformer` has the interface of `seq2seq.Seq2Seq`, so `train.predict` and friends
work with it: `model(src, src_lengths, tgt_in)` gives logits and
`model.greedy_decode(src, src_lengths, max_len)` gives tokens and cross-attention.

Shapes: B = batch, S = source length, T = target length, D = d_model, H = heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attnbook.attention import causal_mask, padding_mask
from attnbook.multihead import MultiHeadAttention
from attnbook.positional import sinusoidal_encoding

NORMS = ("post", "pre")


class FeedForward(nn.Module):
    """The position-wise feed-forward block: the same two-layer MLP at every position."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.expand = nn.Linear(d_model, d_ff)
        self.contract = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.contract(self.dropout(torch.relu(self.expand(x))))


class Attention(MultiHeadAttention):
    """`multihead.MultiHeadAttention` with the Transformer's arguments: width, heads,
    dropout on the attention weights (chapter 7), and `rope` for self-attention.

    In evaluation mode, or with dropout 0, it is exactly the parent's forward; in
    training it drops weights (each row then sums to 1 only in expectation, the kept
    ones rescaled by 1 / (1 - p)) before they average the values, and returns the
    weights before dropout. With `rope`, the queries and keys are rotated by their
    positions (`positional.apply_rope`), so the scores see relative positions: for
    self-attention only.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0,
                 rope: bool = False):
        super().__init__(d_model, n_heads, rope=rope, dropout=dropout)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be 'post' (the paper's) or 'pre', got {norm!r}")


class Residual(nn.Module):
    """One sub-layer with its residual connection, dropout and LayerNorm.

    post: LayerNorm(x + dropout(f(x))); pre: x + dropout(f(LayerNorm(x))).
    `f` returns a tensor, or (tensor, attention weights), passed on as they are.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, norm: str = "post"):
        super().__init__()
        check_norm(norm)
        self.norm_kind = norm
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_kind == "pre":
            out = sublayer(self.norm(x))
        else:
            out = sublayer(x)
        out, weights = out if isinstance(out, tuple) else (out, None)
        x = x + self.dropout(out)
        if self.norm_kind == "post":
            x = self.norm(x)
        return x, weights


class EncoderBlock(nn.Module):
    """Self-attention over the source, then the feed-forward block."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm: str = "post", rope: bool = False):
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, dropout, rope)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.attn_residual = Residual(d_model, dropout, norm)
        self.ff_residual = Residual(d_model, dropout, norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """x (B, S, D), mask (B, 1, 1, S) True at real keys -> (B, S, D), weights (B, H, S, S)."""
        x, weights = self.attn_residual(x, lambda h: self.self_attn(h, h, h, mask))
        x, _ = self.ff_residual(x, self.ff)
        return x, weights


class DecoderBlock(nn.Module):
    """Masked self-attention over the output so far, cross-attention to the encoder's
    outputs, then the feed-forward block."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm: str = "post", rope: bool = False):
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, dropout, rope)
        # No rotation across: output and input positions do not share one axis.
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.self_residual = Residual(d_model, dropout, norm)
        self.cross_residual = Residual(d_model, dropout, norm)
        self.ff_residual = Residual(d_model, dropout, norm)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                self_mask: torch.Tensor | None = None):
        """y (B, T, D), memory (B, S, D), memory_mask (B, 1, 1, S), self_mask (T, T)
        (default: causal) -> (B, T, D), self weights (B, H, T, T), cross weights (B, H, T, S)."""
        if self_mask is None:
            self_mask = causal_mask(y.shape[1], device=y.device)  # (T, T)
        y, self_weights = self.self_residual(y, lambda h: self.self_attn(h, h, h, self_mask))
        y, cross_weights = self.cross_residual(
            y, lambda h: self.cross_attn(h, memory, memory, memory_mask))
        y, _ = self.ff_residual(y, self.ff)
        return y, self_weights, cross_weights


class Embedding(nn.Module):
    """Token embedding times sqrt(d_model), plus the sinusoidal positions, then dropout."""

    def __init__(self, vocab_size: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=0)
        # Initialized with variance 1 / d_model (tensor2tensor's convention; the paper
        # states none): times sqrt(d_model), each entry has variance 1, the order of the
        # sinusoids (mean square 1/2). nn.Embedding's N(0, 1) would give a standard
        # deviation of sqrt(d_model), about 11 times the sinusoids' at d_model = 64.
        with torch.no_grad():
            nn.init.normal_(self.tokens.weight, std=d_model ** -0.5)
            self.tokens.weight[0].zero_()
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) * math.sqrt(self.d_model)  # (B, L, D)
        table = sinusoidal_encoding(ids.shape[1], self.d_model, dtype=x.dtype, device=x.device)
        return self.dropout(x + table)


@dataclass
class Attentions:
    """Every attention map of one forward pass, one (B, H, Lq, Lk) tensor per layer."""

    encoder: list[torch.Tensor]  # (B, H, S, S)
    decoder: list[torch.Tensor]  # (B, H, T, T)
    cross: list[torch.Tensor]    # (B, H, T, S)


def check_tokens(name: str, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
    """Raise a ValueError naming `name` unless `tokens` is (B, L) integer ids and
    `lengths` (if given) is (B,) with 1 <= length <= L."""
    if not torch.is_tensor(tokens) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__
        raise ValueError(f"{name} must be a (batch, length) tensor of token ids, got {shape}")
    if tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if lengths is None:
        return
    if not torch.is_tensor(lengths) or lengths.shape != tokens.shape[:1]:
        shape = tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__
        raise ValueError(f"lengths must have shape ({tokens.shape[0]},) to match {name} of "
                         f"shape {tuple(tokens.shape)}, got {shape}")
    if lengths.min() < 1 or lengths.max() > tokens.shape[1]:
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}] for {name} of shape "
                         f"{tuple(tokens.shape)}, got min {lengths.min().item()} "
                         f"and max {lengths.max().item()}")


class Transformer(nn.Module):
    """The encoder-decoder Transformer, with the interface of `seq2seq.Seq2Seq`.

    The embeddings add sinusoidal positions; `rope=True` also rotates queries and
    keys (RoPE) in the self-attention of the encoder and of the decoder, which
    then see relative positions too (cross-attention is left as it is).
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 64,
                 n_heads: int = 4, d_ff: int = 256, n_layers: int = 2,
                 n_decoder_layers: int | None = None, dropout: float = 0.0,
                 norm: str = "post", bos_id: int = 1, eos_id: int = 2,
                 rope: bool = False):
        super().__init__()
        check_norm(norm)
        n_decoder_layers = n_layers if n_decoder_layers is None else n_decoder_layers
        self.norm, self.bos_id, self.eos_id = norm, bos_id, eos_id
        self.src_embed = Embedding(src_vocab_size, d_model, dropout)
        self.tgt_embed = Embedding(tgt_vocab_size, d_model, dropout)
        self.encoder = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, dropout, norm, rope)
                                     for _ in range(n_layers))
        self.decoder = nn.ModuleList(DecoderBlock(d_model, n_heads, d_ff, dropout, norm, rope)
                                     for _ in range(n_decoder_layers))
        # Pre-norm leaves the residual stream unnormalized: one LayerNorm at each end.
        self.encoder_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.out = nn.Linear(d_model, tgt_vocab_size)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, maps: list | None = None):
        """src (B, S), src_lengths (B,) -> memory (B, S, D), key mask (B, 1, 1, S)."""
        check_tokens("src", src, src_lengths)
        mask = padding_mask(src_lengths, src.shape[1])[:, None, None, :]  # (B, 1, 1, S)
        x = self.src_embed(src)
        for block in self.encoder:
            x, weights = block(x, mask)
            if maps is not None:
                maps.append(weights)
        return self.encoder_norm(x), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               self_maps: list | None = None, cross_maps: list | None = None) -> torch.Tensor:
        """tgt_in (B, T), memory (B, S, D) -> logits (B, T, |V|); position t reads tgt_in[:, :t+1]."""
        y = self.tgt_embed(tgt_in)
        for block in self.decoder:
            y, self_weights, cross_weights = block(y, memory, memory_mask)
            if self_maps is not None:
                self_maps.append(self_weights)
                cross_maps.append(cross_weights)
        return self.out(self.decoder_norm(y))

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, |V|) for every target position, reading the true previous tokens."""
        check_tokens("tgt_in", tgt_in)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"src has batch size {src.shape[0]} (shape {tuple(src.shape)}) but "
                             f"tgt_in has {tgt_in.shape[0]} (shape {tuple(tgt_in.shape)})")
        memory, mask = self.encode(src, src_lengths)
        return self.decode(tgt_in, memory, mask)

    @torch.no_grad()
    def attention_maps(self, src, src_lengths, tgt_in) -> Attentions:
        """The weights of every attention layer for one teacher-forced pass (eval mode)."""
        was_training = self.training
        self.eval()
        maps = Attentions([], [], [])
        memory, mask = self.encode(src, src_lengths, maps.encoder)
        self.decode(tgt_in, memory, mask, maps.decoder, maps.cross)
        self.train(was_training)
        return maps

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, src_lengths: torch.Tensor, max_len: int = 64):
        """Feed back the most likely token until every row has written <eos>.

        Without a cache, each step re-reads the whole prefix. Returns tokens (B, L)
        without <bos>, and the last layer's cross-attention averaged over heads (B, L, S).
        """
        memory, mask = self.encode(src, src_lengths)
        batch = src.shape[0]
        prefix = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        cross: list[torch.Tensor] = []
        for _ in range(max_len):
            self_maps, cross_maps = [], []
            logits = self.decode(prefix, memory, mask, self_maps, cross_maps)
            tokens = logits[:, -1].argmax(dim=-1)  # (B,)
            prefix = torch.cat([prefix, tokens[:, None]], dim=1)
            cross.append(cross_maps[-1][:, :, -1].mean(dim=1))  # (B, S)
            finished |= tokens == self.eos_id
            if finished.all():
                break
        return prefix[:, 1:], torch.stack(cross, dim=1)


def transformer_rate(step: int, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    """The learning rate of Vaswani et al. at `step` (counted from 1):

        factor * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5),

    a linear rise for `warmup_steps` steps, then a decay as 1 / sqrt(step).
    """
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    if not isinstance(warmup_steps, int) or warmup_steps < 1:
        raise ValueError(f"warmup_steps must be a positive integer, got {warmup_steps!r}")
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def warmup_linear_rate(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Warm-up for a fixed budget: a linear rise to `peak` over `warmup_steps` steps,
    then a linear fall to 0 at `total_steps` (step counted from 1)."""
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    if not isinstance(warmup_steps, int) or not 1 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an integer in [1, total_steps={total_steps}), "
                         f"got {warmup_steps!r}")
    if step <= warmup_steps:
        return peak * step / warmup_steps
    return peak * max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def warmup_scheduler(optimizer: torch.optim.Optimizer,
                     rate: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that sets every group's learning rate to `rate(step)` (step counted
    from 1), whatever lr the optimizer was created with; call `scheduler.step()` after
    each `optimizer.step()`. For the paper's schedule:
    `warmup_scheduler(optimizer, lambda s: transformer_rate(s, d_model, 4000))`."""
    def relative(initial: float):
        return lambda s: rate(s + 1) / initial

    lambdas = [relative(group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def n_parameters(module: nn.Module) -> int:
    """The number of trained numbers in `module`."""
    return sum(p.numel() for p in module.parameters())
