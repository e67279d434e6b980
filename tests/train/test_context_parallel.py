"""Context parallelism (gloo on CPU): ranks holding T/P tokens each compute, in float64, the outputs and gradients
one process computes on the whole rows: attention through Ulysses and UPipe, with grouped-query attention split or
repeated over the ranks and in stages of heads, and linear layers passing their states across the ranks."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode
from helpers import tiny_model

from lmforge.model.transformer import sequence_parallel_problem, sequence_sharded
from lmforge.ops.sequence_parallel import check_heads, check_stages
from lmforge.train.distributed import World, sequence_shard

VOCAB, ROWS, LENGTH = 64, 2, 32


def model_for(mixers, n_heads, n_kv_heads):
    return tiny_model(VOCAB, mixers=mixers, n_heads=n_heads, n_kv_heads=n_kv_heads, sparse_block_q=8, sparse_block_k=8,
                      sparse_top_k=0.5).double()


# (mixers, heads, KV heads, heads per UPipe stage or 0 for Ulysses); those whose heads do not fit the ranks are
# left out for that number of ranks. Over 2 ranks: KV heads split, shared by several stages, one per stage and
# several per stage; over 4: KV heads repeated. TWO_RANKS_ONLY: cases whose 4-rank form another case covers.
CASES = [
    (["softmax"], 4, 2, 0), (["sparse", "softmax"], 4, 2, 0), (["sparse", "softmax"], 4, 4, 0),
    (["softmax"], 4, 2, 2), (["sparse", "softmax"], 8, 2, 2), (["softmax"], 4, 4, 2), (["softmax"], 8, 4, 4),
    (["softmax"], 8, 8, 4), (["sparse", "softmax"], 8, 2, 4),
    (["mamba2s", "2mamba"], 4, 4, 0), (["mamba2", "sparse", "mamba2s", "softmax"], 4, 2, 2),
]
TWO_RANKS_ONLY = {0, 7}  # softmax with repeated KV heads runs in case 1's hybrid; case 7 is case 6 with more KV heads


class AttentionCalls(TorchDispatchMode):
    """Counts the fused attention's forward calls made under it."""

    forward = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.forward += func == torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
        return func(*args, **(kwargs or {}))


def equal_to_one_process(rank, ranks, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=ranks)
    try:
        ulysses, ran = sequence_shard(World(rank, ranks), ranks), 0
        for case, (mixers, n_heads, n_kv_heads, stage_heads) in enumerate(CASES):
            model = model_for(mixers, n_heads, n_kv_heads)
            if sequence_parallel_problem(model, ranks, stage_heads) or (ranks > 2 and case in TWO_RANKS_ONLY):
                continue
            tokens = torch.randint(VOCAB, (ROWS, LENGTH + 1), generator=torch.Generator().manual_seed(1))
            x, y = tokens[:, :-1], tokens[:, 1:]
            whole_logits = model(x)
            model(x, targets=y).backward()
            whole_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad()

            mine = slice(rank * LENGTH // ranks, (rank + 1) * LENGTH // ranks)
            with sequence_sharded(model, dataclasses.replace(ulysses, stage_heads=stage_heads)):
                logits = model(x[:, mine])
                loss = model(x[:, mine], targets=y[:, mine])
            case = f"{mixers} {n_heads}/{n_kv_heads} heads, stages of {stage_heads}"
            torch.testing.assert_close(logits, whole_logits[:, mine], rtol=0, atol=1e-10, msg=case)
            with AttentionCalls() as calls:
                loss.backward()
            assert calls.forward == 0, case  # UPipe recomputes projections and exchanges, never the attention
            for name, p in model.named_parameters():
                dist.all_reduce(p.grad)  # what DDP does over the ranks, before dividing by their number
                torch.testing.assert_close(p.grad / ranks, whole_grads[name], rtol=0, atol=1e-10, msg=f"{case} {name}")
            assert model.sequence_shard is None and all(layer.mixer.sequence_shard is None for layer in model.layers)
            ran += 1
        assert ran == {2: 11, 4: 5}[ranks]  # no case left out that should run
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("ranks", [2, 4])
def test_ulysses_and_upipe_equal_one_process(ranks, tmp_path):
    mp.spawn(equal_to_one_process, (ranks, str(tmp_path / "rendezvous")), nprocs=ranks)


def test_what_cannot_split_is_refused():
    assert check_heads(4, 2, 2) is None and check_heads(4, 2, 4) is None and check_heads(8, 2, 4) is None
    assert "attention heads" in check_heads(4, 2, 3)
    assert "KV heads" in check_heads(12, 4, 6)
    assert check_stages(8, 2, 2, 2) is None and check_stages(8, 8, 2, 4) is None
    assert "equal share" in check_stages(8, 2, 2, 3) and "equal share" in check_stages(8, 2, 2, 6)
    assert sequence_parallel_problem(model_for(["softmax"], 4, 2), 2) is None
    assert sequence_parallel_problem(model_for(["mamba2s", "2mamba"], 1, 1), 2) is None  # no heads to split
    assert "2mamba_e" in sequence_parallel_problem(model_for(["softmax", "2mamba_e"], 4, 2), 2)
