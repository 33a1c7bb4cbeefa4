import pytest
import torch

from attnbook.multihead import MultiHeadAttention
from attnbook.transformer import (
    Attention,
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    Residual,
    Transformer,
    n_parameters,
    transformer_rate,
    warmup_linear_rate,
    warmup_scheduler,
)


def small_model(norm="post", dropout=0.0, seed=0, rope=False):
    torch.manual_seed(seed)
    return Transformer(13, 11, d_model=16, n_heads=4, d_ff=32, n_layers=2, dropout=dropout,
                       norm=norm, rope=rope).eval()


VARIANTS = [("post", False), ("pre", False), ("post", True), ("pre", True)]


def tokens(batch, length, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_forward_shapes(norm):
    model = small_model(norm)
    src, tgt = tokens(3, 7, 13), tokens(3, 5, 11, seed=1)
    logits = model(src, torch.tensor([7, 4, 1]), tgt)
    assert logits.shape == (3, 5, 11)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("norm, rope", VARIANTS)
def test_decoder_is_causal(norm, rope):
    """Changing a future target token never changes the logits of earlier positions."""
    model = small_model(norm, rope=rope)
    src, lengths = tokens(2, 6, 13), torch.tensor([6, 3])
    tgt = tokens(2, 8, 11, seed=1)
    before = model(src, lengths, tgt)
    for t in range(8):
        changed = tgt.clone()
        changed[:, t] = (changed[:, t] + 1 - 3) % 8 + 3  # another real token
        after = model(src, lengths, changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(after[:, t:], before[:, t:])


@pytest.mark.parametrize("rope", [False, True])
def test_greedy_decode_matches_teacher_forcing(rope):
    """Greedy decoding without a cache writes what the teacher-forced forward ranks first."""
    model = small_model("pre", rope=rope)
    src, lengths = tokens(3, 6, 13), torch.tensor([6, 2, 4])
    out, cross = model.greedy_decode(src, lengths, max_len=5)
    assert out.shape[1] <= 5 and cross.shape == (3, out.shape[1], 6)
    tgt_in = torch.cat([torch.full((3, 1), model.bos_id), out[:, :-1]], dim=1)
    assert torch.equal(model(src, lengths, tgt_in).argmax(-1), out)
    # Cross-attention never looks at padding.
    assert cross[1, :, 2:].abs().max() == 0 and cross[2, :, 4:].abs().max() == 0
    torch.testing.assert_close(cross.sum(-1), torch.ones(cross.shape[:2]))


@pytest.mark.parametrize("norm, rope", VARIANTS)
def test_padding_never_changes_real_outputs(norm, rope):
    """More padding, or other ids in the padded positions, leave the real encoder
    outputs and the logits unchanged."""
    model = small_model(norm, rope=rope)
    src, lengths = tokens(2, 5, 13), torch.tensor([5, 3])
    tgt = tokens(2, 4, 11, seed=1)
    memory, _ = model.encode(src, lengths)
    logits = model(src, lengths, tgt)
    padded = torch.cat([src, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded[1, 3:] = tokens(1, 6, 13, seed=2)  # garbage where row 1 is padding
    memory2, _ = model.encode(padded, lengths)
    torch.testing.assert_close(memory2[0, :5], memory[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(memory2[1, :3], memory[1, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(model(padded, lengths, tgt), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rope", [False, True])
def test_batch_equals_one_at_a_time(rope):
    model = small_model("post", rope=rope)
    src, lengths, tgt = tokens(3, 6, 13), torch.tensor([6, 2, 4]), tokens(3, 4, 11, seed=1)
    together = model(src, lengths, tgt)
    for b in range(3):
        alone = model(src[b:b + 1, :lengths[b]], lengths[b:b + 1], tgt[b:b + 1])
        torch.testing.assert_close(alone, together[b:b + 1], atol=1e-5, rtol=0)


def test_attention_maps_shapes_and_rows():
    model = small_model("pre")
    src, lengths, tgt = tokens(2, 6, 13), torch.tensor([6, 3]), tokens(2, 4, 11, seed=1)
    maps = model.attention_maps(src, lengths, tgt)
    assert len(maps.encoder) == len(maps.decoder) == len(maps.cross) == 2
    assert maps.encoder[0].shape == (2, 4, 6, 6)
    assert maps.decoder[0].shape == (2, 4, 4, 4) and maps.cross[0].shape == (2, 4, 4, 6)
    assert maps.decoder[1][..., 0, 1:].abs().max() == 0  # causal
    assert maps.cross[0][1, :, :, 3:].abs().max() == 0  # padding
    assert not model.training


def test_post_and_pre_norm_residuals():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    f = torch.nn.Linear(8, 8)
    post, pre = Residual(8, norm="post"), Residual(8, norm="pre")
    torch.testing.assert_close(post(x, f)[0], post.norm(x + f(x)))
    torch.testing.assert_close(pre(x, f)[0], x + f(pre.norm(x)))
    with pytest.raises(ValueError, match="norm must be"):
        Residual(8, norm="middle")


def test_blocks_parameter_counts():
    d, h, ff = 16, 4, 32
    attention = 4 * (d * d + d)
    assert n_parameters(FeedForward(d, ff)) == 2 * d * ff + ff + d
    assert n_parameters(EncoderBlock(d, h, ff)) == attention + 2 * d * ff + ff + d + 2 * 2 * d
    assert n_parameters(DecoderBlock(d, h, ff)) == 2 * attention + 2 * d * ff + ff + d + 3 * 2 * d


def test_attention_dropout_only_in_training():
    torch.manual_seed(0)
    attn = Attention(8, 2, dropout=0.5)
    x = torch.randn(2, 5, 8)
    attn.eval()
    out_eval, _ = attn(x)
    reference = super(Attention, attn).forward(x)[0]
    torch.testing.assert_close(out_eval, reference)
    attn.train()
    out_train, weights = attn(x)
    assert not torch.allclose(out_train, out_eval)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 5))  # weights before dropout


def test_attention_is_multihead_attention_with_the_transformers_arguments():
    """Chapter 7's MultiHeadAttention owns the dropout: no second forward here."""
    attn = Attention(8, 2, 0.25, True)
    assert Attention.forward is MultiHeadAttention.forward
    assert attn.weight_dropout.p == 0.25 and attn.rope and not attn.alibi
    with pytest.raises(ValueError, match="dropout must be a probability"):
        Attention(8, 2, dropout=1.0)


def test_embeddings_scaled_to_unit_variance():
    model = Transformer(500, 11, d_model=64, n_heads=4)
    scaled = model.src_embed.tokens.weight[1:] * 64 ** 0.5
    assert 0.8 < scaled.std().item() < 1.2
    assert model.src_embed.tokens.weight[0].abs().max() == 0


def test_transformer_rate_shape():
    rates = [transformer_rate(s, 64, 100) for s in range(1, 400)]
    peak = max(range(len(rates)), key=rates.__getitem__) + 1
    assert peak == 100
    assert rates[0] == pytest.approx(64 ** -0.5 * 100 ** -1.5)
    assert rates[399 - 1] == pytest.approx(64 ** -0.5 * 399 ** -0.5)
    with pytest.raises(ValueError, match="step"):
        transformer_rate(0, 64, 100)
    with pytest.raises(ValueError, match="warmup_steps"):
        transformer_rate(1, 64, 0)


def test_warmup_scheduler_sets_the_rate():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=0.123)
    scheduler = warmup_scheduler(optimizer, lambda s: transformer_rate(s, 64, 10, 2.0))
    for step in range(1, 30):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(transformer_rate(step, 64, 10, 2.0))
        optimizer.step()
        scheduler.step()


def test_warmup_linear_rate():
    rates = [warmup_linear_rate(s, 0.01, 10, 50) for s in range(1, 51)]
    assert rates[0] == pytest.approx(0.001) and rates[9] == pytest.approx(0.01)
    assert rates[-1] == 0 and all(a >= b for a, b in zip(rates[9:], rates[10:]))
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_linear_rate(1, 0.01, 50, 50)


def test_bad_input_names_the_argument():
    model = small_model()
    src, tgt = tokens(2, 5, 13), tokens(2, 3, 11)
    with pytest.raises(ValueError, match="src must hold integer"):
        model(src.float(), torch.tensor([5, 5]), tgt)
    with pytest.raises(ValueError, match="lengths must"):
        model(src, torch.tensor([5, 6]), tgt)
    with pytest.raises(ValueError, match="tgt_in must be"):
        model(src, torch.tensor([5, 5]), tgt[0])
    with pytest.raises(ValueError, match="batch size"):
        model(src, torch.tensor([5, 5]), tgt[:1])
    with pytest.raises(ValueError, match="norm must be"):
        Transformer(13, 11, norm="sandwich")


def test_rope_only_in_self_attention():
    """rope=True rotates queries and keys in self-attention (encoder and decoder), not
    across, with the same parameters; it changes the outputs."""
    plain, rotated = small_model(), small_model(rope=True)
    assert n_parameters(plain) == n_parameters(rotated)
    assert all(block.self_attn.rope for block in [*rotated.encoder, *rotated.decoder])
    assert not any(block.cross_attn.rope for block in rotated.decoder)
    assert not any(block.self_attn.rope for block in [*plain.encoder, *plain.decoder])
    src, lengths, tgt = tokens(2, 6, 13), torch.tensor([6, 4]), tokens(2, 5, 11, seed=1)
    assert not torch.allclose(plain(src, lengths, tgt), rotated(src, lengths, tgt))


def test_rope_attention_with_dropout_rotates_too():
    """In training with weight dropout, Attention still rotates: the weights it returns
    (before dropout) are those of evaluation mode."""
    torch.manual_seed(0)
    attn = Attention(16, 4, dropout=0.5, rope=True)
    x = torch.randn(2, 5, 16)
    _, eval_weights = attn.eval()(x)
    _, train_weights = attn.train()(x)
    torch.testing.assert_close(train_weights, eval_weights)
    attn.rope = False
    _, plain_weights = attn.eval()(x)
    assert not torch.allclose(plain_weights, eval_weights)
