import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.model.mixers import mixer_names
from lmforge.model.transformer import Transformer, count_parameters, flops_per_token, recompute_activations


def tiny(**kw):
    cfg = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    cfg.update(kw)
    torch.manual_seed(0)
    return Transformer(ModelConfig(**cfg)).double()


@pytest.mark.parametrize("mixers", [["softmax"], ["mamba2"], ["mamba2s"], ["2mamba"], ["2mamba_e"], ["sparse", "softmax"]])
def test_changing_a_future_token_never_changes_past_logits(mixers):
    model = tiny(mixers=mixers, mamba2_state=8, linear_chunk_size=8, second_order_chunk_size=16, sparse_block_q=4,
                 sparse_block_k=4, sparse_top_k=0.3)
    x = torch.randint(0, 50, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 50
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_gqa_model_equals_full_kv_model_with_repeated_heads():
    grouped = tiny(n_heads=4, n_kv_heads=2)
    full = tiny(n_heads=4, n_kv_heads=4)
    state = grouped.state_dict()
    for name in list(state):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = state[name].view(2, 8, 32)  # [kv heads, head_dim, d_model]
            state[name] = w.repeat_interleave(2, dim=0).reshape(32, 32)
    full.load_state_dict(state)
    x = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(grouped(x), full(x), rtol=1e-12, atol=1e-12)


def test_loss_matches_logits_cross_entropy_and_untied_head():
    for tie in (True, False):
        model = tiny(tie_embeddings=tie)
        x = torch.randint(0, 50, (3, 9))
        y = torch.randint(0, 50, (3, 9))
        ref = torch.nn.functional.cross_entropy(model(x).reshape(-1, 50), y.reshape(-1))
        torch.testing.assert_close(model(x, targets=y), ref, rtol=1e-12, atol=1e-12)
    assert (model.head is None) is False


def test_return_hidden_gives_every_residual_stream():
    model = tiny()
    x = torch.randint(0, 50, (1, 5))
    logits, hiddens = model(x, return_hidden=True)
    assert len(hiddens) == model.cfg.n_layers + 1
    torch.testing.assert_close(model.logits(model.norm(hiddens[-1])), logits)
    torch.testing.assert_close(hiddens[0], model.embed(x))


def test_counts_and_flops():
    model = tiny(tie_embeddings=True)
    cfg = model.cfg
    per_layer = 32 * 8 * (4 + 4 + 2 + 2) + 3 * 32 * cfg.d_ff + 2 * 32
    assert count_parameters(model) == 50 * 32 + cfg.n_layers * per_layer + 32
    assert count_parameters(model, include_embedding=False) == count_parameters(model) - 50 * 32
    matrices = cfg.n_layers * (per_layer - 2 * 32) + 50 * 32
    assert flops_per_token(model, 10) == 6 * matrices + cfg.n_layers * 6 * 10 * 4 * 8


def test_unknown_mixer_is_a_config_error():
    assert "softmax" in mixer_names()
    with pytest.raises(ConfigError, match="unknown mixer 'nope'"):
        tiny(mixers=["softmax", "nope"])


def saved_bytes(model, x, y):
    """(loss, gradients, bytes autograd kept for the backward of model(x, targets=y), the parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x, targets=y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss, grads, sum(storages.values())


@pytest.mark.parametrize("what", ["mixers", "blocks"])
def test_recomputed_activations_give_the_same_gradients_and_keep_less(what):
    model = tiny(mixers=["mamba2s", "softmax", "sparse", "2mamba"], n_layers=4, linear_chunk_size=8,
                 second_order_chunk_size=16, sparse_block_q=4, sparse_block_k=4, sparse_top_k=0.3)
    x, y = torch.randint(0, 50, (2, 40)), torch.randint(0, 50, (2, 40))
    with torch.no_grad():
        logits = model(x)
    loss, grads, kept = saved_bytes(model, x, y)
    recompute_activations(model, what)
    loss_r, grads_r, kept_r = saved_bytes(model, x, y)
    torch.testing.assert_close(loss_r, loss, rtol=0, atol=0)
    for g, r in zip(grads_r, grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    assert kept_r < kept / 2
    with torch.no_grad():  # evaluation and inference never recompute
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)
