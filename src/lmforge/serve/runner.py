"""The model runner: owns the model and the engine's memory, turns a scheduled batch into one forward.

It flattens the scheduled tokens of every sequence, describes them as a `Step` (positions,
block tables, state slots; nano-vllm's `prepare_prefill` / `prepare_decode`, in one
function because a step may mix both) and returns, per sequence, the logits the engine
samples from: the last token's when the sequence reaches its end this step, every
prompt position's when it asked for prompt log-probabilities, and every position's when
the step verifies speculative drafts.

For a model that keeps per-sequence state, `snapshot` and `restore` save and put back what a
step may change besides per-token entries at new positions (state slots, and entries that
sum several positions): a verify step whose drafts are rejected is undone that way.
"""

from __future__ import annotations

from typing import Callable

import torch

from lmforge.model.step import Memory, build_step
from lmforge.model.transformer import Transformer
from lmforge.serve.sequence import Sequence

Observer = Callable[[Sequence, int, torch.Tensor], None]  # (sequence, layer, hidden [rows, D])


class ModelRunner:
    """Runs `model` over the engine's paged memory: `num_blocks` blocks of `block_size` tokens and
    `num_slots` per-sequence state slots, in `dtype`."""

    def __init__(self, model: Transformer, num_blocks: int, block_size: int, num_slots: int, dtype: torch.dtype):
        self.model = model.eval()
        self.device = model.embed.weight.device
        self.dtype = dtype
        self.specs = model.cache_specs(dtype, block_size)
        self.memory = Memory(self.specs, num_blocks, block_size, num_slots, self.device)
        self.stateful = any(spec.per_sequence or any(e.every > 1 for e in spec.per_token.values()) for spec in self.specs)

    def execute(self, batch: list[tuple[Sequence, int]], observer: Observer | None = None) -> list[torch.Tensor | None]:
        """Compute `n` more tokens of each (sequence, n); return each sequence's logits [rows, V]
        (fp32), or None when it needs none this step."""
        return self.run([(seq, seq.num_computed, seq.token_ids[seq.num_computed : seq.num_computed + n])
                         for seq, n in batch], observer)

    @torch.no_grad()
    def run(self, batch: list[tuple[Sequence, int, list[int]]], observer: Observer | None = None,
            last: bool = False) -> list[torch.Tensor | None]:
        """Compute `tokens` at positions start.. of each (sequence, start, tokens); logits as `execute` returns
        them, or with `last` the last token's of every sequence (a draft model's runner, which keeps its own
        count of what it computed and feeds tokens the sequence does not hold yet)."""
        query_lens, pasts, tables, slots, tokens, rows = [], [], [], [], [], []
        for seq, start, new in batch:
            n = len(new)
            query_lens.append(n)
            pasts.append(start)
            tables.append(seq.block_table)
            slots.append(seq.slot or 0)
            first = len(tokens)
            tokens += new
            if not last and ((seq.params.prompt_logprobs is not None and start < seq.num_prompt_tokens) or seq.num_draft):
                rows.append(range(first, first + n))  # every position predicts the next prompt token, or checks a draft
            elif last or start + n == len(seq):
                rows.append(range(first + n - 1, first + n))
            else:
                rows.append(range(0))
        flat_rows = [r for seq_rows in rows for r in seq_rows]
        step = build_step(query_lens, pasts, tables, slots, self.memory, flat_rows,
                          self._split_observer(batch, rows, observer), self.device)
        logits = self.model(torch.tensor(tokens, device=self.device), step=step).float()
        out, at = [], 0
        for seq_rows in rows:
            out.append(logits[at : at + len(seq_rows)] if seq_rows else None)
            at += len(seq_rows)
        return out

    @staticmethod
    def _split_observer(batch, rows, observer: Observer | None):
        if observer is None:
            return None
        spans, at = [], 0
        for (seq, *_), seq_rows in zip(batch, rows):
            spans.append((seq, at, at + len(seq_rows)))
            at += len(seq_rows)

        def observe(layer: int, hidden: torch.Tensor) -> None:
            for seq, a, b in spans:
                if b > a:
                    observer(seq, layer, hidden[a:b])

        return observe

    def snapshot(self, seq: Sequence, start: int, end: int) -> list[tuple[torch.Tensor, object, torch.Tensor]]:
        """Copies of what computing positions start..end-1 of `seq` changes besides their own per-token entries:
        its state slot's entries, and the entries of sums over several positions that those positions touch."""
        saved = []
        bs = self.memory.block_size
        for layer, spec in zip(self.memory.layers, self.specs):
            for name in spec.per_sequence:
                saved.append((layer[name], seq.slot, layer[name][seq.slot].clone()))
            for name, entry in spec.per_token.items():
                if entry.every > 1:
                    flat = layer[name].view(layer[name].shape[0], -1, *layer[name].shape[3:])
                    index = torch.tensor(sorted({(seq.block_table[p // bs] * bs + p % bs) // entry.every
                                                 for p in range(start, end)}), dtype=torch.long, device=flat.device)
                    saved.append((flat, (slice(None), index), flat[:, index].clone()))
        return saved

    @staticmethod
    def restore(saved: list[tuple[torch.Tensor, object, torch.Tensor]]) -> None:
        """Put back what `snapshot` copied."""
        for pool, index, values in saved:
            pool[index] = values

    def copy_block(self, src: int, dst: int) -> None:
        """Copy every layer's per-token entries of block `src` into block `dst` (copy-on-write of a shared block)."""
        for layer, spec in zip(self.memory.layers, self.specs):
            for name in spec.per_token:
                layer[name][:, dst] = layer[name][:, src]

    def copy_slot(self, src: int, dst: int) -> None:
        """Copy every layer's per-sequence state from slot `src` to slot `dst` (a forked sample)."""
        for layer, spec in zip(self.memory.layers, self.specs):
            for name in spec.per_sequence:
                layer[name][dst] = layer[name][src]
