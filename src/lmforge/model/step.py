"""One engine step over a ragged batch of unrelated sequences, and the paged memory it reads and writes.

The engine (lmforge.serve) schedules, for every step, a few new tokens of each running
sequence: one for a decoding sequence, a chunk of its prompt for a prefilling one. The
model sees them flattened, [N] tokens, with a `Step` describing where each sequence's
tokens sit, at which positions, which cache blocks hold its past tokens (block tables, as
in vLLM's PagedAttention, Kwon et al., arXiv 2309.06180) and which slot holds its
per-sequence state (the recurrent state of a linear mixer).

Memory is declared by the mixers (`CacheSpec`: what they keep per token and per sequence)
and allocated by the engine in two pools: blocks of `block_size` tokens and sequence
slots. Every piece of host-side bookkeeping (lengths, groups) is a Python int computed
when the step is built, so a forward never reads a tensor back to the host.

A mixer runs a step group by group: all decoding sequences together (one token each,
a batch of rows), and each prefilling sequence alone (a chunk of its prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class CacheEntry:
    """One tensor a mixer keeps: `shape` per token (one entry every `every` tokens) or per sequence."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    every: int = 1

    def nbytes(self) -> int:
        """Bytes per token (per-token entries, amortised over `every`) or per sequence."""
        n = torch.empty((), dtype=self.dtype).element_size()
        for s in self.shape:
            n *= s
        return n // self.every if self.every > 1 else n


@dataclass(frozen=True)
class CacheSpec:
    """What one mixer of one layer keeps for decoding, by name."""

    per_token: dict[str, CacheEntry] = field(default_factory=dict)
    per_sequence: dict[str, CacheEntry] = field(default_factory=dict)

    def token_bytes(self) -> int:
        """Bytes of cache per token of context."""
        return sum(e.nbytes() for e in self.per_token.values())

    def sequence_bytes(self) -> int:
        """Bytes of state per sequence, whatever its length."""
        return sum(e.nbytes() for e in self.per_sequence.values())


class Memory:
    """The engine's pools, one dict of tensors per layer.

    A per-token entry of shape (H, *rest) is head-major, [H, num_blocks, block_size // every,
    *rest] (block b holds positions of whichever sequence owns it; see `lmforge.ops.paged`);
    a per-sequence entry is [num_slots, *shape].
    """

    def __init__(self, specs: Sequence[CacheSpec], num_blocks: int, block_size: int, num_slots: int,
                 device: torch.device | str = "cpu"):
        for spec in specs:
            for name, entry in spec.per_token.items():
                if block_size % entry.every:
                    raise ValueError(f"block size {block_size} is not a multiple of {name}'s granularity {entry.every}")
        self.num_blocks, self.block_size, self.num_slots = num_blocks, block_size, num_slots
        self.layers: list[dict[str, torch.Tensor]] = [
            {**{name: torch.zeros(e.shape[0], num_blocks, block_size // e.every, *e.shape[1:], dtype=e.dtype, device=device)
                for name, e in spec.per_token.items()},
             **{name: torch.zeros(num_slots, *e.shape, dtype=e.dtype, device=device)
                for name, e in spec.per_sequence.items()}}
            for spec in specs
        ]

    def nbytes(self) -> int:
        """Bytes held by every pool."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())


@dataclass
class Group:
    """Sequences a mixer runs together: every decoding sequence (query_len 1), or one prefilling sequence.

    `tokens` selects the group's rows of the step's flat tokens, sequence-major, so
    `x[tokens].view(batch, query_len, ...)`; `positions` is [batch, query_len]. `past` is
    each sequence's number of earlier tokens already in memory (host ints), `context` the
    longest past + query_len. `has_past` says whether the per-sequence state holds the
    sequence's earlier tokens (False for a sequence's first chunk: start from zero).
    """

    tokens: torch.Tensor | slice
    positions: torch.Tensor
    batch: int
    query_len: int
    past: list[int]
    context: int
    block_size: int
    block_tables: torch.Tensor  # [batch, ceil(context / block_size)]
    state_slots: torch.Tensor  # [batch]
    slot_mapping: torch.Tensor  # [batch * query_len]: the cache slot of each of the group's tokens
    memo: dict = field(default_factory=dict, repr=False)  # tensors every layer would otherwise rebuild

    @property
    def has_past(self) -> bool:
        return self.past[0] > 0

    @property
    def decoding(self) -> bool:
        return self.query_len == 1 and self.has_past


    @property
    def key_width(self) -> int:
        """Keys per row when the group's blocks are gathered whole: block_tables' width x block size."""
        return self.block_tables.shape[1] * self.block_size

    def causal_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """[batch, 1, query_len, key_width] additive mask over gathered blocks: 0 where a query may see a
        key (positions up to its own), -inf elsewhere (later positions, padding). Built once per step and
        shared by every layer (an additive float mask also takes a faster kernel than a boolean one on CPU)."""
        key = ("causal", dtype)
        if key not in self.memo:
            visible = torch.arange(self.key_width, device=self.positions.device) <= self.positions[..., None]
            self.memo[key] = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(
                ~visible, float("-inf"))[:, None]
        return self.memo[key]

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """The group's rows of t [1, N, ...] (dim 1 indexes the step's tokens) as [batch, query_len, ...]."""
        return t[:, self.tokens].reshape(self.batch, self.query_len, *t.shape[2:])


@dataclass
class Step:
    """Everything a forward over flat tokens [N] needs besides the tokens themselves."""

    positions: torch.Tensor  # [N]
    slot_mapping: torch.Tensor  # [N]: block * block_size + offset of each new token
    groups: list[Group]
    logits_indices: torch.Tensor  # rows of the flat tokens whose logits are wanted
    memory: Memory
    observer: Callable[[int, torch.Tensor], None] | None = None  # (layer, hidden at logits_indices); layer 0 = embedding
    memo: dict = field(default_factory=dict, repr=False)  # tensors every layer would otherwise rebuild

    @property
    def block_size(self) -> int:
        return self.memory.block_size

    def cached(self, key, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`make()`, computed once per step (e.g. RoPE angles, the same in every layer)."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


def run_groups(step: Step, fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Apply fn(group, *[batch, query_len, ...] inputs) -> [batch, query_len, ...] to every group
    of the step; inputs and the result are flat, [1, N, ...]."""
    n = step.positions.shape[0]
    if len(step.groups) == 1 and step.groups[0].batch * step.groups[0].query_len == n:  # one group: no gather, no scatter
        g = step.groups[0]
        y = fn(g, *(t.view(g.batch, g.query_len, *t.shape[2:]) for t in inputs))
        return y.reshape(1, n, *y.shape[2:])
    out = None
    for g in step.groups:
        y = fn(g, *(g.take(t) for t in inputs))
        if out is None:
            out = y.new_empty(1, n, *y.shape[2:])
        out[:, g.tokens] = y.reshape(1, g.batch * g.query_len, *y.shape[2:])
    return out


def build_step(
    query_lens: Sequence[int],
    pasts: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    state_slots: Sequence[int],
    memory: Memory,
    logits_indices: Sequence[int] | None = None,
    observer: Callable[[int, torch.Tensor], None] | None = None,
    device: torch.device | str = "cpu",
) -> Step:
    """Describe one step: sequence i contributes query_lens[i] new tokens at positions
    pasts[i].., its cache blocks are block_tables[i] (covering every position it will hold
    after the step) and its state lives in slot state_slots[i]. Tokens are flat in
    sequence order. `logits_indices` defaults to the last new token of every sequence.
    """
    bs = memory.block_size
    positions, slots, starts = [], [], []
    for qlen, past, table in zip(query_lens, pasts, block_tables):
        starts.append(len(positions))
        for p in range(past, past + qlen):
            positions.append(p)
            slots.append(table[p // bs] * bs + p % bs)
    if logits_indices is None:
        logits_indices = [start + qlen - 1 for start, qlen in zip(starts, query_lens)]

    def tensor(values, dtype=torch.long) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    def group(members: list[int], tokens) -> Group:
        context = max(pasts[i] + query_lens[i] for i in members)
        width = -(-context // bs)
        tables = [list(block_tables[i][:width]) + [0] * (width - min(width, len(block_tables[i]))) for i in members]
        qlen = query_lens[members[0]]
        rows = [starts[i] + j for i in members for j in range(qlen)]
        return Group(tokens, tensor([positions[r] for r in rows]).view(len(members), qlen), len(members), qlen,
                     [pasts[i] for i in members], context, bs, tensor(tables), tensor([state_slots[i] for i in members]),
                     tensor([slots[r] for r in rows]))

    decoding = [i for i, (q, p) in enumerate(zip(query_lens, pasts)) if q == 1 and p > 0]
    rows = [starts[i] for i in decoding]
    contiguous = rows == list(range(rows[0], rows[0] + len(rows))) if rows else False
    groups = [group(decoding, slice(rows[0], rows[-1] + 1) if contiguous else tensor(rows))] if decoding else []
    groups += [group([i], slice(starts[i], starts[i] + q)) for i, (q, p) in enumerate(zip(query_lens, pasts))
               if q > 1 or (q == 1 and p == 0)]
    return Step(tensor(positions), tensor(slots), groups, tensor(list(logits_indices)), memory, observer)
