"""Linear attention: the kernel feature-map view (Katharopoulos et al. 2020), chapter 12.

Softmax attention weighs key j for query i by exp(q_i . k_j / sqrt(d)). Replace that
similarity by a dot product of features, phi(q_i) . phi(k_j), and the products can be
reordered:

    out_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)
          = phi(q_i) (sum_j phi(k_j) v_j^T) / phi(q_i) . (sum_j phi(k_j))

so the N x N matrix never appears: phi(K)^T V is a d_phi x dv matrix, whatever N is.
The causal form, where query i sums over j <= i only, is computed three ways that
agree to rounding: `causal_linear_attention_parallel` (the N x N form with a causal
mask), `causal_linear_attention_recurrent` (a running state S = sum phi(k) v^T and
z = sum phi(k), one token at a time: a recurrent network with a matrix-valued state)
and `causal_linear_attention_chunked` (the parallel form inside each chunk of tokens,
the state between chunks).

Shapes: q, k (..., N, d), v (..., N, dv), as in the rest of the package, usually
(B, H, N, d). A row whose normaliser is 0 (possible only with a feature map that can
give a zero vector) gets a zero output, not NaN.

`recall_error` measures what the fixed-size state loses: chapter 4's lookup of one of
n stored key -> value pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from attnbook.attention import causal_mask, check_qkv, scaled_dot_product_attention

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, elementwise: positive everywhere, so phi(q) . phi(k) > 0 and
    the normaliser never vanishes (Katharopoulos et al. 2020).

    For x < 0, elu(x) + 1 = (e^x - 1) + 1 = e^x, computed as e^x: written as
    F.elu(x) + 1 it would round to exactly 0 below x = -37 in float64."""
    return torch.where(x > 0, x + 1, torch.exp(x.clamp(max=0)))


def _features(q, k, v, feature_map: FeatureMap, causal: bool):
    check_qkv(q, k, v)
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal linear attention needs as many queries as keys: q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    phi_q, phi_k = feature_map(q), feature_map(k)
    if phi_q.shape[:-1] != q.shape[:-1] or phi_k.shape[:-1] != k.shape[:-1] \
            or phi_q.shape[-1] != phi_k.shape[-1]:
        raise ValueError(f"feature_map must keep all but the last dimension and give q and "
                         f"k features of one size: phi(q) {tuple(phi_q.shape)}, phi(k) "
                         f"{tuple(phi_k.shape)} from q {tuple(q.shape)}, k {tuple(k.shape)}")
    return phi_q, phi_k


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator (..., N, dv) / denominator (..., N), with 0 / 0 = 0 for empty rows."""
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return numerator / safe[..., None]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     feature_map: FeatureMap = elu_feature_map) -> torch.Tensor:
    """Non-causal linear attention, phi(Q) (phi(K)^T V) normalised row by row by
    phi(Q) (phi(K)^T 1): O(N d_phi dv) work and no N x N matrix. -> (..., Nq, dv)."""
    phi_q, phi_k = _features(q, k, v, feature_map, causal=False)
    state = phi_k.transpose(-2, -1) @ v  # (..., d_phi, N) @ (..., N, dv) -> (..., d_phi, dv)
    z = phi_k.sum(dim=-2)  # (..., d_phi)
    return _divide(phi_q @ state, (phi_q * z[..., None, :]).sum(-1))


def causal_linear_attention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     feature_map: FeatureMap = elu_feature_map
                                     ) -> torch.Tensor:
    """Causal linear attention the quadratic way: the (N, N) similarities
    phi(Q) phi(K)^T, masked to j <= i, then normalised rows times V. -> (..., N, dv)."""
    phi_q, phi_k = _features(q, k, v, feature_map, causal=True)
    similarity = phi_q @ phi_k.transpose(-2, -1)  # (..., N, N)
    similarity = similarity * causal_mask(q.shape[-2], device=q.device)
    return _divide(similarity @ v, similarity.sum(dim=-1))


def causal_linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                      feature_map: FeatureMap = elu_feature_map
                                      ) -> torch.Tensor:
    """Causal linear attention as a recurrence over tokens: the state S = sum phi(k_j) v_j^T
    (d_phi x dv) and z = sum phi(k_j) grow by one token, then query i reads
    phi(q_i) S / phi(q_i) . z. Constant memory per step. -> (..., N, dv)."""
    phi_q, phi_k = _features(q, k, v, feature_map, causal=True)
    state = q.new_zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1])  # S: (..., d_phi, dv)
    z = q.new_zeros(*q.shape[:-2], phi_k.shape[-1])  # (..., d_phi)
    outputs = []
    for t in range(q.shape[-2]):
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]  # + phi(k_t) v_t^T
        z = z + phi_k[..., t, :]
        numerator = (phi_q[..., t, :, None] * state).sum(dim=-2)  # phi(q_t) S: (..., dv)
        denominator = (phi_q[..., t, :] * z).sum(dim=-1)  # phi(q_t) . z: (...)
        outputs.append(_divide(numerator[..., None, :], denominator[..., None]))
    return torch.cat(outputs, dim=-2)


def causal_linear_attention_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    chunk_size: int = 64,
                                    feature_map: FeatureMap = elu_feature_map
                                    ) -> torch.Tensor:
    """Causal linear attention a chunk of tokens at a time: inside a chunk, the parallel
    form with a causal mask; from the chunks before it, the state S and z, read by
    phi(Q_c) S. The state then absorbs the chunk. N / chunk_size steps. -> (..., N, dv)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    phi_q, phi_k = _features(q, k, v, feature_map, causal=True)
    state = q.new_zeros(*q.shape[:-2], phi_k.shape[-1], v.shape[-1])  # (..., d_phi, dv)
    z = q.new_zeros(*q.shape[:-2], 1, phi_k.shape[-1])  # (..., 1, d_phi)
    n = q.shape[-2]
    outputs = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        q_c, k_c, v_c = phi_q[..., start:stop, :], phi_k[..., start:stop, :], v[..., start:stop, :]
        inside = (q_c @ k_c.transpose(-2, -1)).tril()  # (..., C, C), j <= i in the chunk
        numerator = q_c @ state + inside @ v_c  # earlier chunks + this chunk: (..., C, dv)
        denominator = (q_c @ z.transpose(-2, -1))[..., 0] + inside.sum(dim=-1)  # (..., C)
        outputs.append(_divide(numerator, denominator))
        state = state + k_c.transpose(-2, -1) @ v_c  # then the chunk joins the state
        z = z + k_c.sum(dim=-2, keepdim=True)
    return torch.cat(outputs, dim=-2)


# What the fixed-size state loses: associative recall


def recall_task(n_pairs: int, dim: int, generator: torch.Generator,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """n_pairs random keys (unit vectors in `dim` dimensions) and values (standard normal),
    each (n_pairs, dim): the dictionary of chapter 4's soft lookup."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be an int >= 1, got {n_pairs!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    keys = torch.randn(n_pairs, dim, generator=generator, dtype=dtype)
    keys = keys / keys.norm(dim=-1, keepdim=True)
    values = torch.randn(n_pairs, dim, generator=generator, dtype=dtype)
    return keys, values


RECALL_METHODS = ("softmax", "linear", "fast-weight")


def recall_error(method: str, n_pairs: int, dim: int, generator: torch.Generator,
                 sharpness: float = 4.0) -> float:
    """Store `n_pairs` random key -> value pairs (`recall_task`), query with every stored
    key in turn, and return the retrieval error: sum ||out_i - v_i||^2 / sum ||v_i||^2
    (0: every value found exactly; about 1: the output is no closer than the mean value).

    "softmax": scaled dot-product attention with scale sharpness * sqrt(dim), so that the
    matching key's score (sharpness sqrt(dim), the keys being unit vectors) stands
    `sharpness` standard deviations above the others'; "linear": `linear_attention` with
    the elu + 1 feature map, whose state phi(K)^T V is dim x dim for any number of pairs;
    "fast-weight": the same state with the identity feature map and no normaliser,
    out = q (K^T V), a sum of outer products (Schlag et al. 2021). Reading it with a
    stored unit key k_i gives v_i plus the crosstalk sum_(j != i) (k_i . k_j) v_j, whose
    expected relative size is (n_pairs - 1) / dim: the memory holds about dim pairs.
    """
    if method not in RECALL_METHODS:
        raise ValueError(f"method must be one of {RECALL_METHODS}, got {method!r}")
    if not (isinstance(sharpness, (int, float)) and math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness must be a positive number, got {sharpness!r}")
    keys, values = recall_task(n_pairs, dim, generator)
    queries = keys  # ask for every stored key
    if method == "softmax":
        out, _ = scaled_dot_product_attention(queries, keys, values,
                                              scale=sharpness * math.sqrt(dim))
    elif method == "linear":
        out = linear_attention(queries, keys, values)
    else:
        out = queries @ (keys.T @ values)  # the state K^T V: (dim, dim)
    return float(((out - values) ** 2).sum() / (values**2).sum())
