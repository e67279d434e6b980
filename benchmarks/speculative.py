"""Speculative decoding: single-stream decode speed of SmolLM2-135M-Instruct with and without drafts, on code
editing (where the output copies the prompt) and on free prose.

Section `batch1` (recorded in benchmarks/results/speculative.json): one request at a time (an engine of one
sequence; in bf16, `lmforge serve`'s default on CPUs that run it, and in fp32), greedy, up to --max-tokens new tokens, on two workloads of chat requests:
  code editing  "rename this parameter" in a Python function of the standard library (its source, 10-50 lines:
                the reply copies most of it);
  free prose    a short story on a topic (little to copy).
Methods: no speculation; prompt lookup (`--speculative ngram`, k drafts, suffixes of 2-4 tokens); and a draft
model sharing the tokenizer: SmolLM2's own first --draft-layers layers with its final norm and head (a
layer-truncated self-draft, untrained). Per workload and method: decode tokens/s (tokens after the first over
the time after the first, all requests of a round together; median over --repeats interleaved rounds), the
speed-up over no speculation, the share of drafts accepted, and the share of requests whose output is the
same, token for token, as without speculation (greedy, so it should be all of them in fp32; in bf16 a
near-tie that the verify forward, a product over several rows, rounds differently from a one-row decode shows
here). Goal: at least 1.5x on code editing.

    python benchmarks/speculative.py            # about 40 minutes on 2 cores (`lmforge pull smollm2-135m` first)
    python benchmarks/speculative.py --quick    # 2 prompts per workload, 32 tokens, one round
"""

from __future__ import annotations

from common import parser, run_sections  # first: it pins the thread pools before torch is imported

import copy
import importlib
import inspect
import statistics
from dataclasses import replace

import torch
from engine_runs import cache_memory, timed_batch
from record import spread

from lmforge.interop.chat import render_chat
from lmforge.interop.load import load_model
from lmforge.model.transformer import Transformer
from lmforge.serve.engine import EngineConfig, LLMEngine, engine_dtype
from lmforge.serve.params import SamplingParams
from lmforge.serve.speculative import SpeculativeConfig

AREA = "speculative"
SMOLLM2 = "smollm2-135m"
TITLES = {"batch1": "SmolLM2-135M-Instruct decoding one request at a time, with and without speculation "
                    "(greedy, up to {max_tokens} tokens, {rounds} rounds, {threads} threads)"}
FUNCTIONS = ("textwrap.dedent", "shlex.quote", "string.capwords", "html.escape", "statistics.median", "heapq.nsmallest",
             "colorsys.rgb_to_hls", "posixpath.relpath", "posixpath.commonpath", "difflib.get_close_matches",
             "statistics.mode", "textwrap.indent", "shlex.join", "statistics.variance", "colorsys.rgb_to_hsv",
             "posixpath.expanduser")
TOPICS = ("a lighthouse keeper", "a lost umbrella", "the first snow of winter", "a robot learning to paint",
          "a village bakery", "an old map", "a night train", "a garden on a roof", "a chess tournament",
          "a whale and a boat", "a broken clock", "a market at dawn", "a kite festival", "a desert well",
          "a letter never sent", "a bridge in fog")


def edit_prompts(count: int) -> tuple[list[str], list[str]]:
    """Chat requests to rename the first parameter of standard-library functions (those whose source this Python
    has, 10-50 lines), and the functions' names."""
    asks, names = [], []
    for dotted in FUNCTIONS:
        module, name = dotted.rsplit(".", 1)
        fn = getattr(importlib.import_module(module), name)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        if not 10 <= len(source.splitlines()) <= 50:
            continue
        first = next(iter(inspect.signature(fn).parameters))
        asks.append(f"Rename the parameter `{first}` to `value` in this Python function, everywhere it is used. "
                    f"Reply with the whole function and nothing else.\n\n```python\n{source}```")
        names.append(dotted)
        if len(asks) == count:
            break
    return asks, names


def truncated(model: Transformer, layers: int) -> Transformer:
    """The model's first `layers` layers with its embedding, final norm and head: a draft sharing its tokenizer."""
    cfg = replace(model.cfg, n_layers=layers)
    draft = Transformer(cfg)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("layers.") or int(k.split(".")[1]) < layers}
    draft.load_state_dict(state)
    return draft.to(model.embed.weight.dtype)


def decode_rate(run: dict) -> float:
    """Tokens after each request's first over the time after it, all requests together."""
    tokens = sum(n - 1 for n in run["tokens"])
    seconds = sum(ms * (n - 1) for ms, n in zip(run["ms_per_token"], run["tokens"])) / 1e3
    return tokens / seconds


def batch1_section(args) -> tuple[dict, dict, dict]:
    loaded = load_model(SMOLLM2)
    tok = loaded.tokenizer
    count, max_tokens, rounds = (2, 32, 1) if args.quick else (args.prompts, args.max_tokens, args.repeats)
    edits, functions = edit_prompts(count)
    workloads = {"code editing": edits, "free prose": [f"Write a short story about {t}." for t in TOPICS[:count]]}
    prompts = {w: [tok.encode(render_chat(tok, [{"role": "user", "content": text}])) for text in texts]
               for w, texts in workloads.items()}
    longest = max(len(p) for ps in prompts.values() for p in ps) + max_tokens + args.k + 16
    methods = {
        "none": (None, None),
        f"prompt lookup, k={args.k}": (SpeculativeConfig(num_tokens=args.k, min_ngram=2, max_ngram=4), None),
        f"draft: first {args.draft_layers} layers, k={args.k}": (
            SpeculativeConfig(method="draft", num_tokens=args.k), truncated(loaded.model, args.draft_layers)),
    }
    engines = {}
    for precision in args.precisions.split(","):
        dtype = engine_dtype(precision, torch.device("cpu"))
        for name, (spec, draft) in methods.items():  # a draft model's entries take their share of the memory too
            memory = sum(cache_memory(m, dtype, 1, longest) for m in (loaded.model, draft) if m is not None)
            engines[str(dtype).removeprefix("torch."), name] = LLMEngine(
                copy.deepcopy(loaded.model), tok, EngineConfig(max_num_seqs=1, dtype=dtype, kv_cache_memory=memory,
                                                               enable_prefix_caching=False, speculative=spec),
                copy.deepcopy(draft))
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    for engine in engines.values():  # warm-up
        timed_batch(engine, [prompts["code editing"][0]], replace(params, max_tokens=8))
    runs = {(d, w, m): [] for d in dict.fromkeys(d for d, _ in engines) for w in workloads for m in methods}
    for r in range(rounds):  # interleaved: drift in the machine's speed hits every method alike
        for (dtype, method), engine in engines.items():
            for workload, batch in prompts.items():
                before = engine.draft_tokens, engine.accepted_tokens
                done = [timed_batch(engine, [p], params) for p in batch]
                run = {"tokens": [d["tokens"][0] for d in done], "ms_per_token": [d["ms_per_token"][0] for d in done],
                       "token_ids": [d["token_ids"][0] for d in done],
                       "drafted": engine.draft_tokens - before[0], "accepted": engine.accepted_tokens - before[1]}
                run["tokens_per_s"] = decode_rate(run)
                runs[dtype, workload, method].append(run)
                print(f"  round {r + 1}, {dtype}, {workload}, {method}: {run['tokens_per_s']:.1f} tokens/s, "
                      f"{run['accepted']}/{run['drafted']} drafts accepted", flush=True)
    rows = []
    for (dtype, workload, method), done in runs.items():
        plain = runs[dtype, workload, "none"][0]["token_ids"]
        drafted = sum(run["drafted"] for run in done)
        rows.append({"dtype": dtype, "workload": workload, "method": method, "requests": len(prompts[workload]),
                     "tokens": statistics.mean(sum(run["tokens"]) for run in done),
                     "tokens_per_s": spread([run["tokens_per_s"] for run in done]),
                     "accepted": sum(run["accepted"] for run in done) / drafted if drafted else None,
                     "same_output": statistics.mean(a == b for run in done for a, b in zip(run["token_ids"], plain))})
    settings = {"model": SMOLLM2, "dtypes": sorted({d for d, _ in engines}), "max_tokens": max_tokens,
                "rounds": rounds, "k": args.k, "draft_layers": args.draft_layers, "functions": functions,
                "topics": list(TOPICS[:count]), "prompt_tokens": {w: [len(p) for p in ps] for w, ps in prompts.items()}}
    raw = {f"{d} / {w} / {m}": [{k: v for k, v in run.items() if k != "token_ids"} for run in done]
           for (d, w, m), done in runs.items()}
    return {"batch1": rows}, {"batch1": raw}, settings


SECTIONS = {"batch1": batch1_section}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--prompts", type=int, default=6, help="requests per workload")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per request at most")
    p.add_argument("--k", type=int, default=4, help="drafts per step")
    p.add_argument("--draft-layers", type=int, default=6, help="layers of SmolLM2 the self-draft keeps (of 30)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    p.add_argument("--precisions", default="bf16,fp32",
                   help="comma-separated engine dtypes (bf16 is `lmforge serve`'s default where the CPU runs it)")
    run_sections(SECTIONS, p.parse_args(), AREA, TITLES)


if __name__ == "__main__":
    main()
