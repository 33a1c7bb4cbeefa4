"""A decoder-only (causal) language model, its KV cache, sampling and generation (chapter 9).

`CausalLM` is a stack of pre-norm blocks: causal self-attention with rotary
positions (`positional.apply_rope`) and `transformer.FeedForward`. Its attention
is grouped-query attention: `n_heads` query heads share `n_kv_heads` key/value
heads (`n_kv_heads == n_heads` is multi-head attention, `n_kv_heads == 1`
multi-query attention). The attention itself is `attention.scaled_dot_product_attention`.

`KVCache` preallocates, per layer, keys and values of shape
(batch, n_kv_heads, max_len, head_dim); a forward pass given a cache computes
keys and values only for its new tokens and attends over everything stored.

Shapes: B = batch, L = new tokens, H = query heads, Hkv = key/value heads (the
number of groups: Ainslie et al.'s GQA-G has G = Hkv), H / Hkv query heads per
group, d = head_dim, V = vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attnbook.attention import causal_mask, scaled_dot_product_attention
from attnbook.multihead import merge_heads, split_heads
from attnbook.positional import apply_rope
from attnbook.transformer import FeedForward

# --- Grouped-query attention --------------------------------------------------------------


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor,
                            v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, H, Lq, d) over k, v (B, Hkv, Lk, d), Hkv dividing H.

    Hkv groups of H / Hkv query heads: query head h reads key/value head
    h // (H / Hkv), as in F.scaled_dot_product_attention(..., enable_gqa=True). The
    queries are the last Lq of the Lk positions. Keys and values are not copied
    to every query head: the query heads of a group are stacked along the length,
    (B, Hkv, H / Hkv * Lq, d), and attend to their group's keys in one call.
    """
    batch, n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys = k.shape[1], k.shape[2]
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"k and v must have shape (B={batch}, Hkv, Lk, d={head_dim}), "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if n_heads % n_kv_heads != 0:
        raise ValueError(f"the key/value heads of k {tuple(k.shape)} ({n_kv_heads}) "
                         f"must divide the query heads of q {tuple(q.shape)} "
                         f"({n_heads})")
    group_size = n_heads // n_kv_heads  # query heads per key/value head
    # (B, H, Lq, d) -> (B, Hkv, S*Lq, d), S = group_size: head h = jS + i is in group j
    stacked = q.reshape(batch, n_kv_heads, group_size * n_queries, head_dim)
    mask = causal_mask(n_queries, n_keys, q.device).repeat(group_size, 1)  # (S*Lq, Lk)
    out, _ = scaled_dot_product_attention(stacked, k, v, mask)  # (B, Hkv, S*Lq, d)
    return out.reshape(batch, n_heads, n_queries, head_dim)


def repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, Hkv, L, d) -> (B, H, L, d): key/value head j copied to query heads jS ... jS + S - 1
    (S = H / Hkv query heads per group).

    The materialised form of grouped-query attention's sharing (what the
    stacking in `grouped_query_attention` avoids); used to compare with it.
    """
    n_kv_heads = x.shape[1]
    if n_heads % n_kv_heads != 0:
        raise ValueError(f"n_heads={n_heads} must be a multiple of the heads of x "
                         f"{tuple(x.shape)} ({n_kv_heads})")
    return x.repeat_interleave(n_heads // n_kv_heads, dim=1)


# --- The KV cache -------------------------------------------------------------------------


def kv_cache_bytes(n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                   dtype: torch.dtype = torch.float32) -> int:
    """2 (keys and values) * layers * batch * n_kv_heads * max_len * head_dim * bytes per element."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * n_layers * batch * n_kv_heads * max_len * head_dim * element


class KVCache:
    """Preallocated keys and values of every layer: (B, Hkv, max_len, d) each.

    `length` positions are filled; a forward pass with the cache writes its L new
    positions after them and advances `length` by L.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None):
        for name, value in [("n_layers", n_layers), ("batch", batch), ("n_kv_heads", n_kv_heads),
                            ("max_len", max_len), ("head_dim", head_dim)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch, self.max_len, self.length = batch, max_len, 0

    @classmethod
    def for_model(cls, model: CausalLM, batch: int, max_len: int | None = None) -> KVCache:
        """An empty cache that fits `model` (its layers, heads, dtype and device)."""
        weight = model.embed.weight
        max_len = model.max_len if max_len is None else max_len
        return cls(model.n_layers, batch, model.n_kv_heads, max_len, model.head_dim,
                   weight.dtype, weight.device)

    def nbytes(self) -> int:
        """Bytes of memory the cache's tensors hold, measured from their storages."""
        return sum(t.untyped_storage().nbytes() for t in self.keys + self.values)

    def update(self, layer: int, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hkv, L, d) at positions length ... length + L - 1 of `layer`;
        return the filled keys and values (B, Hkv, length + L, d)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


# --- The model ----------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Causal self-attention with n_heads query heads and n_kv_heads key/value heads, RoPE."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads != 0 or (d_model // n_heads) % 2 != 0:
            raise ValueError(f"d_model={d_model} must be n_heads={n_heads} times an even head_dim")
        if n_kv_heads < 1 or n_heads % n_kv_heads != 0:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, start: int = 0, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, L, D) at positions start ... start + L - 1 -> (B, L, D)."""
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        q = split_heads(self.q_proj(x), self.n_heads)     # (B, H, L, d)
        k = split_heads(self.k_proj(x), self.n_kv_heads)  # (B, Hkv, L, d)
        v = split_heads(self.v_proj(x), self.n_kv_heads)  # (B, Hkv, L, d)
        q, k = apply_rope(q, positions), apply_rope(k, positions)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, start + L, d)
        return self.out_proj(merge_heads(grouped_query_attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feed-forward(norm(x))."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None, d_ff: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads, n_kv_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, d_ff)

    def forward(self, x, start=0, cache=None, layer=0):
        x = x + self.attention(self.norm1(x), start, cache, layer)
        return x + self.feed_forward(self.norm2(x))


class CausalLM(nn.Module):
    """Token ids (B, L) -> next-token logits (B, L, V); position i sees tokens 0 ... i only."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 n_kv_heads: int | None = None, max_len: int = 256, d_ff: int | None = None):
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("d_model", d_model),
                            ("n_layers", n_layers), ("n_heads", n_heads), ("max_len", max_len)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.vocab_size, self.max_len, self.n_layers = vocab_size, max_len, n_layers
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, n_kv_heads, d_ff or 4 * d_model)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        attention = self.blocks[0].attention
        self.n_heads, self.n_kv_heads, self.head_dim = (attention.n_heads, attention.n_kv_heads,
                                                        attention.head_dim)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, L) -> logits (B, L, V). With a cache, ids are the next L tokens after
        the cache's `length` stored ones, and the cache advances by L."""
        start = self.check_ids(ids, cache)
        x = self.embed(ids)  # (B, L, D)
        for layer, block in enumerate(self.blocks):
            x = block(x, start, cache, layer)
        if cache is not None:
            cache.length += ids.shape[1]
        return self.head(self.norm(x))  # (B, L, V)

    def check_ids(self, ids: torch.Tensor, cache: KVCache | None) -> int:
        """Raise a ValueError naming the argument unless ids and cache fit; return the start position."""
        if not torch.is_tensor(ids) or ids.dim() != 2 or ids.is_floating_point():
            shape = tuple(ids.shape) if torch.is_tensor(ids) else type(ids).__name__
            raise ValueError(f"ids must be a 2-D integer tensor (batch, length), got {shape}")
        if ids.shape[1] == 0:
            raise ValueError(f"ids of shape {tuple(ids.shape)} must hold at least one token")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, vocab_size={self.vocab_size}), got values "
                             f"from {ids.min().item()} to {ids.max().item()}")
        start = 0
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise ValueError(f"cache must be a KVCache or None, got {type(cache).__name__}")
            if cache.batch != ids.shape[0]:
                raise ValueError(f"cache was built for batch size {cache.batch}, but ids of shape "
                                 f"{tuple(ids.shape)} have batch size {ids.shape[0]}")
            shape = (cache.batch, self.n_kv_heads, cache.max_len, self.head_dim)
            if len(cache.keys) != self.n_layers or cache.keys[0].shape != shape:
                raise ValueError(f"cache holds {len(cache.keys)} layers of shape "
                                 f"{tuple(cache.keys[0].shape)}; this model needs "
                                 f"{self.n_layers} of shape {shape}")
            start = cache.length
            if start + ids.shape[1] > cache.max_len:
                raise ValueError(f"cache holds {start} of at most max_len={cache.max_len} "
                                 f"positions; ids of shape {tuple(ids.shape)} do not fit")
        if start + ids.shape[1] > self.max_len:
            raise ValueError(f"positions up to {start + ids.shape[1]} exceed the model's "
                             f"maximum context max_len={self.max_len} (ids of shape "
                             f"{tuple(ids.shape)}, starting at position {start})")
        return start


# --- Sampling -----------------------------------------------------------------------------


def _check_logits(logits: torch.Tensor) -> None:
    if not torch.is_tensor(logits) or logits.dim() < 1 or not logits.is_floating_point():
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a floating-point tensor (..., V), got {shape}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (..., V) with all but the k largest of each row set to -inf."""
    _check_logits(logits)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"top_k must be an int in [1, V={logits.shape[-1]}], "
                         f"got {k!r}")
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Logits (..., V) keeping, in each row, the fewest most likely tokens whose
    probabilities sum to at least p (the nucleus); the others set to -inf."""
    _check_logits(logits)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {p!r}")
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    keep_sorted = mass_before < p                # the most likely token always stays
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(logits: torch.Tensor, generator: torch.Generator | None = None,
                greedy: bool = False, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """One token per row of logits (B, V) -> (B,) int64.

    greedy: the most likely token. Otherwise: divide by the temperature, keep the
    top_k and then the top_p nucleus (if given), and draw from the softmax with
    `generator`.
    """
    _check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, V), "
                         f"got {tuple(logits.shape)}")
    # every setting is checked, even where greedy makes it irrelevant
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if top_k is not None:
        top_k_filter(logits[:1], top_k)  # a ValueError naming top_k if it is wrong
    if top_p is not None:
        top_p_filter(logits[:1], top_p)
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --- Generation ---------------------------------------------------------------------------


@torch.no_grad()
def generate(model: CausalLM, prompt: torch.Tensor, n_new: int, use_cache: bool = True,
             generator: torch.Generator | None = None, return_logits: bool = False,
             **sampling) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Extend prompt (B, P) by n_new tokens -> (B, P + n_new); with return_logits also
    the logits (B, n_new, V) each new token was drawn from.

    use_cache=False recomputes the whole sequence at every step; use_cache=True
    keeps keys and values in a `KVCache` and feeds only the newest token.
    `sampling` goes to `sample_next` (greedy, temperature, top_k, top_p).
    """
    if not torch.is_tensor(prompt) or prompt.dim() != 2 or prompt.shape[1] == 0:
        shape = tuple(prompt.shape) if torch.is_tensor(prompt) else type(prompt).__name__
        raise ValueError(f"prompt must be a (batch, length) tensor of at least one token, "
                         f"got {shape}")
    if not isinstance(n_new, int) or isinstance(n_new, bool) or n_new < 1:
        raise ValueError(f"n_new must be a positive int, got {n_new!r}")
    total = prompt.shape[1] + n_new
    if total > model.max_len:
        raise ValueError(f"prompt of shape {tuple(prompt.shape)} plus n_new={n_new} tokens is "
                         f"{total} tokens, past the model's maximum context "
                         f"max_len={model.max_len}")
    ids, all_logits = prompt, []
    if use_cache:
        cache = KVCache.for_model(model, prompt.shape[0], max_len=total)
        logits = model(prompt, cache)[:, -1]  # the prompt in one pass (the "prefill")
    else:
        logits = model(prompt)[:, -1]
    for step in range(n_new):
        all_logits.append(logits)
        token = sample_next(logits, generator, **sampling)  # (B,)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step == n_new - 1:
            break
        logits = model(token[:, None], cache)[:, -1] if use_cache else model(ids)[:, -1]
    return (ids, torch.stack(all_logits, dim=1)) if return_logits else ids


def work_per_generation(prompt_len: int, n_new: int, use_cache: bool) -> int:
    """Token positions the model processes to generate n_new tokens after a prompt."""
    if use_cache:
        return prompt_len + n_new - 1
    return sum(prompt_len + i for i in range(n_new))


# --- Training and baselines ---------------------------------------------------------------


def random_windows(ids: torch.Tensor, batch: int, context: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs (batch, context) from a 1-D id tensor, and the next-token targets."""
    if len(ids) <= context:
        raise ValueError(f"ids of length {len(ids)} must be longer than context={context}")
    starts = torch.randint(0, len(ids) - context, (batch,), generator=generator)
    rows = starts[:, None] + torch.arange(context + 1)  # (batch, context + 1)
    windows = ids[rows]
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate_loss(model: CausalLM, ids: torch.Tensor, context: int, batch: int = 64) -> float:
    """Mean next-token cross-entropy (nats per character) over consecutive windows of `ids`."""
    model.eval()
    device = model.embed.weight.device
    n_windows = (len(ids) - 1) // context
    inputs = ids[: n_windows * context].view(n_windows, context)
    targets = ids[1: n_windows * context + 1].view(n_windows, context)
    total = 0.0
    for first in range(0, n_windows, batch):
        x, y = inputs[first:first + batch].to(device), targets[first:first + batch].to(device)
        logits = model(x)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    return total / (n_windows * context)


def bigram_loss(train: torch.Tensor, val: torch.Tensor, vocab_size: int,
                alpha: float = 0.1) -> float:
    """Cross-entropy (nats per character) on `val` of the bigram model counted on `train`:
    p(b | a) = (count(a, b) + alpha) / (count(a) + alpha * V)."""
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64),
                      accumulate=True)
    probs = (counts + alpha) / (counts.sum(dim=1, keepdim=True) + alpha * vocab_size)
    return -probs[val[:-1], val[1:]].log().mean().item()


def train_lm(model: CausalLM, train: torch.Tensor, steps: int, generator: torch.Generator,
             batch: int = 32, context: int = 128, lr: float = 3e-3,
             callback: Callable[[int, float], None] | None = None) -> list[float]:
    """AdamW with a linear warm-up and cosine decay; returns the loss of every step."""
    device = model.embed.weight.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def rate(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    losses = []
    model.train()
    for step in range(steps):
        x, y = random_windows(train, batch, context, generator)
        logits = model(x.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    model.eval()
    return losses



__all__ = ["grouped_query_attention", "repeat_kv", "kv_cache_bytes", "KVCache",
           "CausalSelfAttention", "Block", "CausalLM", "top_k_filter", "top_p_filter",
           "sample_next", "generate", "work_per_generation", "random_windows", "evaluate_loss",
           "bigram_loss", "train_lm"]
