"""Tests of the attention decoders of chapters 2 and 3 in attnbook.seq2seq."""

import random

import pytest
import torch

from attnbook.data import date_vocabs, make_batch, random_example
from attnbook.seq2seq import (
    AttentionState,
    BahdanauDecoder,
    LocalWindow,
    LuongDecoder,
    bahdanau_model,
    greedy_decode,
    luong_model,
    make_score,
)

SRC_VOCAB, TGT_VOCAB = date_vocabs()
SMALL = dict(embed_dim=8, hidden_dim=16, attn_dim=8)

MODELS = {
    "bahdanau": lambda: bahdanau_model(len(SRC_VOCAB), len(TGT_VOCAB), **SMALL),
    "luong-dot": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), "dot", **SMALL),
    "luong-general": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), "general", **SMALL),
    "luong-concat": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), "concat", **SMALL),
    "luong-no-feeding": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), input_feeding=False,
                                            **SMALL),
    "local-m": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), local="m", half_width=3, **SMALL),
    "local-p": lambda: luong_model(len(SRC_VOCAB), len(TGT_VOCAB), local="p", half_width=3, **SMALL),
}
GLOBAL = ["bahdanau", "luong-dot", "luong-general", "luong-concat", "luong-no-feeding"]


def make_model(name, seed=0):
    torch.manual_seed(seed)
    return MODELS[name]().eval()


def date_batch(n=4, seed=0):
    rng = random.Random(seed)
    return make_batch([random_example(rng, rng.randint(1, 3)) for _ in range(n)], SRC_VOCAB, TGT_VOCAB)


def pad_more(tokens: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([tokens, torch.zeros(tokens.shape[0], extra, dtype=tokens.dtype)], dim=1)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_and_weights(name):
    model, batch = make_model(name), date_batch()
    memory = model.encoder(batch.src, batch.src_lengths)
    logits, weights = model.decoder(batch.tgt_in, memory)
    B, S = batch.src.shape
    T = batch.tgt_in.shape[1]
    assert logits.shape == (B, T, len(TGT_VOCAB)) and weights.shape == (B, T, S)
    assert torch.isfinite(logits).all() and (weights >= 0).all()
    padding = ~memory.mask[:, None, :].expand(-1, T, -1)
    assert torch.equal(weights[padding], torch.zeros(int(padding.sum())))
    if name in GLOBAL:
        assert torch.allclose(weights.sum(-1), torch.ones(B, T), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_extra_padding_never_changes_the_outputs(name):
    model, batch = make_model(name), date_batch()
    logits, weights = model.decoder(batch.tgt_in, model.encoder(batch.src, batch.src_lengths))
    S = batch.src.shape[1]
    padded = pad_more(batch.src, 7)
    logits_p, weights_p = model.decoder(batch.tgt_in, model.encoder(padded, batch.src_lengths))
    assert torch.allclose(logits_p, logits, atol=1e-5)
    assert torch.allclose(weights_p[:, :, :S], weights, atol=1e-6)
    assert torch.equal(weights_p[:, :, S:], torch.zeros_like(weights_p[:, :, S:]))


@pytest.mark.parametrize("name", MODELS)
def test_an_example_decodes_the_same_alone_and_in_a_batch(name):
    model, batch = make_model(name), date_batch(n=5, seed=3)
    tokens, weights = greedy_decode(model, batch.src, batch.src_lengths, max_len=12)
    for row in range(5):
        n = int(batch.src_lengths[row])
        alone, alone_weights = greedy_decode(model, batch.src[row:row + 1, :n],
                                             batch.src_lengths[row:row + 1], max_len=12)
        assert torch.equal(alone[0], tokens[row, :alone.shape[1]])
        assert torch.allclose(alone_weights[0], weights[row, :alone.shape[1], :n], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model, batch = make_model(name), date_batch(n=6)
    model.train()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                      ignore_index=0).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_local_m_looks_only_around_the_output_position():
    model, batch = make_model("local-m"), date_batch()
    _, weights = model.decoder(batch.tgt_in, model.encoder(batch.src, batch.src_lengths))
    t = torch.arange(weights.shape[1])[:, None]
    s = torch.arange(weights.shape[2])[None, :]
    outside = (s - t).abs() > 3  # (T, S)
    assert torch.equal(weights[:, outside], torch.zeros_like(weights[:, outside]))


def test_local_p_centres_lie_on_the_input():
    window = LocalWindow("p", half_width=4, hidden_dim=5)
    lengths = torch.tensor([1, 7, 30])
    centers = window.centers(torch.randn(3, 5) * 10, t=0, lengths=lengths)
    assert (centers >= 0).all() and (centers <= lengths - 1).all()


def test_decoders_keep_the_step_interface():
    model, batch = make_model("luong-general"), date_batch()
    memory = model.encoder(batch.src, batch.src_lengths)
    state = model.decoder.init_state(memory)
    assert isinstance(state, AttentionState) and state.t == 0
    logits, state, weights = model.decoder.step(batch.tgt_in[:, 0], state, memory)
    assert logits.shape == (4, len(TGT_VOCAB)) and weights.shape == batch.src.shape and state.t == 1
    assert isinstance(model.decoder, LuongDecoder)
    assert isinstance(make_model("bahdanau").decoder, BahdanauDecoder)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="score must be one of"):
        make_score("cosine", 8, 8)
    with pytest.raises(ValueError, match="kind must be"):
        LocalWindow("q", 3, 8)
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        make_score("dot", 8, 16)
