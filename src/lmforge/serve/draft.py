"""The draft model of speculative decoding: a small model sharing the target's tokenizer proposes each step's drafts.

It runs in the engine's own cache layout: its `ModelRunner` has a memory of its own with the
target's block and slot counts, and reads each sequence's block table and state slot, so the
scheduler's blocks hold both models' entries for the same positions and nothing is allocated
twice. Per step and sequence it computes the tokens it has not seen (the prompt at first, then
what the target accepted), samples a draft from its distribution q (the request's own sampling
settings, grammar mask included), feeds that draft, and so on: one batched forward per draft
position over every speculating sequence. What its cache holds is checked against the sequence
each step (the tokens and the block ids it computed them in), so rejected drafts, preemption and
forks need no bookkeeping from the engine; a draft model with per-sequence state puts back the
snapshot taken before it fed its drafts when some are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.model.transformer import Transformer
from lmforge.serve.runner import ModelRunner
from lmforge.serve.sampler import Sampler, inverse_cdf, make_generator
from lmforge.serve.sequence import Sequence


@dataclass
class _Cached:
    """What the draft model's memory holds for one sequence: the tokens it computed, in which blocks, and (with
    per-sequence state) the snapshot taken after the committed tokens."""

    tokens: list[int]
    blocks: list[int]
    committed: int
    snapshot: list | None
    generator: torch.Generator


class DraftModel:
    """`propose(seqs, rooms)` gives each sequence up to rooms[i] drafts and their distributions q ([d, V] for a
    sampled request, None for a greedy one)."""

    def __init__(self, model: Transformer, vocab_size: int, num_blocks: int, block_size: int, num_slots: int,
                 dtype: torch.dtype):
        self.runner = ModelRunner(model, num_blocks, block_size, num_slots, dtype)
        self.vocab_size = vocab_size  # the target's logit width: q is laid out like p
        self.cached: dict[int, _Cached] = {}

    def _valid(self, seq: Sequence) -> int:
        """How many of the sequence's leading positions the draft model's memory holds correctly."""
        cached = self.cached.get(seq.seq_id)
        if cached is None:
            return 0
        n = 0
        for a, b in zip(cached.tokens, seq.token_ids):
            if a != b:
                break
            n += 1
        bs = self.runner.memory.block_size
        same = next((i for i, (a, b) in enumerate(zip(cached.blocks, seq.block_table)) if a != b),
                    min(len(cached.blocks), len(seq.block_table)))
        n = min(n, same * bs)
        if self.runner.stateful and n < len(cached.tokens):  # its state ran past n: back to the snapshot, or restart
            if n >= cached.committed and cached.snapshot is not None:
                self.runner.restore(cached.snapshot)
                return cached.committed
            return 0
        return n

    def propose(self, seqs: list[Sequence], rooms: list[int]) -> list[tuple[list[int], torch.Tensor | None]]:
        live = {seq.seq_id for seq in seqs}
        self.cached = {k: v for k, v in self.cached.items() if k in live}
        drafts: list[list[int]] = [[] for _ in seqs]
        probs: list[list[torch.Tensor]] = [[] for _ in seqs]
        feeds = []  # (index, start, tokens) of this forward
        for i, (seq, room) in enumerate(zip(seqs, rooms)):
            if room > 0:
                start = min(self._valid(seq), len(seq) - 1)
                feeds.append((i, start, seq.token_ids[start:]))
        for seq, room in zip(seqs, rooms):
            if room > 0 and seq.seq_id not in self.cached:
                self.cached[seq.seq_id] = _Cached([], [], 0, None, make_generator(seq.params.seed, 1000 + seq.index))
        while feeds:
            logits = self.runner.run([(seqs[i], start, tokens) for i, start, tokens in feeds], last=True)
            following = []
            for (i, start, tokens), rows in zip(feeds, logits):
                seq, cached = seqs[i], self.cached[seqs[i].seq_id]
                if not drafts[i] and self.runner.stateful:  # the committed tokens are in: what a rejection returns to
                    cached.snapshot = self.runner.snapshot(seq, len(seq), len(seq) + rooms[i] - 1)
                    cached.committed = len(seq)
                token, q = self._choose(seq, rows[-1:], drafts[i], cached.generator)
                drafts[i].append(token)
                probs[i].append(q)
                if len(drafts[i]) < rooms[i]:
                    following.append((i, start + len(tokens), [token]))
            feeds = following
        for i, seq in enumerate(seqs):
            if rooms[i] > 0:
                cached = self.cached[seq.seq_id]
                cached.tokens = seq.token_ids + drafts[i][:-1]  # the last draft was proposed, not fed
                cached.blocks = list(seq.block_table)
        return [(d, None if seq.params.greedy or not d else torch.cat(q)) for seq, d, q in zip(seqs, drafts, probs)]

    def _choose(self, seq: Sequence, logits: torch.Tensor, drafted: list[int], generator: torch.Generator
                ) -> tuple[int, torch.Tensor]:
        """The next draft token after `drafted`, drawn from the draft model's distribution under the request's
        settings (argmax for a greedy request), and that distribution laid out over the target's vocabulary."""
        width = min(logits.shape[-1], self.vocab_size)
        row = logits.new_full((1, self.vocab_size), float("-inf"))
        row[:, :width] = logits[:, :width]
        view = Sequence(seq.token_ids + drafted, seq.params, num_prompt_tokens=seq.num_prompt_tokens)
        if seq.matcher is not None:
            view.matcher = seq.matcher.deep_copy()
            view.matcher.consume_tokens(drafted)
        _, chosen = Sampler.distributions(row, [view])
        if seq.params.greedy:
            return int(chosen.argmax()), chosen
        u = torch.rand(1, generator=generator, dtype=chosen.dtype, device=chosen.device)
        return int(inverse_cdf(chosen, u)[0]), chosen
