import pytest
import torch

from attnbook.data import date_vocabs, make_batch, make_date_task
from attnbook.seq2seq import (
    ContextDecoder,
    Encoder,
    bahdanau_model,
    bidirectional_bottleneck_model,
    bottleneck_model,
    greedy_decode,
    last_real_state,
)


@pytest.fixture(scope="module")
def setup():
    src_vocab, tgt_vocab = date_vocabs()
    task = make_date_task(n_train=40, n_valid=10, n_test=10, seed=0)
    torch.manual_seed(0)
    model = bottleneck_model(len(src_vocab), len(tgt_vocab), embed_dim=8, hidden_dim=16)
    return model, make_batch(task.train[:6], src_vocab, tgt_vocab), src_vocab


def test_last_real_state_picks_each_rows_last_position():
    outputs = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    lengths = torch.tensor([2, 4])
    assert torch.equal(last_real_state(outputs, lengths), torch.stack([outputs[0, 1], outputs[1, 3]]))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_ignores_padding(bidirectional, setup):
    _, batch, src_vocab = setup
    torch.manual_seed(1)
    encoder = Encoder(len(src_vocab), 8, 16, bidirectional=bidirectional)
    memory = encoder(batch.src, batch.src_lengths)
    extra = torch.full((batch.src.shape[0], 5), src_vocab.pad_id)
    padded = encoder(torch.cat([batch.src, extra], dim=1), batch.src_lengths)
    assert torch.allclose(memory.final, padded.final, atol=1e-6)
    assert torch.allclose(memory.outputs, padded.outputs[:, :batch.src.shape[1]], atol=1e-6)
    assert (padded.outputs[:, batch.src.shape[1]:] == 0).all()
    assert memory.mask.sum(1).tolist() == batch.src_lengths.tolist()


def test_unidirectional_final_is_last_real_output(setup):
    _, batch, src_vocab = setup
    encoder = Encoder(len(src_vocab), 8, 16)
    memory = encoder(batch.src, batch.src_lengths)
    assert torch.allclose(memory.final, last_real_state(memory.outputs, batch.src_lengths), atol=1e-6)


def test_forward_shapes_and_gradients_reach_every_parameter(setup):
    model, batch, _ = setup
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert logits.shape == (*batch.tgt_in.shape, model.decoder.out.out_features)
    logits.logsumexp(-1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()


def test_teacher_forcing_is_causal(setup):
    """Changing a later target token never changes the logits of earlier steps."""
    model, batch, _ = setup
    changed = batch.tgt_in.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 10 + 3
    a = model(batch.src, batch.src_lengths, batch.tgt_in)
    b = model(batch.src, batch.src_lengths, changed)
    assert torch.allclose(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])


def test_greedy_decode_matches_teacher_forcing_on_its_own_output(setup):
    model, batch, _ = setup
    tokens, weights = greedy_decode(model, batch.src, batch.src_lengths, max_len=9)
    assert weights is None and tokens.shape == (batch.src.shape[0], 9)
    tgt_in = torch.cat([torch.full((tokens.shape[0], 1), model.bos_id), tokens[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(batch.src, batch.src_lengths, tgt_in)
    assert torch.equal(logits.argmax(-1), tokens)


def test_greedy_decode_stops_when_every_row_is_finished(setup):
    model, batch, _ = setup
    with torch.no_grad():
        model.decoder.out.bias.fill_(-1e4)
        model.decoder.out.bias[model.eos_id] = 1e4  # always predict <eos>
        tokens, _ = model.greedy_decode(batch.src, batch.src_lengths, max_len=20)
        model.decoder.out.reset_parameters()
    assert tokens.shape[1] == 1


@pytest.mark.parametrize("change, message", [
    (lambda s, l, t: (s[0], l, t), "src must be a \\(batch, length\\)"),
    (lambda s, l, t: (s.float(), l, t), "integer token ids"),
    (lambda s, l, t: (s, l[:-1], t), "lengths must have shape"),
    (lambda s, l, t: (s, l * 0, t), "lengths must lie in"),
    (lambda s, l, t: (s, l, t[:-1]), "batch size"),
])
def test_mismatched_batches_are_rejected_with_their_shapes(change, message, setup):
    model, batch, _ = setup
    src, lengths, tgt_in = change(batch.src, batch.src_lengths, batch.tgt_in)
    with pytest.raises(ValueError, match=message):
        model(src, lengths, tgt_in)


def test_bidirectional_control_is_chapter_2s_encoder_without_attention(setup):
    _, batch, src_vocab = setup
    torch.manual_seed(0)
    control = bidirectional_bottleneck_model(len(src_vocab), 15, embed_dim=8, hidden_dim=16)
    attention = bahdanau_model(len(src_vocab), 15, embed_dim=8, hidden_dim=16)
    assert isinstance(control.decoder, ContextDecoder)
    assert control.encoder.rnn.bidirectional and control.encoder.output_dim == 16
    assert control.encoder.rnn.hidden_size == attention.encoder.rnn.hidden_size == 8
    memory = control.encoder(batch.src, batch.src_lengths)
    # The decoder sees the forward state after the last real character and the backward
    # state after the first: both ends of the input, nothing in between.
    forward_last = last_real_state(memory.outputs[..., :8], batch.src_lengths)
    assert torch.allclose(memory.final, torch.cat([forward_last, memory.outputs[:, 0, 8:]], -1),
                          atol=1e-6)
    logits = control(batch.src, batch.src_lengths, batch.tgt_in)
    assert logits.shape == (*batch.tgt_in.shape, 15)
    tokens, weights = control.greedy_decode(batch.src, batch.src_lengths, max_len=5)
    assert weights is None and tokens.shape[0] == batch.src.shape[0]
