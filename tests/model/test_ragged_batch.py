"""The engine's contract for every mixer: a ragged batch of unrelated sequences, prefilled together, decoded
with sequences joining and leaving and prompts split into chunks, gives (float64) exactly what each gives alone."""

import random

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.model.step import Memory, build_step
from lmforge.model.transformer import Transformer

MIXERS = [["softmax"], ["sparse"], ["mamba2s"], ["2mamba"], ["2mamba_e"], ["mamba2"], ["2mamba", "softmax", "sparse", "2mamba_e"]]
BLOCK = 4


def model(mixers, **kw) -> Transformer:
    torch.manual_seed(0)
    settings = dict(vocab_size=97, d_model=32, n_layers=len(mixers), n_heads=4, n_kv_heads=2, mixers=mixers,
                    max_seq_len=128, linear_chunk_size=4, second_order_chunk_size=8, mamba2_state=8, mamba2_expand=1,
                    sparse_block_q=8, sparse_block_k=4, sparse_top_k=0.2, sparse_top_p=0.3)
    cfg = ModelConfig(**{**settings, **kw})
    m = Transformer(cfg).to(torch.float64).eval()
    with torch.no_grad():
        m.embed.weight.mul_(5)  # sharper attention, so a wrong key or block shows up
    return m


class Harness:
    """A minimal engine: block tables from a shuffled free list, one state slot per sequence, no scheduler."""

    def __init__(self, m: Transformer, num_blocks: int = 48, num_slots: int = 6):
        self.model = m
        self.memory = Memory(m.cache_specs(torch.float64, BLOCK), num_blocks, BLOCK, num_slots)
        self.free_blocks = list(range(num_blocks))
        random.Random(1).shuffle(self.free_blocks)
        self.free_slots = list(range(num_slots))[::-1]
        self.seqs: dict[str, dict] = {}

    def join(self, name: str, tokens: list[int]) -> None:
        self.seqs[name] = {"tokens": tokens, "done": 0, "blocks": [], "slot": self.free_slots.pop(), "logits": []}

    def leave(self, name: str) -> None:
        seq = self.seqs.pop(name)
        self.free_blocks += seq["blocks"]
        self.free_slots.append(seq["slot"])

    def step(self, plan: dict[str, int]) -> None:
        """Run `plan[name]` new tokens of each named sequence in one forward, keeping every token's logits."""
        names = list(plan)
        for name in names:
            seq = self.seqs[name]
            while len(seq["blocks"]) * BLOCK < seq["done"] + plan[name]:
                seq["blocks"].append(self.free_blocks.pop())
        tokens = [t for n in names for t in self.seqs[n]["tokens"][self.seqs[n]["done"]: self.seqs[n]["done"] + plan[n]]]
        step = build_step([plan[n] for n in names], [self.seqs[n]["done"] for n in names],
                          [self.seqs[n]["blocks"] for n in names], [self.seqs[n]["slot"] for n in names],
                          self.memory, logits_indices=range(len(tokens)))
        with torch.no_grad():
            logits = self.model(torch.tensor(tokens), step=step)
        row = 0
        for n in names:
            self.seqs[n]["logits"].append(logits[row: row + plan[n]])
            self.seqs[n]["done"] += plan[n]
            row += plan[n]


CASES = [(mixers, {}) for mixers in MIXERS] + [(["sparse"], {"sparse_block_q": q}) for q in (1, 5, 16)]
CASES += [([name], {"linear_variant": "lmforge"}) for name in ("mamba2s", "2mamba", "2mamba_e")]


@pytest.mark.parametrize("mixers, settings", CASES, ids=lambda c: "+".join(c) if isinstance(c, list) else str(c))
def test_ragged_batch_equals_each_sequence_alone(mixers, settings):
    m = model(mixers, **settings)
    rng = random.Random(0)
    prompts = {name: [rng.randrange(97) for _ in range(n)] for name, n in (("a", 40), ("b", 30), ("c", 35), ("d", 30))}
    h = Harness(m)
    h.join("a", prompts["a"])
    h.join("b", prompts["b"])
    h.step({"a": 13, "b": 5})                      # two prompts of different lengths, prefilled together
    h.step({"a": 1, "b": 1})
    h.join("c", prompts["c"])
    h.step({"a": 1, "b": 1, "c": 9})               # c joins with its prompt while a and b decode
    for _ in range(3):
        h.step({"a": 1, "b": 1, "c": 1})
    finished = {"b": h.seqs["b"]}
    h.leave("b")                                   # b leaves: its blocks and slot go to d
    h.join("d", prompts["d"])
    h.step({"a": 1, "c": 1, "d": 6})               # d's prompt in two chunks
    h.step({"a": 1, "c": 1, "d": 10})
    for _ in range(12):                            # long enough to cross several sparse query blocks
        h.step({"a": 1, "c": 1, "d": 1})
    h.step({"a": 3})                               # a multi-token chunk after decoding
    finished.update(h.seqs)
    for name, seq in finished.items():
        got = torch.cat(seq["logits"])
        tokens = torch.tensor(seq["tokens"][: seq["done"]])[None]
        with torch.no_grad():
            alone = m(tokens)[0]
        torch.testing.assert_close(got, alone, rtol=0, atol=1e-9, msg=f"sequence {name}")


@pytest.mark.parametrize("name", ["mamba2s", "2mamba", "mamba2"])
def test_recurrent_mixers_keep_nothing_per_token(name):
    spec = model([name]).cache_specs(torch.float32, BLOCK)[0]
    assert spec.token_bytes() == 0 and spec.sequence_bytes() > 0


def test_memory_sizes_follow_the_specs():
    m = model(["softmax", "mamba2s"])
    specs = m.cache_specs(torch.float32, BLOCK)
    assert specs[0].token_bytes() == 2 * 2 * 8 * 4 and specs[0].sequence_bytes() == 0  # K and V, 2 heads of 8, fp32
    mem = Memory(specs, num_blocks=10, block_size=BLOCK, num_slots=3)
    assert mem.nbytes() == 10 * BLOCK * specs[0].token_bytes() + 3 * specs[1].sequence_bytes()
