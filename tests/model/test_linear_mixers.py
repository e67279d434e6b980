import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.config import ModelConfig, run_config_from_dict
from lmforge.errors import ConfigError
from lmforge.model.mixers import build_mixer
from lmforge.model.transformer import Transformer, count_parameters

LINEAR = ["mamba2s", "2mamba", "2mamba_e", "mamba2"]
HYBRID = ["2mamba", "mamba2s", "2mamba_e", "softmax"]


def model(mixers, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=len(mixers), n_heads=2, mixers=mixers, max_seq_len=128,
                      linear_chunk_size=8, second_order_chunk_size=16, mamba2_state=8, mamba2_expand=1, **kw)
    return Transformer(cfg).to(dtype)


def test_parameter_counts_match_softmax_within_five_percent():
    base = count_parameters(Transformer(ModelConfig(vocab_size=4096, d_model=256, n_layers=4, n_heads=4)))
    for mixers in [["mamba2s"], ["2mamba"], ["2mamba_e"], ["mamba2"], HYBRID]:
        n = count_parameters(Transformer(ModelConfig(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, mixers=mixers,
                                                     mamba2_expand=1)))
        assert abs(n - base) / base < 0.05, (mixers, n, base)


def test_bf16_autocast_training_step_is_finite():
    m = model(["2mamba", "mamba2s", "2mamba_e", "mamba2"], dtype=torch.float32)
    x = torch.randint(0, 97, (2, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(x, targets=x.roll(-1, 1))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_sparse_mixer_keeping_every_block_is_dense_attention():
    m = model(["sparse", "softmax"], sparse_block_q=8, sparse_block_k=8, sparse_top_k=0.3, sparse_top_p=0.4)
    x = torch.randint(0, 97, (1, 45))
    dense = model(["softmax", "softmax"])
    dense.load_state_dict(m.state_dict())  # same parameters: a dense checkpoint loads into the sparse model
    allblocks = model(["sparse", "softmax"], sparse_top_k=1.0)
    allblocks.load_state_dict(m.state_dict())
    torch.testing.assert_close(allblocks(x), dense(x), rtol=1e-9, atol=1e-9)


VARIANT_MIXERS = ["mamba2s", "2mamba", "2mamba_e"]


def variant_layer(name, variant, t_chunk=8):
    """One mixer in float64 with every parameter randomised (norm gains, biases, conv taps), so a missing or extra
    piece changes the output."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=1, n_heads=2, mixers=[name], linear_chunk_size=t_chunk,
                      second_order_chunk_size=t_chunk, linear_variant=variant)
    layer = build_mixer(name, cfg, 0).to(torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 and p.numel() > 2 else 0.0))
    return layer


def naive_mixer(layer, x, name, variant):
    """The 2Mamba2Furious attention written out as the authors' `forwrd_gated` computes it (all pairs, explicit
    decay mask; LlamaDecoderLayerClean.py), over the layer's own parameters; "lmforge" adds its differences."""
    b, t, _ = x.shape
    h, d = layer.n_heads, layer.head_dim
    qkv = layer.qkv_proj(x).mT
    qkv = F.conv1d(qkv, layer.conv.weight, layer.conv.bias, padding=1, groups=qkv.shape[1])[..., :t].mT
    q, k, v = (z.view(b, t, h, d).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
    cum = -F.softplus(layer.decay_proj(x)).mT.cumsum(-1)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    decay = torch.exp(cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, 0.0)
    scale = 1.0 if (name, variant) == ("mamba2s", "lmforge") else d**-0.5
    scores = q @ k.mT * scale
    if name == "mamba2s":
        weights = scores * decay
        v = v * F.softplus(layer.dt_proj(x)).mT[..., None]
    elif name == "2mamba":
        weights = scores**2 * decay
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-6)
    else:
        weights = scores.exp() * decay
        weights = weights / weights.sum(-1, keepdim=True)
    y = (weights @ v).transpose(1, 2).reshape(b, t, h * d)
    if name == "mamba2s" or variant == "lmforge":
        y = F.rms_norm(y, (h * d,), layer.out_norm.weight, layer.out_norm.eps)
    return layer.o_proj(y)


@pytest.mark.parametrize("variant", ["authors", "lmforge"])
@pytest.mark.parametrize("name", VARIANT_MIXERS)
def test_each_variant_matches_the_written_out_formula_in_float64(name, variant):
    layer = variant_layer(name, variant)
    x = torch.randn(2, 29, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = layer(x, torch.arange(29)[None])
    torch.testing.assert_close(fast, naive_mixer(layer, x, name, variant), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", VARIANT_MIXERS)
def test_authors_variant_has_no_decay_bias_and_norms_only_mamba2s(name):
    authors = dict(variant_layer(name, "authors").named_parameters())
    lmforge = dict(variant_layer(name, "lmforge").named_parameters())
    assert "decay_proj.bias" not in authors and "decay_proj.bias" in lmforge
    assert ("out_norm.weight" in authors) == (name == "mamba2s") and "out_norm.weight" in lmforge
    assert set(lmforge) - set(authors) == {"decay_proj.bias"} | ({"out_norm.weight"} if name != "mamba2s" else set())


def test_default_variant_is_the_authors():
    assert ModelConfig().linear_variant == "authors"
    with pytest.raises(ConfigError, match="linear_variant"):
        ModelConfig(linear_variant="paper")


def test_checkpoint_without_the_setting_loads_as_lmforge_with_identical_outputs(tmp_path, tokenizer):
    raw = {"model": {"vocab_size": tokenizer.vocab_size, "d_model": 32, "n_layers": 3, "n_heads": 2,
                     "mixers": ["2mamba", "mamba2s", "2mamba_e"], "max_seq_len": 64, "linear_variant": "lmforge"}}
    cfg = run_config_from_dict(raw)
    torch.manual_seed(0)
    old = Transformer(cfg.model).eval()
    path = save_checkpoint(tmp_path / "ckpt", old, cfg, tokenizer)
    stored = json.loads((path / "config.json").read_text())
    del stored["lmforge"]["model"]["linear_variant"]  # as written before the setting existed
    (path / "config.json").write_text(json.dumps(stored))
    loaded = load_checkpoint(path)
    assert loaded.config.model.linear_variant == "lmforge"
    x = torch.randint(0, tokenizer.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), old(x), rtol=0, atol=0)
