"""Block manager: prefix hits, reference counts and forks, LRU eviction, collision safety, slots."""

import pytest

from lmforge.serve import block_manager as bm_module
from lmforge.serve.block_manager import BlockManager, SlotPool
from lmforge.serve.params import SamplingParams
from lmforge.serve.sequence import Sequence


def seq(tokens):
    return Sequence(list(tokens), SamplingParams())


def admit_and_compute(bm, tokens):
    """What the engine does for a prompt that runs in one chunk: look up, grow, compute, commit."""
    s = seq(tokens)
    bm.allocate_prefix(s)
    bm.grow(s, len(s))
    s.num_computed = len(s)
    bm.commit(s)
    return s


def refs(bm, table):
    return [bm.blocks[b].ref_count for b in table]


def test_second_sequence_reuses_a_cached_three_block_prefix_and_counts_hits():
    bm = BlockManager(16, 4)
    prompt = list(range(1, 14))  # 3 full blocks + 1 token
    a = admit_and_compute(bm, prompt)
    b = seq(prompt)
    assert bm.allocate_prefix(b) == 12
    assert b.block_table == a.block_table[:3] and b.num_computed == b.num_cached == 12 and b.num_hashed_blocks == 3
    assert refs(bm, a.block_table) == [2, 2, 2, 1]
    assert (bm.prefix_queries, bm.prefix_hits) == (26, 12)
    bm.grow(b, len(b))  # only the last token's block is new
    assert len(b.block_table) == 4 and b.block_table[3] != a.block_table[3]


def test_a_differing_token_in_the_second_block_reuses_only_the_first():
    bm = BlockManager(16, 4)
    prompt = list(range(1, 14))
    a = admit_and_compute(bm, prompt)
    other = prompt.copy()
    other[5] = 99
    b = seq(other)
    assert bm.allocate_prefix(b) == 4 and b.block_table == a.block_table[:1]


def test_the_block_holding_the_last_token_is_computed_even_when_cached():
    bm = BlockManager(16, 4)
    a = admit_and_compute(bm, range(12))  # exactly 3 full blocks, all registered
    assert a.num_hashed_blocks == 3
    b = seq(range(12))
    assert bm.allocate_prefix(b) == 8 and b.num_uncomputed == 4


def test_free_returns_every_block_and_cached_ones_stay_findable():
    bm = BlockManager(8, 4)
    a = admit_and_compute(bm, range(10))
    assert bm.num_free_blocks == 5
    bm.free(a)
    assert bm.num_free_blocks == 8 and a.block_table == [] and a.num_hashed_blocks == 0
    assert len(bm.evictable) == 2  # the two full blocks; the partial one went to the free list
    assert bm.allocate_prefix(seq(range(10))) == 8


def test_cancel_releases_blocks_and_takes_the_lookup_out_of_the_counters():
    bm = BlockManager(8, 4)
    bm.free(admit_and_compute(bm, range(10)))
    queries, hits = bm.prefix_queries, bm.prefix_hits
    s = seq(range(10))
    bm.allocate_prefix(s)
    bm.cancel(s)
    assert (bm.prefix_queries, bm.prefix_hits) == (queries, hits)
    assert s.block_table == [] and s.num_computed == s.num_cached == 0 and bm.num_free_blocks == 8


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    bm = BlockManager(8, 4)
    parent = admit_and_compute(bm, range(10))  # blocks: full, full, 2 of 4
    child = seq(range(10))
    copies = bm.fork(parent, child)
    assert child.block_table[:2] == parent.block_table[:2]
    assert copies == [(parent.block_table[2], child.block_table[2])] and child.block_table[2] != parent.block_table[2]
    assert refs(bm, parent.block_table) == [2, 2, 1] and refs(bm, child.block_table[2:]) == [1]
    assert (child.num_computed, child.num_hashed_blocks) == (10, 2)
    assert bm.num_free_blocks == 4
    bm.free(parent)
    assert refs(bm, child.block_table) == [1, 1, 1] and bm.num_free_blocks == 5
    bm.free(child)
    assert bm.num_free_blocks == 8


def test_fork_of_a_block_aligned_prompt_copies_nothing():
    bm = BlockManager(4, 4)
    parent = admit_and_compute(bm, range(8))
    children = [seq(range(8)) for _ in range(3)]
    assert all(bm.fork(parent, c) == [] for c in children)
    assert refs(bm, parent.block_table) == [4, 4] and bm.num_free_blocks == 2
    for s in [parent, *children]:
        bm.free(s)
    assert bm.num_free_blocks == 4


def test_fork_without_a_free_block_for_the_copy_is_refused():
    bm = BlockManager(3, 4)
    parent = admit_and_compute(bm, range(10))
    assert not bm.can_fork(parent)
    with pytest.raises(RuntimeError):
        bm.fork(parent, seq(range(10)))


def test_lru_cached_blocks_are_evicted_tail_first_when_the_free_list_is_empty():
    bm = BlockManager(4, 2)
    a = admit_and_compute(bm, [1, 2, 3, 4, 5])  # two full blocks registered, one partial
    head, tail = a.block_table[:2]
    bm.free(a)
    assert list(bm.evictable) == [tail, head]  # released last block first: the tail is older
    b = seq([7, 8, 9, 10, 11])
    assert bm.allocate_prefix(b) == 0
    bm.grow(b, 5)  # two free blocks, then the least recently released cached one: a's tail
    assert tail in b.block_table and head not in b.block_table and list(bm.evictable) == [head]
    again = seq([1, 2, 3, 4, 5])
    assert bm.allocate_prefix(again) == 2 and again.block_table == [head]  # only the head is still cached


def test_an_evicted_prefix_misses():
    bm = BlockManager(2, 2)
    bm.free(admit_and_compute(bm, [1, 2, 3]))
    assert len(bm.evictable) == 1
    bm.free(admit_and_compute(bm, [5, 6, 7, 8]))  # needs both blocks: evicts [1, 2]
    s = seq([1, 2, 3])
    assert bm.allocate_prefix(s) == 0 and bm.num_free_blocks == 2


def test_eviction_only_takes_unreferenced_blocks():
    bm = BlockManager(3, 2)
    a = admit_and_compute(bm, [1, 2, 3])
    b = seq([1, 2, 3])
    assert bm.allocate_prefix(b) == 2  # shares a's registered block
    bm.free(a)  # the shared block is still referenced by b: not evictable
    assert bm.evictable == {} and bm.num_free_blocks == 3 - 1
    assert not bm.can_grow(b, 7) and bm.can_grow(b, 6)
    with pytest.raises(RuntimeError):
        bm.grow(b, 7)


def test_a_hash_collision_never_returns_another_prompts_block(monkeypatch):
    monkeypatch.setattr(bm_module, "block_hash", lambda prev_key, token_ids: 0)
    bm = BlockManager(8, 2)
    bm.free(admit_and_compute(bm, [5, 6, 7]))
    assert bm.allocate_prefix(seq([5, 6, 7])) == 2  # the same prompt still hits: its tokens match
    other = seq([9, 9, 1])  # same key, other tokens: must not hit
    assert bm.allocate_prefix(other) == 0
    bm.grow(other, 3)
    other.num_computed = 3
    bm.commit(other)
    bm.free(other)
    b = seq([9, 9, 1])
    assert bm.allocate_prefix(b) == 2  # [9, 9] replaced [5, 6] under the colliding key
    bm.free(b)
    admit_and_compute(bm, [1, 2, 3, 4, 5])  # its second block (3, 4) is registered last
    c = seq([3, 4, 0])  # the same tokens as a's second block, after another prefix: must miss
    assert bm.allocate_prefix(c) == 0
    assert bm.allocate_prefix(seq([7, 7, 7])) == 0


def test_an_identical_block_computed_twice_keeps_the_first_entry_and_the_chain_continues():
    bm = BlockManager(16, 2)
    a, b = seq([1, 2, 3, 4, 5]), seq([1, 2, 8, 9, 5])
    for s in (a, b):  # both admitted before either is computed: no hits
        assert bm.allocate_prefix(s) == 0
        bm.grow(s, len(s))
    for s in (a, b):
        s.num_computed = len(s)
        bm.commit(s)
    assert bm.cached[bm.blocks[a.block_table[0]].key] == a.block_table[0]  # not b's duplicate
    e = seq([1, 2, 8, 9, 0])
    assert bm.allocate_prefix(e) == 4 and e.block_table == [a.block_table[0], b.block_table[1]]
    for s in (a, b, e):
        bm.free(s)
    assert bm.num_free_blocks == 16 and b.block_table == []
    assert len(bm.evictable) == 3  # a's two full blocks and b's second; b's duplicate went to the free list


def test_commit_registers_only_full_computed_blocks_once():
    bm = BlockManager(8, 4)
    s = seq(range(10))
    bm.grow(s, 10)
    s.num_computed = 6  # a prompt chunk: one full block
    bm.commit(s)
    assert s.num_hashed_blocks == 1 and len(bm.cached) == 1
    s.num_computed = 10
    bm.commit(s)
    bm.commit(s)
    assert s.num_hashed_blocks == 2 and len(bm.cached) == 2


def test_prefix_caching_off_never_hits_or_keeps_blocks():
    bm = BlockManager(8, 4, enable_prefix_caching=False)
    a = admit_and_compute(bm, range(10))
    assert a.num_hashed_blocks == 0 and bm.cached == {}
    bm.free(a)
    assert bm.evictable == {} and bm.num_free_blocks == 8
    b = seq(range(10))
    assert bm.allocate_prefix(b) == 0 and b.block_table == [] and bm.prefix_queries == 0


def test_sizes_and_fits_alone():
    bm = BlockManager(4, 16)
    assert [bm.blocks_needed(n) for n in (0, 1, 16, 17)] == [0, 1, 1, 2]
    assert bm.fits_alone(64) and not bm.fits_alone(65)
    with pytest.raises(ValueError):
        BlockManager(0, 16)


def test_slot_pool_hands_out_each_slot_once():
    pool = SlotPool(2)
    a, b = pool.allocate(), pool.allocate()
    assert {a, b} == {0, 1} and pool.allocate() is None and pool.num_free == 0
    pool.free(a)
    assert pool.num_free == 1 and pool.allocate() == a
    pool.free(b)
    with pytest.raises(ValueError):
        pool.free(b)
