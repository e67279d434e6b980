"""Bookkeeping of the engine's memory: paged cache blocks with a prefix cache, and per-sequence state slots.

Only ids and counts live here; the tensors are `lmforge.model.step.Memory`'s. A sequence's
positions live in `block_size`-token blocks listed in its `block_table` (vLLM's paged
attention). A block is shared by reference count: between the `n` samples of one prompt
(`fork`) and between requests with a common prefix (the prefix cache).

Prefix cache (as nano-vllm's, by chained hashes of full blocks): once a full block has been
computed, `commit` registers it under key_i = block_hash(key_{i-1}, its token ids), so the
key names the block's whole prefix. A later sequence whose tokens chain to the same keys
takes those blocks instead of computing them. A hash is only a hint: a hit is verified by
the block's stored token ids and by the identity of its predecessor (the block matched for
i-1, by a registration id that is never reused), so a collision can at worst miss, never
hand out another prompt's block. A registered block whose last reference is dropped stays
findable ("evictable") until the free list runs dry and it is reused, least recently
released first.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass

from lmforge.serve.sequence import Sequence

_ROOT = -1  # the chain key before a sequence's first block


def block_hash(prev_key: int, token_ids: tuple[int, ...]) -> int:
    """Key of a full block: the previous block's key chained with this block's tokens."""
    return hash((prev_key, token_ids))


@dataclass
class _Block:
    """One cache block. `key`, `token_ids`, `parent` and `uid` are set once it holds a committed
    full block: `uid` identifies that content with that exact prefix (it is shared by a
    duplicate of a registered block and never reused), `parent` is the predecessor's uid."""

    id: int
    ref_count: int = 0
    key: int | None = None
    token_ids: tuple[int, ...] = ()
    parent: int | None = None
    uid: int | None = None

    def reset(self) -> None:
        self.key, self.token_ids, self.parent, self.uid = None, (), None, None


class BlockManager:
    """Reference-counted cache blocks, a free list, and a prefix cache of full blocks (LRU eviction)."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [_Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced registered blocks, oldest first
        self.cached: dict[int, int] = {}  # key -> id of the registered block
        self._uids = itertools.count()
        self.prefix_queries = 0  # tokens looked up in the prefix cache at admissions
        self.prefix_hits = 0  # of those, tokens found cached

    @property
    def num_free_blocks(self) -> int:
        """Blocks a sequence can take now: free ones plus unreferenced cached ones."""
        return len(self.free_ids) + len(self.evictable)

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold num_tokens positions."""
        return -(-num_tokens // self.block_size)

    def fits_alone(self, num_tokens: int) -> bool:
        """Whether a sequence of num_tokens positions fits the whole cache with nothing else in it;
        the engine refuses a request that does not (it could never be scheduled)."""
        return self.blocks_needed(num_tokens) <= self.num_blocks

    def _registered(self, block: _Block) -> bool:
        return block.key is not None and self.cached.get(block.key) == block.id

    def _lookup(self, key: int, token_ids: tuple[int, ...], parent: int | None) -> _Block | None:
        """The registered block for this key, if it really holds token_ids after the block `parent`."""
        block_id = self.cached.get(key)
        if block_id is None:
            return None
        block = self.blocks[block_id]
        return block if block.token_ids == token_ids and block.parent == parent else None

    def allocate_prefix(self, seq: Sequence) -> int:
        """Admit seq (empty block table): take the longest run of cached full blocks that matches
        its tokens, never the block holding its last token (the model must compute at least one
        token to give logits). Sets the table, num_computed, num_cached and num_hashed_blocks;
        returns the number of cached tokens (0 with prefix caching off)."""
        if not self.enable_prefix_caching:
            return 0
        bs = self.block_size
        key, parent = _ROOT, None
        for i in range((len(seq) - 1) // bs):
            token_ids = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            key = block_hash(key, token_ids)
            block = self._lookup(key, token_ids, parent)
            if block is None:
                break
            if block.ref_count == 0:
                del self.evictable[block.id]
            block.ref_count += 1
            seq.block_table.append(block.id)
            parent = block.uid
        hit = len(seq.block_table) * bs
        seq.num_computed = seq.num_cached = hit
        seq.num_hashed_blocks = len(seq.block_table)
        self.prefix_queries += len(seq)
        self.prefix_hits += hit
        return hit

    def cancel(self, seq: Sequence) -> None:
        """Undo allocate_prefix for an admission that does not go ahead (no room to grow): release
        the blocks and take the lookup back out of the counters, so a sequence retried every
        step counts once."""
        if self.enable_prefix_caching:
            self.prefix_queries -= len(seq)
            self.prefix_hits -= seq.num_cached
        self.free(seq)
        seq.num_computed = seq.num_cached = 0

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether seq's block table can be made to cover num_tokens positions."""
        return self.blocks_needed(num_tokens) - len(seq.block_table) <= self.num_free_blocks

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Make seq's block table cover num_tokens positions; RuntimeError if there are not enough
        blocks (check can_grow first)."""
        need = self.blocks_needed(num_tokens) - len(seq.block_table)
        if need > self.num_free_blocks:
            raise RuntimeError(f"{need} blocks needed, {self.num_free_blocks} free")
        for _ in range(need):
            seq.block_table.append(self._take())

    def _take(self) -> int:
        """A block with one reference: a free one, else the least recently released cached one
        (whose cache entry goes)."""
        if self.free_ids:
            block = self.blocks[self.free_ids.popleft()]
        else:
            block = self.blocks[self.evictable.popitem(last=False)[0]]
            del self.cached[block.key]
            block.reset()
        block.ref_count = 1
        return block.id

    def commit(self, seq: Sequence) -> None:
        """Register every full block of seq's first num_computed tokens not registered yet. A block
        identical to a registered one (another sequence computed the same prefix) is not
        registered: the existing entry stays, and the chain continues from it so the blocks
        after it are still found. An entry under the same key that is not identical (a hash
        collision, or a block whose predecessor has been evicted, which nothing can reach any
        more) is replaced."""
        if not self.enable_prefix_caching:
            return
        bs, h = self.block_size, seq.num_hashed_blocks
        prev = self.blocks[seq.block_table[h - 1]] if h else None
        key, parent = (prev.key, prev.uid) if prev else (_ROOT, None)
        for i in range(h, seq.num_computed // bs):
            block = self.blocks[seq.block_table[i]]
            token_ids = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            key = block_hash(key, token_ids)
            same = self._lookup(key, token_ids, parent)
            if same is None:
                if key in self.cached:
                    self._unregister(self.blocks[self.cached[key]])
                self.cached[key] = block.id
            block.key, block.token_ids, block.parent = key, token_ids, parent
            block.uid = same.uid if same is not None else next(self._uids)
            parent = block.uid
        seq.num_hashed_blocks = max(h, seq.num_computed // bs)

    def _unregister(self, block: _Block) -> None:
        """Drop block's cache entry; an unreferenced block goes back to the free list."""
        del self.cached[block.key]
        if block.ref_count == 0:
            del self.evictable[block.id]
            block.reset()
            self.free_ids.append(block.id)

    def can_fork(self, parent: Sequence) -> bool:
        """Whether fork(parent, ...) has the block it needs (one, if the last computed block is partial)."""
        return self.num_free_blocks >= (1 if parent.num_computed % self.block_size else 0)

    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """Give child (another sample of parent's computed prompt; empty table) the parent's
        computed blocks: full blocks are shared (they are never written again), a partly filled
        last block is copied now, since both will write to it. Returns the (src, dst) block
        pairs whose memory the caller must copy; RuntimeError without a free block for it."""
        full, partial = divmod(parent.num_computed, self.block_size)
        if partial and not self.num_free_blocks:
            raise RuntimeError("no free block to copy the parent's last block into")
        for block_id in parent.block_table[:full]:
            self.blocks[block_id].ref_count += 1
        child.block_table = parent.block_table[:full]
        copies = []
        if partial:
            child.block_table.append(self._take())
            copies.append((parent.block_table[full], child.block_table[-1]))
        child.num_computed, child.num_cached = parent.num_computed, parent.num_cached
        child.num_hashed_blocks = parent.num_hashed_blocks
        return copies

    def free(self, seq: Sequence) -> None:
        """Drop seq's references, last block first (so a prompt's tail is evicted before its head);
        a block left unreferenced stays cached if registered, else goes back to the free list."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if self._registered(block):
                    self.evictable[block.id] = None
                else:
                    block.reset()
                    self.free_ids.append(block.id)
        seq.block_table = []
        seq.num_hashed_blocks = 0


class SlotPool:
    """Per-sequence state slots (recurrent state of linear mixers): which are free."""

    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))  # allocate() hands out 0, 1, ... first
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int | None:
        """A free slot, or None when all are taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._used.add(slot)
        return slot

    def free(self, slot: int) -> None:
        """Return a slot; ValueError if it is not taken (a double free would hand it out twice)."""
        if slot not in self._used:
            raise ValueError(f"state slot {slot} is not allocated")
        self._used.remove(slot)
        self._free.append(slot)
