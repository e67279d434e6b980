"""Structured outputs: llguidance against XGrammar on SmolLM2-135M's tokenizer, and what a JSON-schema constraint
costs inside lmforge's engine (lmforge.serve.structured).

Sections (`--sections`, each recorded in benchmarks/results/structured.json as it ends, keeping the others):
  backends  the two grammar libraries used directly, on SmolLM2-135M's tokenizer and 10 JSON schemas of varied
            shape (flat and nested objects, arrays of objects, enums and const, bounded numbers, string patterns
            and formats, anyOf, optional properties, nested arrays, a recursive $ref), each with one valid
            instance. Per schema and library: the milliseconds from a schema never seen to a matcher ready for
            its first mask (median of --compile-repeats; XGrammar with a fresh compiler, its cache off), and
            the microseconds of that first mask (llguidance builds its lexer lazily, so part of its compiling
            shows there); the microseconds one token mask takes, written into a preallocated int32 bitmask,
            over every step of walking the instance's tokens (`json.dumps` text, whose separators ", " and ": "
            both libraries are set to); and the check: whether the library accepted the schema, allowed every
            token of the instance, and allowed the end after it. An "all" row per library: the median over the
            schemas it accepted (with their range), and the one-off time it takes to build its view of the
            tokenizer.
  engine    SmolLM2-135M-Instruct in lmforge's engine, in process, at the engine's default dtype for the CPU:
            16 chat requests for JSON about a topic, sampled at temperature 0.8 with fixed seeds, free (ignoring
            the end token) and constrained by a schema no valid output of which ends within max_tokens (a topic
            and at least 8 facts, each with two strings and two numbers), so both sides generate exactly
            max_tokens tokens (checked). At concurrency 1 (an engine of one sequence, the first request) and 16
            (16 requests submitted at once to an engine of 16): time to first token from submission, decode ms
            per token after the first (from the deltas' timestamps), output tokens/s of the batch, median over
            the requests of a run, then over --repeats interleaved runs (free, constrained, ...: drift in the
            machine's speed hits both). The constrained schema is compiled by a warm-up request first ("seen
            before"); at concurrency 1 a schema with one property renamed every repeat shows what compiling a
            "new schema" adds. The goal: at most 10% more ms per token and 20% more time to first token than
            free generation for a schema seen before.

    python benchmarks/structured.py --sections backends    # about a minute on 2 cores
    python benchmarks/structured.py --sections engine      # about 5 minutes on 2 cores
    python benchmarks/structured.py --quick                # both, fewer schemas, tokens and repeats (under 3 minutes)

Needs `lmforge pull smollm2-135m`; the backends section also needs XGrammar, installed apart as a peer:
`pip install --no-deps xgrammar apache-tvm-ffi` (its own dependency, triton, serves GPUs only).
"""

from __future__ import annotations

from common import THREADS, parser, run_sections  # first: it pins the thread pools before torch is imported

import functools
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import replace
from importlib import metadata

import torch
from engine_runs import cache_memory, timed_batch
from record import spread

from lmforge.interop.chat import render_chat
from lmforge.interop.load import load_model
from lmforge.serve.engine import EngineConfig, LLMEngine, engine_dtype
from lmforge.serve.params import SamplingParams
from lmforge.serve.structured import JSON_OPTIONS, Constraint, first_line
from lmforge.tokenizer import Tokenizer

AREA = "structured"
SMOLLM2 = "smollm2-135m"
TITLES = {
    "backends": "grammar libraries on SmolLM2-135M's tokenizer ({vocab_size} tokens): a new schema's compile time "
                "(median of {compile_repeats}) and one token mask's time over a valid instance, {threads} threads",
    "engine": "SmolLM2-135M-Instruct in the engine: free against JSON-schema-constrained sampling, {max_tokens} tokens "
              "per request at temperature {temperature} ({dtype}, repeats {repeats}, {threads} threads)",
}
XGRAMMAR_OPTIONS = {"any_whitespace": False, "separators": (", ", ": ")}  # the text JSON_OPTIONS gives llguidance


@functools.cache
def smollm2():
    """SmolLM2-135M-Instruct, loaded once for both sections."""
    return load_model(SMOLLM2)


# backends: the libraries themselves


def obj(properties: dict, required: list[str] | None = None) -> dict:
    """An object schema; every property required unless `required` says which."""
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
SCHEMAS = {  # name: (schema, a valid instance with its keys in the schema's order)
    "flat": (
        obj({"name": STRING, "age": INTEGER, "active": BOOLEAN}),
        {"name": "Ada Lovelace", "age": 36, "active": True},
    ),
    "nested objects": (
        obj({"name": STRING,
             "address": obj({"street": STRING, "city": STRING,
                             "postcode": {"type": "string", "pattern": "^[0-9]{5}$"}}),
             "location": obj({"lat": {"type": "number", "minimum": -90, "maximum": 90},
                              "lon": {"type": "number", "minimum": -180, "maximum": 180}})}),
        {"name": "Blue Door Bakery", "address": {"street": "12 Rue Oberkampf", "city": "Paris", "postcode": "75011"},
         "location": {"lat": 48.8647, "lon": 2.3762}},
    ),
    "array of objects": (
        obj({"order_id": {"type": "integer", "minimum": 1},
             "items": {"type": "array", "minItems": 1,
                       "items": obj({"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                                     "quantity": {"type": "integer", "minimum": 1},
                                     "price": {"type": "number", "minimum": 0}})},
             "paid": BOOLEAN}),
        {"order_id": 1042, "items": [{"sku": "TEA-0001", "quantity": 2, "price": 4.5},
                                     {"sku": "CUP-0420", "quantity": 1, "price": 12.0}], "paid": False},
    ),
    "enums": (
        obj({"status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
             "priority": {"enum": [1, 2, 3]},
             "channel": {"const": "web"},
             "carrier": {"type": "string", "enum": ["DHL", "UPS", "La Poste"]}}),
        {"status": "shipped", "priority": 2, "channel": "web", "carrier": "La Poste"},
    ),
    "bounded numbers": (
        obj({"temperature": {"type": "number", "minimum": -50, "maximum": 60},
             "humidity": {"type": "integer", "minimum": 0, "maximum": 100},
             "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
             "count": {"type": "integer", "minimum": 10}}),
        {"temperature": -3.5, "humidity": 87, "ratio": 0.25, "count": 1200},
    ),
    "string patterns": (
        obj({"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
             "phone": {"type": "string", "pattern": "^\\+[0-9]{1,3} [0-9]{6,10}$"},
             "code": {"type": "string", "minLength": 4, "maxLength": 8},
             "email": {"type": "string", "format": "email"}}),
        {"date": "2024-03-17", "phone": "+33 612345678", "code": "X7K2Q", "email": "ada@example.org"},
    ),
    "anyOf": (
        obj({"id": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-f0-9]{8}$"}]},
             "contact": {"anyOf": [obj({"email": STRING}), obj({"phone": STRING, "extension": INTEGER})]},
             "note": {"type": ["string", "null"]}}),
        {"id": "3fa85f64", "contact": {"phone": "+44 2079460000", "extension": 12}, "note": None},
    ),
    "optional properties": (
        obj({"title": STRING, "subtitle": STRING, "pages": {"type": "integer", "minimum": 1}, "isbn": STRING,
             "translated": BOOLEAN}, required=["title"]),
        {"title": "The Analytical Engine", "pages": 320, "translated": True},
    ),
    "nested arrays": (
        obj({"tags": {"type": "array", "items": STRING, "minItems": 1, "maxItems": 5},
             "matrix": {"type": "array", "items": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}},
             "flags": {"type": "array", "items": BOOLEAN}}),
        {"tags": ["linear", "algebra"], "matrix": [[1.0, 0.5], [-0.5, 1.0]], "flags": [True, False, True]},
    ),
    "recursive $ref": (
        {"$defs": {"node": obj({"name": STRING, "size": INTEGER,
                                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                               required=["name", "children"])},
         "$ref": "#/$defs/node"},
        {"name": "src", "children": [{"name": "main.py", "size": 2048, "children": []},
                                     {"name": "lib", "children": [{"name": "util.py", "size": 512, "children": []}]}]},
    ),
}
QUICK_SCHEMAS = ("nested objects", "array of objects", "string patterns", "anyOf")


class LLGuidance:
    """llguidance as lmforge.serve.structured uses it: a matcher compiled per schema, copied per sequence."""

    name = "llguidance"

    def __init__(self, tok: Tokenizer):
        from llguidance import LLTokenizer

        start = time.perf_counter()
        self.tokenizer = LLTokenizer(tok.hf.to_str(), n_vocab=tok.vocab_size, eos_token=tok.eos_id)
        self.setup_ms = 1e3 * (time.perf_counter() - start)

    def compile(self, schema: str):
        """The schema (JSON text) compiled; raises ValueError when refused."""
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer, LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS),
                            log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def matcher(self, compiled):
        """A fresh matcher for one sequence."""
        return compiled.deep_copy()

    def fill(self, matcher, bitmask: torch.Tensor) -> None:
        """Write the allowed next tokens into row 0 of `bitmask`."""
        row = bitmask[0]
        matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())

    def consume(self, matcher, token: int) -> bool:
        return matcher.consume_token(token)


class XGrammar:
    """XGrammar: a grammar compiled per schema by a fresh compiler (cache off), a matcher over it per sequence."""

    name = "xgrammar"

    def __init__(self, tok: Tokenizer):
        import transformers
        import xgrammar

        self.xgr = xgrammar
        start = time.perf_counter()
        hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.hf)
        self.info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=tok.vocab_size, stop_token_ids=[tok.eos_id])
        self.setup_ms = 1e3 * (time.perf_counter() - start)

    def compile(self, schema: str):
        """The schema (JSON text) compiled; raises RuntimeError when refused."""
        compiler = self.xgr.GrammarCompiler(self.info, max_threads=THREADS, cache_enabled=False)
        return compiler.compile_json_schema(schema, **XGRAMMAR_OPTIONS)

    def matcher(self, compiled):
        """A fresh matcher for one sequence."""
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher, bitmask: torch.Tensor) -> None:
        """Write the allowed next tokens into row 0 of `bitmask`."""
        matcher.fill_next_token_bitmask(bitmask)

    def consume(self, matcher, token: int) -> bool:
        return matcher.accept_token(token)


def allowed(bitmask: torch.Tensor, token: int) -> bool:
    """Whether row 0 of `bitmask` allows `token` (bit token % 32 of word token // 32)."""
    return bool(int(bitmask[0, token // 32]) >> (token % 32) & 1)


def walk(lib, compiled, ids: list[int], eos: int, bitmask: torch.Tensor) -> tuple[list[float], bool, bool | None]:
    """Seconds of each mask along the instance's tokens and the end after them; whether each token was allowed
    (then consumed) and whether the end was (None when a token was refused first)."""
    matcher, seconds = lib.matcher(compiled), []
    for token in [*ids, eos]:
        start = time.perf_counter()
        lib.fill(matcher, bitmask)
        seconds.append(time.perf_counter() - start)
        if token == eos:
            return seconds, True, allowed(bitmask, eos)
        if not allowed(bitmask, token) or not lib.consume(matcher, token):
            return seconds, False, None


def measure_schema(lib, schema: dict, ids: list[int], eos: int, bitmask: torch.Tensor, repeats: int,
                   walks: int) -> dict:
    """One library on one schema: whether it accepts it; the time of `repeats` compilations after the first (the
    check), and of the first mask after each (where work a library defers shows); `walks` walks of the instance."""
    text = json.dumps(schema)
    try:
        compiled = lib.compile(text)
    except (ValueError, RuntimeError) as e:
        return {"accepted": False, "error": first_line(str(e))}
    compile_s, first_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        matcher = lib.matcher(lib.compile(text))
        compile_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        lib.fill(matcher, bitmask)
        first_s.append(time.perf_counter() - start)
    mask_s, instance_allowed, end_allowed = [], True, True
    for _ in range(walks):
        seconds, ok, end = walk(lib, compiled, ids, eos, bitmask)
        mask_s += seconds
        instance_allowed, end_allowed = instance_allowed and ok, end_allowed and end
    return {"accepted": True, "instance_allowed": instance_allowed, "end_allowed": end_allowed,
            "compile_ms": [1e3 * s for s in compile_s], "first_mask_us": [1e6 * s for s in first_s],
            "mask_us": [1e6 * s for s in mask_s]}


def backends_section(args) -> tuple[dict, dict, dict]:
    if importlib.util.find_spec("xgrammar") is None:
        sys.exit("the backends section needs XGrammar: pip install --no-deps xgrammar apache-tvm-ffi")
    tok = smollm2().tokenizer
    names = QUICK_SCHEMAS if args.quick else tuple(SCHEMAS)
    repeats, walks = (2, 1) if args.quick else (args.compile_repeats, args.walks)
    bitmask = torch.zeros((1, (tok.vocab_size + 31) // 32), dtype=torch.int32)
    libs = [LLGuidance(tok), XGrammar(tok)]
    rows, raw = [], {}
    for name in names:
        schema, instance = SCHEMAS[name]
        ids = tok.encode(json.dumps(instance))
        raw[name] = {"instance_tokens": len(ids)}
        for lib in libs:
            raw[name][lib.name] = m = measure_schema(lib, schema, ids, tok.eos_id, bitmask, repeats, walks)
            row = {"schema": name, "library": lib.name, "tokens": len(ids), "accepted": m["accepted"]}
            if m["accepted"]:
                row.update(instance_allowed=m["instance_allowed"], end_allowed=m["end_allowed"],
                           compile_ms=spread(m["compile_ms"]),
                           first_mask_us=spread(m["first_mask_us"]), mask_us=spread(m["mask_us"]))
            rows.append(row)
            done = (f"compile {row['compile_ms']['median']:.1f} ms, mask {row['mask_us']['median']:.1f} us, instance "
                    f"{'allowed' if m['instance_allowed'] and m['end_allowed'] else 'REFUSED'}"
                    if m["accepted"] else f"refused the schema: {m['error']}")
            print(f"  {name}, {lib.name}: {done}", flush=True)
    for lib in libs:
        mine = [r for r in rows if r["library"] == lib.name]
        ok = [r for r in mine if r["accepted"]]
        row = {"schema": "all", "library": lib.name, "tokens": sum(r["tokens"] for r in mine),
               "accepted": len(ok) == len(mine), "setup_ms": lib.setup_ms}
        if ok:  # over the schemas it accepted
            row.update(instance_allowed=all(r["instance_allowed"] for r in ok),
                       end_allowed=all(r["end_allowed"] for r in ok),
                       compile_ms=spread([r["compile_ms"]["median"] for r in ok]),
                       first_mask_us=spread([r["first_mask_us"]["median"] for r in ok]),
                       mask_us=spread([r["mask_us"]["median"] for r in ok]))
        rows.append(row)
    settings = {"schemas": list(names), "compile_repeats": repeats, "walks": walks, "vocab_size": tok.vocab_size,
                "llguidance_options": JSON_OPTIONS, "xgrammar_options": XGRAMMAR_OPTIONS}
    setup_ms = {lib.name: lib.setup_ms for lib in libs}
    return {"backends": rows}, {"backends": {"setup_ms": setup_ms, "schemas": raw}}, settings


# engine: what a constraint costs a request


TOPICS = ("volcanoes", "the Roman Empire", "honey bees", "jazz", "the Moon", "chess", "coffee", "glaciers",
          "the printing press", "octopuses", "solar power", "the Silk Road", "tea", "lighthouses", "comets", "bread")
MIN_FACTS = 8  # at least 20 tokens each: no valid output ends within 128 tokens
CONCURRENCY = (1, 16)


def facts_schema(field: str = "facts") -> dict:
    """A topic and at least MIN_FACTS facts (no upper bound) with two string and two number fields each."""
    fact = obj({"title": STRING, "detail": STRING, "year": INTEGER, "score": NUMBER})
    return obj({"topic": STRING, field: {"type": "array", "items": fact, "minItems": MIN_FACTS}})


def json_prompts(tok: Tokenizer) -> list[list[int]]:
    """A chat request for JSON about each topic, in SmolLM2's chat format."""
    ask = "Write a JSON object about {}: the topic and a list of facts, each with a title, a detail, a year and a score."
    return [tok.encode(render_chat(tok, [{"role": "user", "content": ask.format(topic)}])) for topic in TOPICS]


def engine_section(args) -> tuple[dict, dict, dict]:
    loaded = smollm2()
    model, tok = loaded.model, loaded.tokenizer
    dtype = engine_dtype("auto", torch.device("cpu"))
    max_tokens, repeats = (32, 1) if args.quick else (args.max_tokens, args.repeats)
    prompts = json_prompts(tok)
    engines = {c: LLMEngine(model, tok, EngineConfig(
        max_num_seqs=c, dtype=dtype, enable_prefix_caching=False,
        kv_cache_memory=cache_memory(model, dtype, c, max(map(len, prompts)) + max_tokens + 16)))
        for c in CONCURRENCY}
    seen = Constraint.json_schema(facts_schema())
    free = SamplingParams(max_tokens=max_tokens, temperature=args.temperature, ignore_eos=True)
    constrained = SamplingParams(max_tokens=max_tokens, temperature=args.temperature, constraint=seen)
    for c, engine in engines.items():  # warm-up: the model, and the schema compiled ("seen before")
        timed_batch(engine, prompts[:c], replace(free, max_tokens=8))
        timed_batch(engine, prompts[:c], replace(constrained, max_tokens=8))
    modes = {1: ("free", "constrained, schema seen before", "constrained, new schema"),
             16: ("free", "constrained, schema seen before")}
    runs = {(c, mode): [] for c in CONCURRENCY for mode in modes[c]}
    for r in range(repeats):  # interleaved: drift in the machine's speed hits every mode alike
        new = replace(constrained, constraint=Constraint.json_schema(facts_schema(f"facts{r}")))
        params = {"free": free, "constrained, schema seen before": constrained, "constrained, new schema": new}
        for c, engine in engines.items():
            for mode in modes[c]:
                runs[c, mode].append(timed_batch(engine, prompts[:c], params[mode]))
                print(f"  concurrency {c}, {mode}: {runs[c, mode][-1]['tokens_per_s']:.1f} tokens/s", flush=True)
    rows = []
    for (c, mode), done in runs.items():
        rows.append({"concurrency": c, "mode": mode,
                     "tokens_per_s": spread([run["tokens_per_s"] for run in done]),
                     "ttft_ms": spread([statistics.median(run["ttft_ms"]) for run in done]),
                     "ms_per_token": spread([statistics.median(run["ms_per_token"]) for run in done]),
                     "full_length": all(t == max_tokens for run in done for t in run["tokens"])})
    for row in rows:
        base = next(r for r in rows if r["concurrency"] == row["concurrency"] and r["mode"] == "free")
        seen_before = row["mode"] == "constrained, schema seen before"
        ratio = {key: row[key]["median"] / base[key]["median"] for key in ("ms_per_token", "ttft_ms")}
        row["token_goal"] = ratio["ms_per_token"] <= 1.10 if seen_before else None
        row["ttft_goal"] = ratio["ttft_ms"] <= 1.20 if seen_before else None
    settings = {"model": SMOLLM2, "dtype": str(dtype).removeprefix("torch."), "max_tokens": max_tokens,
                "temperature": args.temperature, "repeats": repeats, "concurrency": list(CONCURRENCY),
                "prompt_tokens": [len(p) for p in prompts], "schema": facts_schema(),
                "new_schema": "the same with 'facts' renamed 'facts<repeat>'"}
    raw = {f"concurrency {c}, {mode}": done for (c, mode), done in runs.items()}
    return {"engine": rows}, {"engine": raw}, settings


def grammar_versions() -> dict:
    """Versions of the grammar libraries (None when absent), recorded beside lmforge's."""
    versions = {}
    for name in ("llguidance", "xgrammar", "apache-tvm-ffi"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


SECTIONS = {"backends": backends_section, "engine": engine_section}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--compile-repeats", type=int, default=5, help="timed compilations of each schema (backends)")
    p.add_argument("--walks", type=int, default=3, help="walks of each instance, a mask timed at every step (backends)")
    p.add_argument("--max-tokens", type=int, default=128,
                   help="tokens per request (engine; under 160, the constrained schema's shortest valid output)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (engine)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of every mode (engine)")
    run_sections(SECTIONS, p.parse_args(), AREA, TITLES, grammar_versions())


if __name__ == "__main__":
    main()
