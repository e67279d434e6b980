"""Continuous batching: which sequences run in the next step, and how many of their tokens.

The engine's loop, around this scheduler:

    batch = scheduler.schedule()           # [(seq, num_tokens)]
    ... build the step, run the model ...
    ready = scheduler.computed(batch)      # sequences whose every token is now computed
    ... sample a token for each of `ready`, append it; scheduler.finish(seq, reason) on a stop ...
    ... n > 1: once the prompt is computed, scheduler.fork(parent, child) for each other sample ...

Policies (each one is tested in tests/serve/test_scheduler.py):
- Budget: a step holds at most `max_num_batched_tokens` new tokens and `max_num_seqs`
  running sequences. Running sequences go first, oldest first, each with
  min(its uncomputed tokens, budget left): one token for a decoding sequence, the next
  chunk of a prompt being prefilled in pieces (chunked prefill). What is left of the
  budget admits waiting sequences in arrival order, so decode tokens and prefill chunks
  share every step, and a long prompt never stalls the decoding sequences.
- Admission: a state slot is taken if the model keeps per-sequence state, then the prefix
  cache is looked up (cached tokens are not computed), then blocks for the first chunk.
  Admission stops at the first sequence that does not get its slot or blocks (no
  overtaking: a long prompt is not starved by short ones behind it).
- Preemption by recomputation: when a running sequence cannot get the blocks for its
  tokens, the newest running sequence gives its blocks and slot back and returns to the
  FRONT of the waiting queue with nothing computed (its prompt and output are prefilled
  again, through the prefix cache where its blocks are still cached), until the sequence
  fits or is itself the newest and is preempted. A step that preempted admits nobody, so
  a preempted sequence does not at once take back what was just freed.
- A sequence longer than the whole cache can never run: the engine should refuse such a
  prompt up front (`BlockManager.fits_alone`); one the scheduler meets anyway (its output
  outgrew the cache) is finished with reason "length" and handed over by `take_truncated`.
- Finished and aborted sequences give their blocks and slot back at once.
- A model with per-sequence state (a `SlotPool`: linear mixers) needs prefix caching
  off: a cached prefix would skip tokens whose recurrent state a fresh slot lacks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lmforge.config import bounded, check_ranges
from lmforge.errors import GenerationError
from lmforge.serve.block_manager import BlockManager, SlotPool
from lmforge.serve.sequence import Sequence, Status


@dataclass
class SchedulerConfig:
    """Limits of one engine step and of the waiting queue."""

    max_num_seqs: int = bounded(64, 1)  # sequences running at once (seats)
    max_num_batched_tokens: int = bounded(512, 1)  # new tokens per step (decode tokens + prefill chunks)
    max_waiting: int = bounded(1024, 1)  # sequences queued before `add` refuses more

    def __post_init__(self) -> None:
        check_ranges(self)


class Scheduler:
    """Waiting queue and running list of the engine; see the module docstring for the policies."""

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager, slots: SlotPool | None = None):
        if slots is not None and block_manager.enable_prefix_caching:
            raise ValueError("prefix caching must be off for a model with per-sequence state slots")
        self.config, self.block_manager, self.slots = config, block_manager, slots
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest admission first
        self.num_preemptions = 0
        self._truncated: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        """Whether any sequence is waiting or running."""
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> bool:
        """Queue a new sequence; False (nothing queued) when `max_waiting` sequences already wait:
        the caller refuses the request (the server answers 503). GenerationError for an empty
        sequence (it has no token to compute)."""
        if not seq.token_ids:
            raise GenerationError("the prompt is empty: give at least one token")
        if len(self.waiting) >= self.config.max_waiting:
            return False
        seq.status = Status.WAITING
        self.waiting.append(seq)
        return True

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark seq finished ("stop", "length", "abort") and give its blocks and slot back now."""
        if seq.finished:
            return
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status, seq.finish_reason = Status.FINISHED, reason

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every unfinished sequence of the request with reason "abort"; returns them."""
        hit = [s for s in (*self.running, *self.waiting) if s.request_id == request_id]
        for seq in hit:
            self.finish(seq, "abort")
        return hit

    def take_truncated(self) -> list[Sequence]:
        """Sequences `schedule` finished with reason "length" because they no longer fit the whole
        cache, since the last call; the engine reports them like any finished sequence."""
        out, self._truncated = self._truncated, []
        return out

    def schedule(self) -> list[tuple[Sequence, int]]:
        """One step: (sequence, number of its next uncomputed tokens to run) pairs, running
        sequences first. Every sequence in it has blocks covering those tokens."""
        bm, budget, batch = self.block_manager, self.config.max_num_batched_tokens, []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed, budget)
            if n == 0:  # its next token has not been appended yet
                i += 1
                continue
            if not bm.fits_alone(len(seq)):
                self._truncate(seq)
                continue
            while not bm.can_grow(seq, seq.num_computed + n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.grow(seq, seq.num_computed + n)
                batch.append((seq, n))
                budget -= n
                i += 1
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not bm.fits_alone(len(seq)):
                self._truncate(seq)
                continue
            n = self._admit(seq, budget)
            if n is None:
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            batch.append((seq, n))
            budget -= n
        return batch

    def computed(self, batch: list[tuple[Sequence, int]]) -> list[Sequence]:
        """Record that the model ran `batch` (what `schedule` returned): advance each sequence's
        num_computed and register its newly full blocks in the prefix cache. Returns the
        sequences whose every token is now computed, in batch order: those to sample a next
        token for (a prompt chunk short of the end samples nothing). A sequence finished
        while the step ran (aborted) is skipped."""
        ready = []
        for seq, n in batch:
            if seq.finished:
                continue
            seq.num_computed += n
            self.block_manager.commit(seq)
            if seq.num_uncomputed == 0:
                ready.append(seq)
        return ready

    def fork(self, parent: Sequence, child: Sequence) -> list[tuple[int, int]]:
        """Start child, another sample (n > 1) of parent's prompt, once that prompt is computed:
        it shares the parent's blocks and runs beside it. Returns the (src, dst) cache blocks
        to copy; the engine also copies the parent's state slot into child.slot. Without a
        seat, a block or a slot for it, the child waits at the front of the queue instead and
        is prefilled itself (from the prefix cache where it can)."""
        bm = self.block_manager
        if len(self.running) < self.config.max_num_seqs and bm.can_fork(parent):
            slot = None
            if self.slots is None or (slot := self.slots.allocate()) is not None:
                copies = bm.fork(parent, child)
                child.slot, child.status = slot, Status.RUNNING
                self.running.append(child)
                return copies
        child.status = Status.WAITING
        self.waiting.appendleft(child)
        return []

    def _admit(self, seq: Sequence, budget: int) -> int | None:
        """Give a waiting sequence its cached prefix, a slot and the blocks for its first chunk;
        the chunk's length, or None (nothing taken) when it does not fit now."""
        if self.slots is not None:
            seq.slot = self.slots.allocate()
            if seq.slot is None:
                return None
        bm = self.block_manager
        if seq.params.prompt_logprobs is None:  # prompt log-probabilities need every prompt position computed
            bm.allocate_prefix(seq)
        n = min(seq.num_uncomputed, budget)
        if not bm.can_grow(seq, seq.num_computed + n):
            bm.cancel(seq)
            self._free_slot(seq)
            return None
        bm.grow(seq, seq.num_computed + n)
        return n

    def _preempt(self, seq: Sequence) -> None:
        """Send a running sequence back to the front of the queue, to be computed again."""
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _truncate(self, seq: Sequence) -> None:
        self.finish(seq, "length")
        self._truncated.append(seq)

    def _release(self, seq: Sequence) -> None:
        """Give seq's blocks and slot back."""
        self.block_manager.free(seq)
        self._free_slot(seq)

    def _free_slot(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.slots.free(seq.slot)
            seq.slot = None
