"""Scheduler: budgets and seats, chunked prefill, mixed steps, preemption, abort, and a simulated engine run."""

import random

import pytest

from lmforge.errors import ConfigError, GenerationError
from lmforge.serve import block_manager as bm_module
from lmforge.serve.block_manager import BlockManager, SlotPool
from lmforge.serve.params import SamplingParams
from lmforge.serve.scheduler import Scheduler, SchedulerConfig
from lmforge.serve.sequence import Sequence, Status


def seq(n, request_id="", first=0):
    return Sequence(list(range(first, first + n)), SamplingParams(), request_id=request_id)


def make(num_blocks=64, block_size=4, slots=None, caching=True, **config):
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=caching)
    return Scheduler(SchedulerConfig(**config), bm, slots), bm


def step(sched, token=7):
    """Schedule, "run the model" and append a token to every sequence that gets one; returns the batch."""
    batch = sched.schedule()
    for s in sched.computed(batch):
        s.append(token)
    return [(s, n) for s, n in batch]


def test_config_ranges_and_queue_limit():
    with pytest.raises(ConfigError, match="max_num_seqs"):
        SchedulerConfig(max_num_seqs=0)
    sched, _ = make(max_waiting=2)
    assert sched.add(seq(3)) and sched.add(seq(3))
    assert not sched.add(seq(3)) and sched.num_waiting == 2
    with pytest.raises(GenerationError, match="empty"):
        make()[0].add(Sequence([], SamplingParams()))


def test_seat_limit():
    sched, _ = make(max_num_seqs=2, max_num_batched_tokens=100)
    seqs = [seq(3, first=10 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    assert step(sched) == [(seqs[0], 3), (seqs[1], 3)]
    assert sched.num_running == 2 and sched.num_waiting == 1 and seqs[2].status is Status.WAITING
    assert step(sched) == [(seqs[0], 1), (seqs[1], 1)]  # decoding; still no seat
    sched.finish(seqs[0], "stop")
    assert step(sched) == [(seqs[1], 1), (seqs[2], 3)]


def test_token_budget_chunks_the_last_admitted_prompt():
    sched, _ = make(max_num_batched_tokens=8)
    seqs = [seq(5, first=10 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    assert step(sched) == [(seqs[0], 5), (seqs[1], 3)]  # budget spent: the third waits
    assert seqs[2].status is Status.WAITING
    assert step(sched) == [(seqs[0], 1), (seqs[1], 2), (seqs[2], 5)]


def test_chunked_prefill_over_several_steps_samples_only_at_the_end():
    sched, bm = make(max_num_batched_tokens=8)
    s = seq(20)
    sched.add(s)
    for done in (8, 16):
        batch = sched.schedule()
        assert batch == [(s, 8)] and len(s.block_table) == done // 4
        assert sched.computed(batch) == [] and s.num_computed == done
    batch = sched.schedule()
    assert batch == [(s, 4)] and sched.computed(batch) == [s]
    assert bm.num_free_blocks == 64 - 5


def test_decode_and_prefill_share_a_step():
    sched, _ = make(max_num_batched_tokens=6)
    a, b = seq(4), seq(10, first=100)
    sched.add(a)
    step(sched)  # a's prompt
    sched.add(b)
    assert step(sched) == [(a, 1), (b, 5)]
    assert step(sched) == [(a, 1), (b, 5)]
    assert step(sched) == [(a, 1), (b, 1)]


def test_prefix_cache_hit_skips_the_cached_tokens():
    sched, bm = make(max_num_batched_tokens=64)
    a, b = seq(13), seq(13)
    sched.add(a)
    step(sched)
    sched.add(b)
    assert step(sched) == [(a, 1), (b, 1)]  # 12 of b's 13 tokens were cached
    assert b.num_cached == 12 and b.block_table[:3] == a.block_table[:3]
    assert (bm.prefix_queries, bm.prefix_hits) == (26, 12)


def test_preemption_takes_the_newest_which_comes_back_first_and_recomputes():
    sched, bm = make(num_blocks=6, block_size=2, caching=False, max_num_batched_tokens=64)
    a, b, c = seq(4), seq(3, first=10), seq(3, first=20)
    for s in (a, b, c):
        sched.add(s)
    step(sched)  # 6 blocks used; a: 5 tokens, b and c: 4
    assert bm.num_free_blocks == 0
    late = seq(2, first=30)
    sched.add(late)
    assert step(sched) == [(a, 1), (b, 1)]  # a needs a third block: c, the newest, gives its two back
    assert c.status is Status.WAITING and c.num_computed == 0 and c.block_table == [] and sched.num_preemptions == 1
    assert list(sched.waiting) == [c, late]
    sched.finish(a, "stop")
    sched.finish(b, "stop")
    assert step(sched) == [(c, 4), (late, 2)]  # c first, computing its prompt and output again
    assert c.status is Status.RUNNING and c.output == [7, 7]


def test_a_sequence_that_is_the_newest_preempts_itself():
    sched, bm = make(num_blocks=4, block_size=2, caching=False, max_num_batched_tokens=64)
    a, b = seq(3), seq(4, first=10)
    sched.add(a)
    sched.add(b)
    step(sched)  # a: 4 tokens (fits its 2 blocks), b: 5 tokens (needs a third)
    assert step(sched) == [(a, 1)]
    assert b.status is Status.WAITING and sched.waiting[0] is b and bm.num_free_blocks == 2


def test_a_step_that_preempted_admits_nobody():
    sched, bm = make(num_blocks=5, block_size=2, caching=False, max_num_batched_tokens=4)
    a, c = seq(1), seq(10, first=10)
    sched.add(a)
    step(sched)
    sched.add(c)
    assert step(sched) == [(a, 1), (c, 3)]
    assert step(sched) == [(a, 1), (c, 3)]  # all 5 blocks used
    assert step(sched) == [(a, 1)]  # c's next chunk needs 2 more blocks: c, the newest, preempts itself
    assert c.status is Status.WAITING  # though a 3-token chunk of it would fit the freed blocks now
    assert step(sched) == [(a, 1), (c, 3)]


def test_preempted_sequence_finds_its_own_blocks_in_the_prefix_cache():
    sched, bm = make(num_blocks=6, block_size=2, max_num_batched_tokens=64)
    a, b = seq(6), seq(4, first=10)
    sched.add(a)
    sched.add(b)
    step(sched)  # a: 7 tokens in 3 blocks, b: 5 tokens in 2, one block free
    assert step(sched) == [(a, 1)]  # a takes the free block; b needs a third: b, the newest, preempts itself
    sched.finish(a, "stop")
    assert step(sched) == [(b, 1)]  # b's two full blocks were still cached: only its last token is computed
    assert b.num_cached == 4


def test_abort_frees_blocks_and_slots_at_once():
    slots = SlotPool(4)
    sched, bm = make(slots=slots, caching=False, max_num_batched_tokens=8)
    r1, r2 = seq(6, "r1"), seq(6, "r1", first=50)
    other = seq(3, "r2", first=90)
    for s in (r1, r2, other):
        sched.add(s)
    step(sched)  # r1 running, r2 running (2 of 6 tokens), other waiting
    assert r1.slot is not None and r2.slot is not None and other.status is Status.WAITING
    assert sched.abort("r1") == [r1, r2]
    assert all(s.finished and s.finish_reason == "abort" and s.block_table == [] and s.slot is None for s in (r1, r2))
    assert bm.num_free_blocks == 64 and slots.num_free == 4 and sched.num_running == 0
    assert sched.abort("r1") == []
    assert step(sched) == [(other, 3)]


def test_a_sequence_finished_while_its_step_ran_is_not_committed():
    sched, bm = make()
    a, b = seq(9), seq(9, first=20)
    sched.add(a)
    sched.add(b)
    batch = sched.schedule()
    sched.abort(a.request_id)  # both have request id ""
    assert sched.computed(batch) == [] and bm.num_free_blocks == 64 and bm.cached == {}


def test_finished_sequences_are_never_scheduled():
    sched, _ = make()
    a, b = seq(3, "a"), seq(3, "b")
    sched.add(a)
    sched.add(b)
    sched.finish(b, "stop")
    assert step(sched) == [(a, 3)]
    sched.finish(a, "length")
    assert sched.schedule() == [] and not sched.has_unfinished() and a.finish_reason == "length"


def test_a_sequence_waiting_for_its_sampled_token_is_left_out():
    sched, _ = make()
    a, b = seq(3), seq(3, first=10)
    sched.add(a)
    sched.add(b)
    batch = sched.schedule()
    assert sched.computed(batch) == [a, b]
    b.append(7)  # a's token is not appended yet
    assert sched.schedule() == [(b, 1)]


def test_state_slots_limit_admission():
    slots = SlotPool(1)
    sched, _ = make(slots=slots, caching=False)
    a, b = seq(3), seq(3, first=10)
    sched.add(a)
    sched.add(b)
    assert step(sched) == [(a, 3)] and a.slot == 0 and b.status is Status.WAITING
    sched.finish(a, "stop")
    assert step(sched) == [(b, 3)] and b.slot == 0
    with pytest.raises(ValueError, match="prefix caching"):
        Scheduler(SchedulerConfig(), BlockManager(4, 4), SlotPool(1))


def test_a_sequence_longer_than_the_whole_cache_is_detectable_and_finished():
    sched, bm = make(num_blocks=2, block_size=2)
    assert not bm.fits_alone(5) and bm.fits_alone(4)
    too_long, ok = seq(5), seq(2, first=10)
    sched.add(too_long)
    sched.add(ok)
    assert step(sched) == [(ok, 2)]
    assert sched.take_truncated() == [too_long] and too_long.finish_reason == "length"
    step(sched)
    step(sched)  # ok's 4 tokens fill the cache; its fifth cannot be computed
    assert ok.num_computed == 4 and len(ok) == 5 and not ok.finished
    assert sched.schedule() == []
    assert ok.finished and ok.finish_reason == "length" and sched.take_truncated() == [ok]
    assert bm.num_free_blocks == 2 and sched.take_truncated() == []


def test_fork_shares_the_prompt_or_falls_back_to_the_queue():
    sched, bm = make(max_num_seqs=2, max_num_batched_tokens=64)
    parent = seq(6)
    sched.add(parent)
    sched.computed(sched.schedule())
    child = seq(6)
    copies = sched.fork(parent, child)
    assert copies == [(parent.block_table[1], child.block_table[1])] and child.block_table[0] == parent.block_table[0]
    assert child.status is Status.RUNNING and child.num_computed == 6
    for s in (parent, child):
        s.append(7)
    extra = seq(6)  # no seat left: it waits at the front and is prefilled itself
    extra.append(7)
    assert sched.fork(parent, extra) == [] and sched.waiting[0] is extra and extra.num_computed == 0
    assert step(sched) == [(parent, 1), (child, 1)]
    sched.finish(parent, "stop")
    assert step(sched) == [(child, 1), (extra, 3)]  # extra's first 4 tokens came from the prefix cache


@pytest.mark.parametrize("variant", ["prefix_cache", "colliding_hash", "state_slots"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_run_with_random_requests_and_aborts_leaks_nothing(seed, variant, monkeypatch):
    """A fake model: the "KV" it writes at position p mixes the token with the value it reads back at
    p - 1 through the block table (so it depends on the whole prefix, as a transformer's does), and
    the state slot folds in every token. Before a sequence gets its next token, its blocks and slot
    must hold exactly what its own tokens give, so a wrongly shared block, a missed copy, a false
    prefix hit (with a 3-valued hash that ignores the prefix, lookups collide all the time) or a
    stale slot is caught."""
    if variant == "colliding_hash":
        monkeypatch.setattr(bm_module, "block_hash", lambda prev_key, token_ids: hash(token_ids) % 3)
    use_slots = variant == "state_slots"
    rng = random.Random(seed)
    block_size, num_blocks, num_slots = 4, 12, 5
    vocab = 2 if variant == "colliding_hash" else 5  # few distinct blocks: equal tokens after other prefixes
    slots = SlotPool(num_slots) if use_slots else None
    sched, bm = make(num_blocks, block_size, slots, caching=not use_slots,
                     max_num_seqs=6, max_num_batched_tokens=rng.choice([5, 16]), max_waiting=12)
    cache = [[None] * block_size for _ in range(num_blocks)]
    state = [None] * num_slots
    systems = [[rng.randrange(vocab) for _ in range(rng.randrange(1, 12))] for _ in range(3)]
    requests, n_added = {}, 0

    def mix(value, token):
        return (value * 31 + token + 1) % 1_000_003

    def where(s, p):
        return s.block_table[p // block_size], p % block_size

    def read(s, p):
        b, i = where(s, p)
        return cache[b][i]

    def check_memory(s):
        """The blocks (and the state slot) of a fully computed sequence hold what its tokens give."""
        value, want = 0, []
        for t in s.token_ids:
            value = mix(value, t)
            want.append(value)
        assert [read(s, p) for p in range(len(s))] == want
        if use_slots:
            assert state[s.slot] == value

    def next_token(s):
        return (sum(s.token_ids) * 7 + len(s) + 3 * s.index) % vocab

    def emit(s, token):
        s.append(token)
        if s.num_output_tokens >= s.params.max_tokens:
            sched.finish(s, "length")

    for _ in range(3000):
        if n_added < 120 and rng.random() < 0.5:
            prompt = rng.choice(systems) + [rng.randrange(vocab) for _ in range(rng.randrange(0, 20))]
            params = SamplingParams(n=rng.choice([1, 1, 3]), max_tokens=rng.randrange(1, 10))
            rid = f"r{n_added}"
            n_added += 1
            s = Sequence(prompt, params, request_id=rid)
            if sched.add(s):
                requests[rid] = [s]
        if requests and rng.random() < 0.05:
            sched.abort(rng.choice(sorted(requests)))
        batch = sched.schedule()
        assert batch or not sched.has_unfinished()
        assert sum(n for _, n in batch) <= sched.config.max_num_batched_tokens
        assert len(sched.running) <= sched.config.max_num_seqs
        for s, n in batch:
            assert s.status is Status.RUNNING and n >= 1 and len(s.block_table) * block_size >= s.num_computed + n
            if use_slots and s.num_computed == 0:
                state[s.slot] = 0
            for p in range(s.num_computed, s.num_computed + n):
                b, i = where(s, p)
                cache[b][i] = mix(read(s, p - 1) if p else 0, s.token_ids[p])
                if use_slots:
                    state[s.slot] = mix(state[s.slot], s.token_ids[p])
        if batch and rng.random() < 0.05:  # a client disconnects while the step runs
            sched.abort(rng.choice(batch)[0].request_id)
        assert sum(b.ref_count for b in bm.blocks) == sum(len(s.block_table) for s in sched.running)
        for s in sched.computed(batch):
            if s.num_output_tokens == 0 and s.params.n > 1 and s.index == 0:
                for k in range(1, s.params.n):
                    child = Sequence(s.token_ids.copy(), s.params, request_id=s.request_id, index=k)
                    for src, dst in sched.fork(s, child):
                        cache[dst] = cache[src].copy()
                    if child.slot is not None:
                        state[child.slot] = state[s.slot]
                    if child.status is Status.RUNNING:
                        check_memory(child)
                    emit(child, next_token(child))
                    requests[s.request_id].append(child)
            check_memory(s)
            emit(s, next_token(s))
        if n_added >= 120 and not sched.has_unfinished():
            break
    assert not sched.has_unfinished() and n_added == 120
    assert bm.num_free_blocks == num_blocks and all(b.ref_count == 0 for b in bm.blocks)
    assert len(bm.free_ids) + len(bm.evictable) == num_blocks
    assert slots is None or slots.num_free == num_slots
    finished = [s for seqs in requests.values() for s in seqs]
    assert all(s.finished for s in finished) and {s.finish_reason for s in finished} <= {"length", "abort"}
    assert sched.num_preemptions > 0  # the budget is tight enough to exercise preemption
