"""How much memory the engine gives the cache: blocks of tokens and per-sequence state slots.

The mixers declare what they keep (`Transformer.cache_specs`); this turns a byte budget
(`--kv-cache-memory`, or a share of the memory that is free) into a number of blocks and
slots. Slots come first (every running sequence of a model with recurrent state needs
one); blocks take the rest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lmforge.errors import ConfigError
from lmforge.model.step import CacheSpec

UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
DEFAULT_FREE_SHARE = 0.25


def parse_size(text: str) -> int:
    """Bytes of a size such as "2GiB", "512M", "1.5g" or "1000000" (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise ConfigError(f"{text!r} is not a size; write e.g. 2GiB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def available_memory() -> int:
    """Bytes of memory the system can give without swapping (MemAvailable), else the physical total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class MemoryPlan:
    """Blocks and slots for the engine, and what they cost."""

    num_blocks: int
    num_slots: int
    block_size: int
    token_bytes: int
    sequence_bytes: int

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.block_size * self.token_bytes + self.num_slots * self.sequence_bytes

    @property
    def max_tokens(self) -> int:
        """Tokens of context the cache holds across all sequences."""
        return self.num_blocks * self.block_size


def plan_memory(specs: list[CacheSpec], block_size: int, max_num_seqs: int, max_seq_len: int,
                budget: int | None = None) -> MemoryPlan:
    """Split `budget` bytes (default: a quarter of the free memory, capped at what `max_num_seqs`
    full-length sequences need) into state slots and cache blocks.

    A model that keeps nothing per token still gets blocks (bookkeeping only, no memory)
    so every sequence can reach the full context.
    """
    token_bytes = sum(s.token_bytes() for s in specs)
    sequence_bytes = sum(s.sequence_bytes() for s in specs)
    num_slots = max_num_seqs if sequence_bytes else 0
    blocks_for_all = max_num_seqs * -(-max_seq_len // block_size)
    if budget is None:
        need = num_slots * sequence_bytes + blocks_for_all * block_size * token_bytes
        budget = min(need, int(available_memory() * DEFAULT_FREE_SHARE))
    left = budget - num_slots * sequence_bytes
    if token_bytes == 0:
        num_blocks = blocks_for_all
    else:
        num_blocks = max(left, 0) // (block_size * token_bytes)
    if left < 0 or num_blocks == 0:
        raise ConfigError(
            f"a cache of {budget / 2**20:.1f} MiB does not hold one block of {block_size} tokens "
            f"({block_size * token_bytes / 2**20:.2f} MiB) beside {num_slots} sequence states "
            f"({num_slots * sequence_bytes / 2**20:.1f} MiB); give a larger --kv-cache-memory or a smaller --max-num-seqs"
        )
    return MemoryPlan(num_blocks, num_slots, block_size, token_bytes, sequence_bytes)
