"""benchmarks/memory.py: training memory counted from what autograd saves, the same on every run."""

import pytest
import torch
from helpers import benchmark_modules
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.mixers import build_mixer

(memory,) = benchmark_modules("memory")


def test_a_linear_layer_saves_its_input_only():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)  # the weight is saved too (for x's gradient) but is a parameter
    m = memory.training_memory(layer, lambda: layer(x).sum())
    assert m["saved_bytes"] == 3 * 8 * 4
    assert m["param_bytes"] == m["grad_bytes"] == (8 * 4 + 4) * 4
    assert m["total_bytes"] == 3 * 8 * 4 + 2 * (8 * 4 + 4) * 4
    assert m["cuda_peak_bytes"] is None
    assert layer.weight.grad is not None


def test_a_storage_saved_twice_counts_once():
    w = nn.Parameter(torch.ones(5))
    holder = nn.Module()
    holder.w = w
    x = torch.randn(10)

    def forward():
        y = x.repeat(2)[:10]  # a new storage of 20 floats, saved below through a view
        return (x[:5] * w).sum() + (x[5:] * w).sum() + (y[:5] * w).sum()  # two views of x, one of y

    m = memory.training_memory(holder, forward)
    assert m["saved_bytes"] == 10 * 4 + 20 * 4  # x's storage once, y's whole storage once
    assert m["saved_bytes"] == memory.training_memory(holder, forward)["saved_bytes"]  # deterministic


@pytest.mark.parametrize("name", ["softmax", "2mamba"])
def test_memory_grows_with_sequence_length(name):
    cfg = ModelConfig(vocab_size=8, d_model=32, n_heads=2, n_layers=1, mixers=[name], max_seq_len=256,
                      second_order_chunk_size=16)
    torch.manual_seed(0)
    layer = build_mixer(name, cfg, 0)
    saved = []
    for t in (16, 64, 256):
        x = torch.randn(1, t, 32, requires_grad=True)
        saved.append(memory.training_memory(layer, lambda: layer(x, torch.arange(t)[None]).sum())["saved_bytes"])
    assert saved[0] < saved[1] < saved[2], saved


def test_what_selective_checkpointing_caches_is_counted():
    """Autograd's hooks do not see what checkpointing keeps; the created storages still alive do."""
    import functools

    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    holder = nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8, requires_grad=True)

    def keep_products(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE

    def region(x):
        return torch.tanh(holder(x))

    plain = memory.training_memory(holder, lambda: checkpoint(region, x, use_reentrant=False).sum(), kept=(x,))
    cached = functools.partial(create_selective_checkpoint_contexts, keep_products)
    selective = memory.training_memory(
        holder, lambda: checkpoint(region, x, use_reentrant=False, context_fn=cached).sum(), kept=(x,))
    assert plain["saved_bytes"] == 4 * 8 * 4  # the region's input only
    assert selective["saved_bytes"] == 2 * 4 * 8 * 4  # and the product it caches
