import torch

from lmforge.config import ModelConfig
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
