"""ravine.experiments.models: shapes, causality, attention against torch's MultiheadAttention, specs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ravine.experiments import models


def test_mlp_layers_and_spec_round_trip():
    m = models.build("mlp", sizes=[5, 7, 3], activation="tanh")
    linears = [l for l in m.modules() if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(5, 7), (7, 3)]
    assert any(isinstance(l, nn.Tanh) for l in m.modules())
    spec = models.spec(m)
    assert json.loads(json.dumps(spec)) == spec  # JSON-serializable
    m2 = models.from_spec(spec)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 5)
    assert torch.equal(m(x), m2(x))
    m3 = models.build("mlp", in_features=5, hidden=[7], n_classes=3)
    assert [p.shape for p in m3.parameters()] == [p.shape for p in m.parameters()]


def test_mlp_forward_is_the_composition_of_its_layers():
    m = models.build("mlp", sizes=[4, 6, 2], activation="relu")
    w1, b1, w2, b2 = (p.detach() for p in m.parameters())
    x = torch.randn(3, 4)
    want = torch.relu(x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(m(x), want)


def test_cnn_accepts_flat_and_image_inputs():
    m = models.build("cnn")
    x = torch.randn(3, 64)
    out = m(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(m(x.reshape(3, 1, 8, 8)), out)


def _mha_reference(block: models.CausalSelfAttention, x: torch.Tensor, n_head: int) -> torch.Tensor:
    d = x.shape[-1]
    mha = nn.MultiheadAttention(d, n_head, batch_first=True, bias=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
    t = x.shape[1]
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    out, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    return out


def test_causal_attention_matches_torch_multihead_attention():
    m = models.build("transformer", vocab_size=11, block_size=6, n_layer=1, n_head=2, d_model=8)
    attn = m.blocks[0].attn
    x = torch.randn(3, 6, 8)
    torch.testing.assert_close(attn(x), _mha_reference(attn, x, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_is_causal(norm):
    m = models.build("transformer", vocab_size=13, block_size=8, n_layer=2, n_head=2, d_model=16, norm=norm)
    idx = torch.randint(0, 13, (2, 8))
    out = m(idx)
    assert out.shape == (2, 8, 13)
    idx2 = idx.clone()
    idx2[:, 5:] = (idx2[:, 5:] + 1) % 13
    out2 = m(idx2)
    torch.testing.assert_close(out[:, :5], out2[:, :5])
    assert not torch.allclose(out[:, 5:], out2[:, 5:])


def test_pre_and_post_ln_blocks_follow_their_formulas():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 16)
    for norm in ("pre", "post"):
        m = models.build("transformer", vocab_size=7, block_size=5, n_layer=1, n_head=2, d_model=16, norm=norm)
        blk = m.blocks[0]
        with torch.no_grad():
            for p in blk.parameters():
                p.add_(0.3 * torch.randn_like(p))  # make the LayerNorm affine parameters non-trivial
        f_attn, f_mlp = blk.attn, blk.mlp
        if norm == "pre":
            h = x + f_attn(blk.ln1(x))
            want = h + f_mlp(blk.ln2(h))
        else:
            h = nn.functional.layer_norm(x + f_attn(x), (16,), blk.ln1.weight, blk.ln1.bias)
            want = nn.functional.layer_norm(h + f_mlp(h), (16,), blk.ln2.weight, blk.ln2.bias)
        torch.testing.assert_close(blk(x), want)
        assert isinstance(m.ln_f, nn.LayerNorm) == (norm == "pre")


@pytest.mark.parametrize("name,rnn_cls", [("lstm", nn.LSTM), ("rnn", nn.RNN)])
def test_recurrent_models(name, rnn_cls):
    m = models.build(name, vocab_size=6, d_embed=4, hidden=5)
    assert isinstance(m.rnn, rnn_cls)
    idx = torch.randint(0, 6, (3, 9))
    out = m(idx)
    assert out.shape == (3, 9, 6)
    # Position t depends only on positions <= t (a recurrent model is causal).
    idx2 = idx.clone()
    idx2[:, 4:] = (idx2[:, 4:] + 1) % 6
    torch.testing.assert_close(m(idx2)[:, :4], out[:, :4])
    h, _ = m.rnn(m.embed(idx))
    torch.testing.assert_close(out, m.head(h))


def test_layer_groups_cover_every_parameter_once():
    for m in (
        models.build("transformer", vocab_size=5, block_size=4, n_layer=3, n_head=1, d_model=4),
        models.build("mlp", sizes=[3, 4, 4, 2]),
        models.build("lstm", vocab_size=5),
    ):
        groups = models.layer_groups(m)
        flat = [n for g in groups for n in g]
        assert sorted(flat) == sorted(n for n, _ in m.named_parameters())
        assert len(flat) == len(set(flat))
    t = models.build("transformer", vocab_size=5, block_size=4, n_layer=3, n_head=1, d_model=4)
    g = models.layer_groups(t)
    assert len(g) == 5 and g[0] == ["tok_emb.weight", "pos_emb.weight"] and "head.weight" in g[-1]


def test_bad_input_messages():
    names = "cnn, deep_linear, lstm, mlp, rnn, transformer"
    with pytest.raises(ValueError, match=rf"unknown model name 'resnet'; valid names: {names}"):
        models.build("resnet")
    with pytest.raises(ValueError, match=r"norm must be one of 'pre', 'post', got 'sandwich'"):
        models.build("transformer", vocab_size=5, block_size=4, norm="sandwich")
    with pytest.raises(ValueError, match=r"d_model=10 must be divisible by n_head=4"):
        models.build("transformer", vocab_size=5, block_size=4, d_model=10, n_head=4)
    with pytest.raises(TypeError, match=r"model 'cnn' got unexpected argument\(s\) \['depth'\]"):
        models.build("cnn", depth=3)
    with pytest.raises(ValueError, match=r"activation must be one of .*, got 'swish'"):
        models.build("mlp", sizes=[2, 3, 1], activation="swish")
    with pytest.raises(ValueError, match=r"mlp needs sizes"):
        models.build("mlp")
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds block_size=8"):
        models.build("transformer", vocab_size=5, block_size=8)(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"was not built by ravine.experiments.models.build"):
        models.spec(nn.Linear(2, 2))
