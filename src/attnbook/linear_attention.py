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

    For x <= 0, elu(x) + 1 = (e^x - 1) + 1 = e^x, computed as e^x: written as
    F.elu(x) + 1 it would round to exactly 0 below x = -37 in float64. relu(x) + e^min(x, 0)
    is x + 1 above 0 and e^x below, both exact."""
    return x.relu() + x.clamp(max=0).exp()


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
    return numerator / denominator.masked_fill(denominator == 0, 1)[..., None]


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
    """Causal linear attention a chunk of C tokens at a time, all chunks at once.

    As a loop, chunk c reads the state S, z of the chunks before it (phi(Q_c) S), adds
    the masked parallel form inside the chunk, then absorbs phi(K_c)^T V_c and
    phi(K_c)^T 1. So the state entering chunk c is a prefix sum of the chunks'
    contributions, and the loop vectorises: all contributions in one batched product,
    an exclusive cumulative sum over chunks, all masked C x C products in one more.
    A column of ones appended to V makes z the last column of S. -> (..., N, dv)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    phi_q, phi_k = _features(q, k, v, feature_map, causal=True)
    n, dv = q.shape[-2], v.shape[-1]
    c = min(chunk_size, n)
    n_chunks = -(-n // c)
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)  # [V, 1]: S carries z
    if n_chunks * c > n:  # zero rows: a zero key adds nothing, a zero query is cut off
        pad = (0, 0, 0, n_chunks * c - n)
        phi_q, phi_k, v1 = (torch.nn.functional.pad(x, pad) for x in (phi_q, phi_k, v1))
    batch = phi_q.shape[:-2]
    # one row per (batch entry, chunk): (B * n_chunks, C, .)
    phi_q, phi_k, v1 = (x.reshape(-1, c, x.shape[-1]) for x in (phi_q, phi_k, v1))
    contribution = torch.bmm(phi_k.transpose(-2, -1), v1)  # phi(K_c)^T [V_c, 1]
    contribution = contribution.unflatten(0, (-1, n_chunks))  # (B, n_chunks, d_phi, dv+1)
    before = torch.cat([torch.zeros_like(contribution[:, :1]), contribution[:, :-1]], 1)
    state = before.cumsum(dim=1).flatten(0, 1)  # S, z entering each chunk
    inside = torch.bmm(phi_q, phi_k.transpose(-2, -1)).tril_()  # (.., C, C), j <= i
    out = torch.bmm(phi_q, state).baddbmm_(inside, v1)  # before the chunk + inside it
    out = out.reshape(*batch, n_chunks * c, dv + 1)[..., :n, :]
    return _divide(out[..., :dv], out[..., dv])


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
                 scale: float | None = None) -> float:
    """Store `n_pairs` random key -> value pairs (`recall_task`), query with every stored
    key in turn, and return the retrieval error: sum ||out_i - v_i||^2 / sum ||v_i||^2
    (0: every value found exactly; about 1: the output is no closer than the mean value).

    "softmax": `scaled_dot_product_attention` with scores `scale` * q . k (default
    4 sqrt(dim), 128 times the usual 1 / sqrt(dim) at dim 32). The keys being unit
    vectors, the matching key scores `scale` and the others scatter around 0 with
    standard deviation `scale` / sqrt(dim): the match stands sqrt(dim) standard
    deviations above them whatever the scale, and the scale sets how far that is.
    "linear": `linear_attention` with the elu + 1 feature map on `scale` * q and
    `scale` * k (default 1, the plain feature map); its state phi(K)^T V is
    dim x dim for any number of pairs. "fast-weight": the same state with the identity
    feature map and no normaliser, out = q (K^T V), a sum of outer products (Schlag et
    al. 2021; `scale` must be None). Reading it with a stored unit key k_i gives v_i
    plus the crosstalk sum_(j != i) (k_i . k_j) v_j, whose expected relative size is
    (n_pairs - 1) / dim: the memory holds about dim pairs.
    """
    if method not in RECALL_METHODS:
        raise ValueError(f"method must be one of {RECALL_METHODS}, got {method!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(
            scale, bool) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    if method == "fast-weight" and scale is not None:
        raise ValueError("the fast-weight memory takes no scale (scale=None)")
    keys, values = recall_task(n_pairs, dim, generator)
    queries = keys  # ask for every stored key
    if method == "softmax":
        scale = 4 * math.sqrt(dim) if scale is None else scale
        out, _ = scaled_dot_product_attention(queries, keys, values, scale=scale)
    elif method == "linear":
        scale = 1.0 if scale is None else scale
        out = linear_attention(scale * queries, scale * keys, values)
    else:
        out = queries @ (keys.T @ values)  # the state K^T V: (dim, dim)
    return float(((out - values) ** 2).sum() / (values**2).sum())
