"""The training loop: data, model, optimizer, schedule, bf16 autocast, evaluation, checkpoints, exact resume,
in one process or on data-parallel ranks under torchrun.

Resuming from a checkpoint continues bit for bit: the model, optimizer and schedule state
are restored, and the data order is a pure function of (seed, sample index).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lmforge.checkpoint import (
    RUN_CHECKPOINT,
    WEIGHTS,
    load_training_state,
    load_weights,
    read_run_config,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from lmforge.config import RunConfig, to_dict
from lmforge.data.chat import ChatData, ChatLoader, eval_batches
from lmforge.data.loader import WindowLoader, eval_windows
from lmforge.data.prepare import PreparedData, prepare_or_load
from lmforge.device import autocast, measure_peak_flops, resolve_device, resolve_precision
from lmforge.errors import CheckpointError, ConfigError
from lmforge.eval.perplexity import summarize_nll, target_nll_sums, window_batches
from lmforge.data.readers import corpus_paths
from lmforge.fileio import recover_dir, refuse_overlap
from lmforge.interop.load import load_model
from lmforge.model.transformer import (
    Transformer,
    count_parameters,
    flops_per_token,
    recompute_activations,
    sequence_parallel_problem,
    sequence_sharded,
)
from lmforge.optim import build_optimizer
from lmforge.train.metrics import MetricsLog, plot_loss
from lmforge.train.distributed import World, check_same_config, close_world, init_world, sequence_shard
from lmforge.train.schedule import lr_multiplier
from lmforge.train.sharding import full_optimizer_state, full_weights, keep_own_rows, shard_model


@dataclass
class TrainResult:
    """What a training run produced."""

    out: Path
    step: int
    params: int
    tokens: int
    train_seconds: float
    tokens_per_second: float
    mfu: float
    final_eval: dict | None
    interrupted: bool


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class RunClock:
    """Training seconds of a run (evaluations and checkpoints excluded) and, when the run has a time budget,
    whether it is spent. Under torchrun every rank keeps the ranks' mean, so all take the same learning rate
    and stop at the same step."""

    def __init__(self, budget: float, world: World):
        self.budget = budget
        self.world = world
        self.seconds = 0.0
        self._bar_seconds = 0.0

    def advance(self, step_seconds: float, bar: tqdm) -> None:
        """Count one step's seconds and move the progress bar (in seconds under a budget, else in steps)."""
        self.seconds += step_seconds
        if self.budget:
            self.seconds = self.world.mean(self.seconds)
            shown = min(self.seconds, self.budget)
            bar.update(shown - self._bar_seconds)
            self._bar_seconds = shown
        else:
            bar.update(1)

    def spent(self) -> bool:
        return bool(self.budget) and self.seconds >= self.budget

    def finished(self, step: int, steps: int) -> bool:
        """Whether the run has done its work: all its steps, or its whole time budget."""
        return step >= steps or self.spent()

    def describe(self, steps: int) -> str:
        return f"{self.budget:g} s of training (at most {steps} steps)" if self.budget else f"{steps} steps"

    def progress_bar(self, step: int, stop_at: int, disable: bool) -> tqdm:
        if self.budget:
            self._bar_seconds = min(self.seconds, self.budget)
            return tqdm(total=self.budget, initial=self._bar_seconds, desc="train", unit="s", disable=disable,
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        return tqdm(total=stop_at, initial=step, desc="train", unit="step", disable=disable, dynamic_ncols=True)


def _check_resumable(saved: RunConfig, cfg: RunConfig, ckpt_dir: Path) -> None:
    for section in ("model", "data"):
        derived = {f.name for f in dataclasses.fields(getattr(cfg, section)) if f.default is None}
        a, b = to_dict(getattr(saved, section)), to_dict(getattr(cfg, section))
        # a key the user sets comes before one derived from it (d_ff follows d_model)
        diff = sorted((k for k in a if a[k] != b.get(k) and k != "dir"), key=lambda k: (k in derived, k))
        if diff:
            raise CheckpointError(
                f"cannot resume from {ckpt_dir}: {section}.{diff[0]} is {b[diff[0]]!r} now but was {a[diff[0]]!r}; "
                "use the same config or start a new run"
            )


def next_token_loss(model: Transformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default training objective: mean next-token cross-entropy."""
    return model(x, targets=y)


def train(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    until_step: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    init_from: Path | None = None,
    objective: Callable[[Transformer, torch.Tensor, torch.Tensor], torch.Tensor] = next_token_loss,
) -> TrainResult:
    """Train the model described by `cfg`, writing checkpoints and metrics under `cfg.train.out`.

    `init_from` starts from the weights of a checkpoint whose tensors fit the model (a dense
    checkpoint fits a model with sparse mixers); `objective(model, inputs, targets)` replaces
    the next-token loss (distillation passes a teacher-matching loss). Under torchrun every
    rank runs this with the same config: data-parallel groups each take their rows of every
    global batch (DDP), context-parallel ranks within a group their tokens of those rows
    (Ulysses), so the run equals one process training on the whole batch, and rank 0 alone
    writes the data, logs, metrics and checkpoints (which resume on any number of ranks).
    """
    world, device = init_world(resolve_device(cfg.train.device))
    try:
        return _train(cfg, world, device, resume, overwrite, until_step, progress, log, init_from, objective)
    finally:
        close_world(world)


def _train(cfg: RunConfig, world: World, device: torch.device, resume: bool, overwrite: bool, until_step: int | None,
           progress: bool, log: Callable[[str], None], init_from: Path | None, objective) -> TrainResult:
    tc = cfg.train
    out = Path(tc.out)
    layout = cfg.parallel.resolve(world.size)
    check_same_config(world, to_dict(cfg))
    if tc.batch_size % layout.dp:
        raise ConfigError(f"train.batch_size={tc.batch_size} does not split evenly over {layout.dp} data-parallel "
                          f"ranks; make it a multiple of {layout.dp}")
    if tc.seq_len % layout.cp:
        raise ConfigError(f"train.seq_len={tc.seq_len} does not split evenly over {layout.cp} context-parallel "
                          f"ranks; make it a multiple of {layout.cp}")
    if world.distributed and objective is not next_token_loss:
        raise ConfigError("this objective (distillation) runs in one process; launch it without torchrun")
    log = log if world.is_main else (lambda message: None)
    progress = progress and world.is_main
    if world.is_main:
        recover_dir(out / RUN_CHECKPOINT)
    world.barrier()
    ckpt_dir = out / RUN_CHECKPOINT
    if ckpt_dir.exists() and not (resume or overwrite):
        raise CheckpointError(f"{out} already holds a checkpoint; pass --resume to continue it or --overwrite to start over")
    if resume and not ckpt_dir.exists():
        raise CheckpointError(f"nothing to resume: {ckpt_dir} does not exist")
    refuse_overlap(out, corpus_paths(cfg.data.corpus))

    torch.manual_seed(tc.seed)
    precision = resolve_precision(tc.precision, device)
    start = load_model(tc.init_from) if tc.init_from else None
    if start is not None:
        cfg = dataclasses.replace(cfg, model=start.model.cfg)
    if cfg.data.format == "chat":
        if start is None:
            raise ConfigError("data.format='chat' needs train.init_from: a model whose tokenizer has a chat template")
        if layout.cp > 1:
            raise ConfigError("chat data trains without context parallelism; set parallel.cp=1")
        tokenizer = start.tokenizer
        chat = ChatData.load(cfg.data.corpus, tokenizer)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)
        loader = ChatLoader(chat.train, tc.seq_len, tc.batch_size, tc.seed, cfg.data.packing, pad)
        held_out = eval_batches(chat.val, tc.seq_len, tc.batch_size, pad)
        log(f"chat data: {len(chat.train)} training and {len(chat.val)} held-out conversations, packing {cfg.data.packing}")
    else:
        data = _prepared_data(cfg, world, progress, rebuild=overwrite and not cfg.data.dir)
        tokenizer = data.tokenizer
        vocab = tokenizer.vocab_size
        if cfg.model.vocab_size is None:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
        elif cfg.model.vocab_size != vocab:
            raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the tokenizer in {data.dir} has {vocab} tokens; "
                              "unset model.vocab_size")
        loader = WindowLoader(data.shard("train").tokens, tc.seq_len, tc.batch_size, tc.seed)
        val_tokens = data.shard("val").tokens
    if tc.seq_len > cfg.model.max_seq_len:
        raise ConfigError(f"train.seq_len={tc.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}")

    model = Transformer(cfg.model)
    if resume:
        _check_resumable(read_run_config(ckpt_dir), cfg, ckpt_dir)
        load_weights(model, ckpt_dir / WEIGHTS)
    elif start is not None:
        model.load_state_dict(start.model.state_dict())
    elif init_from is not None:
        load_weights(model, resolve_checkpoint_dir(init_from) / WEIGHTS)
    del start
    model = model.to(device)
    recompute_activations(model, tc.recompute)
    problem = sequence_parallel_problem(model, layout.cp, layout.stage_heads) if layout.cp > 1 else None
    if problem:
        raise ConfigError(f"parallel.cp={layout.cp} ({layout.cp_attention}): {problem}")
    shard = sequence_shard(world, layout.cp, layout.stage_heads)
    sharded = layout.fsdp and world.distributed
    if sharded:
        shard_model(model, device)
    optimizer = build_optimizer(model, tc)
    clock = RunClock(tc.time_budget, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, tc, clock.seconds))
    step, tokens_seen = 0, 0
    if resume:
        state, trainer_state = load_training_state(ckpt_dir)
        difference = optimizer.layout_difference(state["optimizer"])
        if difference:
            raise CheckpointError(f"cannot resume from {ckpt_dir}: {difference}; resume with the optimizer it was trained "
                                  "with (train.optimizer), or start a new run with --overwrite")
        optimizer.load_state_dict(state["optimizer"])
        if sharded:
            keep_own_rows(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, tokens_seen, clock.seconds = trainer_state["step"], trainer_state["tokens"], trainer_state["train_seconds"]
        if clock.finished(step, tc.steps):
            raise CheckpointError(f"the run in {out} already finished its {clock.describe(tc.steps)}; nothing to "
                                  "resume (raise train.steps or train.time_budget to train further)")
        log(f"resumed from {ckpt_dir} at step {step}")

    token_bytes = tokenizer.token_byte_lengths()
    replicated = DistributedDataParallel(model) if world.distributed and not sharded else model
    forward = torch.compile(replicated) if tc.compile else replicated
    amp = lambda: autocast(device, precision)  # noqa: E731
    params = count_parameters(model)
    flops_token = flops_per_token(model, tc.seq_len)
    peak = measure_peak_flops(device, precision) * world.size
    tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=step if resume else None) if world.is_main else None
    stop_at = min(tc.steps, until_step) if until_step else tc.steps
    ranks = f", {layout.dp} data-parallel x {layout.cp} context-parallel ranks" if world.distributed else ""
    ranks += ", parameters sharded (FSDP)" if sharded else ""
    log(
        f"model {params / 1e6:.2f}M params ({count_parameters(model, False) / 1e6:.2f}M without embedding), "
        f"{precision} on {device}{ranks}, {tokens_per_step} tokens/step, {clock.describe(tc.steps)}"
    )

    def write_metrics(record: dict) -> None:
        if metrics is not None:
            metrics.write(record)

    def checkpoint(final_eval: dict | None = None) -> None:
        # under FSDP every rank takes part in gathering the whole tensors, which rank 0 writes
        weights = full_weights(model) if sharded else None
        optimizer_state = full_optimizer_state(optimizer) if sharded else optimizer.state_dict()
        if world.is_main:
            training_state = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                              "torch_rng": torch.get_rng_state()}
            trainer_state = {"step": step, "tokens": tokens_seen, "train_seconds": clock.seconds, "precision": precision}
            if final_eval:
                trainer_state["final_eval"] = final_eval
            save_checkpoint(ckpt_dir, model, cfg, tokenizer, training_state, trainer_state, weights=weights)
        world.barrier()

    def evaluation(max_tokens: int = 0) -> dict:
        if cfg.data.format == "chat":  # the held-out conversations' assistant tokens (max_tokens: all of them)
            batches = held_out[world.rank :: world.size]
        else:
            windows = eval_windows(val_tokens, tc.seq_len, max_tokens)[world.rank :: world.size]
            batches = [(b[:, :-1], b[:, 1:]) for b in window_batches(windows, tc.batch_size)]
        calls = world.max(len(batches)) if sharded else 0  # equal calls under FSDP
        sums = target_nll_sums(model, batches, token_bytes, amp, calls)
        return summarize_nll(*world.sum(list(sums)))

    def periodic_eval() -> dict:
        result = evaluation(tc.eval_tokens)
        write_metrics({"step": step, "tokens": tokens_seen, "val_loss": result["loss"], "val_ppl": result["ppl"], "val_bpb": result["bpb"]})
        log(f"step {step}: val loss {result['loss']:.4f}, ppl {result['ppl']:.2f}, {result['bpb']:.4f} bits/byte")
        return result

    model.train()
    start_step = step
    window_loss, window_steps, window_opt, window_start = 0.0, 0, 0.0, time.perf_counter()
    interrupted = False
    bar = clock.progress_bar(step, stop_at, disable=not progress)
    with _StopRequest() as stop:
        while step < stop_at and not clock.spent():
            t0 = time.perf_counter()
            loss_sum = 0.0
            for micro in range(tc.grad_accum):
                x, y = loader.batch(step * tc.grad_accum + micro, world.rank // layout.cp, layout.dp)
                if shard:
                    x, y = (t.chunk(shard.size, dim=1)[shard.rank] for t in (x, y))
                last = micro == tc.grad_accum - 1
                # DDP syncs gradients on the last micro-batch only; FSDP reduce-scatters each into the shards
                sync = contextlib.nullcontext() if last or replicated is model else replicated.no_sync()
                with sync, sequence_sharded(model, shard) if shard else contextlib.nullcontext():
                    try:
                        with amp():
                            loss = objective(forward, x.to(device), y.to(device)) / tc.grad_accum
                    except RuntimeError as e:  # compilation fails on the first call (e.g. no C++ compiler)
                        if forward is replicated or step > start_step:
                            raise
                        log(f"torch.compile failed ({str(e).splitlines()[0][:160]}); continuing without it")
                        forward = replicated
                        with amp():
                            loss = objective(forward, x.to(device), y.to(device)) / tc.grad_accum
                    loss.backward()
                loss_sum += loss.item()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            t_opt = time.perf_counter()
            optimizer.step()
            window_opt += time.perf_counter() - t_opt
            clock.advance(time.perf_counter() - t0, bar)  # before the schedule, which may run on time
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step
            window_loss += loss_sum
            window_steps += 1
            if step % tc.log_every == 0 or step == stop_at:
                elapsed = time.perf_counter() - window_start
                tok_s = window_steps * tokens_per_step / elapsed
                mfu = tok_s * flops_token / peak
                record = {"step": step, "tokens": tokens_seen, "loss": world.mean(window_loss) / window_steps,
                          "lr": scheduler.get_last_lr()[0], "tokens_per_second": tok_s, "mfu": mfu,
                          "optimizer_share": window_opt / elapsed}
                write_metrics(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.1%}")
                window_loss, window_steps, window_opt, window_start = 0.0, 0, 0.0, time.perf_counter()
            if tc.eval_every and step % tc.eval_every == 0:
                periodic_eval()
                window_start = time.perf_counter()
            if tc.ckpt_every and step % tc.ckpt_every == 0 and step < stop_at:
                checkpoint()
                window_start = time.perf_counter()
            if world.any(stop.requested):
                interrupted = True
                break
    bar.close()

    final_eval = None
    if clock.finished(step, tc.steps):
        final_eval = evaluation()
        write_metrics({"step": step, "tokens": tokens_seen, "val_loss": final_eval["loss"], "val_ppl": final_eval["ppl"],
                       "val_bpb": final_eval["bpb"], "final": True})
        log(f"final: val loss {final_eval['loss']:.4f}, ppl {final_eval['ppl']:.2f}, {final_eval['bpb']:.4f} bits/byte on {final_eval['tokens']} tokens")
    checkpoint(final_eval)
    if world.is_main:
        plot_loss(out / "metrics.jsonl", out / "loss.png")
    if interrupted:
        log(f"stopped at step {step}; checkpoint saved in {ckpt_dir}; continue with --resume")
    train_seconds = clock.seconds
    tok_s = tokens_seen / train_seconds if train_seconds else 0.0
    return TrainResult(out, step, params, tokens_seen, train_seconds, tok_s, tok_s * flops_token / peak, final_eval, interrupted)


def _prepared_data(cfg: RunConfig, world: World, progress: bool, rebuild: bool) -> PreparedData:
    """The run's token shards: rank 0 prepares them (or checks the ones there), then the other ranks load them."""
    if world.is_main:
        data = prepare_or_load(cfg.data, cfg.data_dir(), progress, rebuild=rebuild)
    world.barrier()
    if not world.is_main:
        data = prepare_or_load(cfg.data, cfg.data_dir(), progress=False)
    return data
