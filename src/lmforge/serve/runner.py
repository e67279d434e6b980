"""The model runner: owns the model and the engine's memory, turns a scheduled batch into one forward.

It flattens the scheduled tokens of every sequence, describes them as a `Step` (positions,
block tables, state slots; nano-vllm's `prepare_prefill` / `prepare_decode`, in one
function because a step may mix both) and returns, per sequence, the logits the engine
samples from: the last token's when the sequence reaches its end this step, and every
prompt position's when it asked for prompt log-probabilities.
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

    @torch.no_grad()
    def execute(self, batch: list[tuple[Sequence, int]], observer: Observer | None = None) -> list[torch.Tensor | None]:
        """Compute `n` more tokens of each (sequence, n); return each sequence's logits [rows, V]
        (fp32), or None when it needs none this step."""
        query_lens, pasts, tables, slots, tokens, rows = [], [], [], [], [], []
        for seq, n in batch:
            start = seq.num_computed
            query_lens.append(n)
            pasts.append(start)
            tables.append(seq.block_table)
            slots.append(seq.slot or 0)
            first = len(tokens)
            tokens += seq.token_ids[start : start + n]
            if seq.params.prompt_logprobs is not None and start < seq.num_prompt_tokens:
                rows.append(range(first, first + n))  # every position of the chunk predicts the next prompt token
            elif start + n == len(seq):
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
        for (seq, _), seq_rows in zip(batch, rows):
            spans.append((seq, at, at + len(seq_rows)))
            at += len(seq_rows)

        def observe(layer: int, hidden: torch.Tensor) -> None:
            for seq, a, b in spans:
                if b > a:
                    observer(seq, layer, hidden[a:b])

        return observe

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
