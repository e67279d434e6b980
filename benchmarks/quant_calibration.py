"""GPTQ and AWQ out of domain: perplexity of SmolLM2-135M quantized to int4 g128 by every method, scored on
text from other sources than the calibration text, over several calibration seeds; and the wall time of
GPTQ and AWQ at their defaults.

Sources of evaluation text (none of them calibration text):
  selection (settings are chosen on these): prose from /usr/share/doc (README files), code from the
    numpy package's source;
  report (the figures quoted): prose from the man pages (section 1, roff requests and font escapes
    removed), code from pip's source; and the standard library's validation split (what
    `lmforge eval perplexity` scores by default: in domain for calibration sets holding stdlib code).
Calibration sets: "mixed" (the default: stdlib code outside the evaluation split, and pydoc prose, half
each) and "stdlib" (that code alone, the former default's domain); the ablations vary one GPTQ setting at a
time on the mixed set (damping, act-order, the bf16 calibration forward); the tokens section calibrates GPTQ
on 128 and on 32 windows.

    .venv/bin/python benchmarks/quant_calibration.py --sections defaults     # float, RTN, HQQ, GPTQ, AWQ (mixed)
    .venv/bin/python benchmarks/quant_calibration.py --sections stdlib       # GPTQ, AWQ calibrated on stdlib code
    .venv/bin/python benchmarks/quant_calibration.py --sections ablations    # GPTQ: damping, act-order, fp32 forward
    .venv/bin/python benchmarks/quant_calibration.py --sections tokens       # GPTQ: 128 and 32 calibration sequences
    .venv/bin/python benchmarks/quant_calibration.py --sections awq_search   # AWQ: scale search on 16 and 4 sequences
    .venv/bin/python benchmarks/quant_calibration.py --quick                 # defaults and one ablation, small
Each section is recorded beside the others' tables (a run replaces only the tables it measures).
"""

from __future__ import annotations

import copy
import gzip
import random
import re
import sys
import sysconfig
import time
from pathlib import Path

from common import THREADS, parser, print_table
from record import over_seeds, record, spread
from render import cells
from tables import TABLES
from tables.quant_calibration import REPORT, SELECTION

import torch
from lmforge.device import resolve_precision
from lmforge.eval.perplexity import evaluation_texts, perplexity
from lmforge.interop.load import load_model
from lmforge.quant import DEFAULT_AWQ_SEARCH_SEQS, DEFAULT_CALIBRATION, DEFAULT_WINDOW_LEN, DEFAULT_WINDOWS
from lmforge.quant.calibration import calibration_set, sample_texts
from lmforge.quant.quantize import QuantSpec, quantize_model

AREA = "quant-calibration"
MODEL = "smollm2-135m"
ABLATIONS = {  # GPTQ variants, each one change from the defaults
    "damp 0.1": {"damp": 0.1},
    "no act-order": {"act_order": False},
    "fp32 calibration forward": {"calib_precision": "fp32"},
}
SECTIONS = ("defaults", "stdlib", "ablations", "tokens", "awq_search")
AWQ_SEARCH_SEQS = (DEFAULT_AWQ_SEARCH_SEQS, 4)  # sequences AWQ's scale search judges on, in the awq_search section
TOKEN_WINDOWS = {False: (128, 32), True: (4, 1)}  # calibration windows of the tokens section (full, --quick)
TITLES = {
    "perplexity": "int4 g128 perplexity on text from other sources than the calibration ({eval_tokens} tokens each, "
                  "{seeds} calibration seeds, {calib_seqs} x {calib_len} calibration tokens)",
    "time": "GPTQ and AWQ at their defaults: wall seconds to quantize SmolLM2-135M, {threads} threads",
    "perplexity_stdlib": "the same, GPTQ and AWQ calibrated on stdlib code alone (the former default's domain)",
    "ablation": "GPTQ variants on the selection sources (mixed calibration, {seeds} seeds)",
    "tokens": "GPTQ calibrated on more and fewer tokens, selection sources (mixed calibration, {seeds} seeds)",
    "awq_search": "AWQ's scale search judged on more and fewer sequences, selection sources (mixed calibration, "
                  "{seeds} seeds)",
}
ROFF_REQUEST = re.compile(r"^[.'].*$", re.MULTILINE)
ROFF_ESCAPE = re.compile(r"\\f[BIRP0-9]|\\f\(..|\\[-&e]|\\\(..|\\s[-+]?\d")
BLANK_RUN = re.compile(r"\n{3,}")


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def read_sample(paths: list[Path], read, n_chars: int) -> list[str]:
    """Texts of a fixed random sample of the files (seed 0), read until they hold `n_chars` characters."""
    paths = sorted(paths)
    random.Random(0).shuffle(paths)
    texts, held = [], 0
    for path in paths:
        if held >= n_chars:
            break
        text = read(path)
        if len(text) > 500:
            texts.append(text)
            held += len(text)
    return texts


def read_plain(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def read_man(path: Path) -> str:
    """A man page's text with roff requests and font escapes removed."""
    raw = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    return BLANK_RUN.sub("\n\n", ROFF_ESCAPE.sub("", ROFF_REQUEST.sub("", raw)))


def python_sources(package: str) -> list[Path]:
    """The .py files of an installed package, tests left out."""
    return [p for p in (site_packages() / package).rglob("*.py") if not {"tests", "test", "testing"}.intersection(p.parts)]


SOURCES = {  # name -> (the text's files, how to read one); stdlib-val is the evaluation split itself
    "doc-prose": (lambda: [p for p in Path("/usr/share/doc").rglob("README*")
                           if p.is_file() and p.suffix in ("", ".txt", ".md")], read_plain),
    "numpy-code": (lambda: python_sources("numpy"), read_plain),
    "man-prose": (lambda: list(Path("/usr/share/man/man1").glob("*.1.gz")), read_man),
    "pip-code": (lambda: python_sources("pip"), read_plain),
}


def eval_texts(names: tuple[str, ...], n_tokens: int) -> dict[str, list[str]]:
    """A fixed sample of each source's documents, a few times the text the scored tokens need."""
    texts = {}
    for name in names:
        if name == "stdlib-val":
            texts[name] = sample_texts(evaluation_texts("stdlib"), n_tokens * 12, seed=0)
            continue
        paths, read = SOURCES[name]
        texts[name] = read_sample(paths(), read, n_tokens * 12)
        if not texts[name]:
            sys.exit(f"evaluation source {name!r} has no text on this machine")
    return texts


def scores(model, tokenizer, texts: dict[str, list[str]], n_tokens: int, seq_len: int) -> dict[str, float]:
    """Perplexity of the model on the first `n_tokens` tokens of each source."""
    return {name: perplexity(model, tokenizer, t, seq_len, n_tokens)["ppl"] for name, t in texts.items()}


def quantized(base, spec: QuantSpec, calib) -> tuple[object, float]:
    """A quantized copy of the float model and the wall seconds quantization took."""
    model = copy.deepcopy(base)
    start = time.perf_counter()
    quantize_model(model, spec, calib, progress=False)
    return model, time.perf_counter() - start


def ppl_row(runs: list[dict], rtn: dict, **labels) -> dict:
    """A table row: each source's perplexity over seeds and its ratio to RTN's on the same text."""
    row = dict(labels)
    for source in rtn:
        row[source] = over_seeds([r[source] for r in runs])
        row[f"{source} vs rtn"] = over_seeds([r[source] / rtn[source] for r in runs])
    return row


def run_calibrated(args, loaded, texts, raw: dict, calib_name: str) -> dict:
    """GPTQ and AWQ at their defaults calibrated on `calib_name` over seeds, scored on every source and timed;
    with the default set also float, RTN and HQQ (no calibration), and the time table."""
    base, tok = loaded.model, loaded.tokenizer
    default = calib_name == DEFAULT_CALIBRATION
    rtn = scores(quantized(base, QuantSpec("rtn"), None)[0], tok, texts, args.eval_tokens, args.seq_len)
    per_row: dict[tuple[str, str], list[dict]] = {}
    if default:
        per_row[("float", "-")] = [scores(base, tok, texts, args.eval_tokens, args.seq_len)]
        per_row[("rtn", "-")] = [rtn]
        per_row[("hqq", "-")] = [scores(quantized(base, QuantSpec("hqq"), None)[0], tok, texts, args.eval_tokens, args.seq_len)]
    seconds: dict[str, list[float]] = {"gptq": [], "awq": []}
    for seed in range(args.seeds):
        calib = calibration_set(tok, calib_name, args.calib_seqs, args.calib_len, seed)
        for method in seconds:
            model, secs = quantized(base, QuantSpec(method), calib)
            seconds[method].append(secs)
            per_row.setdefault((method, calib_name), []).append(scores(model, tok, texts, args.eval_tokens, args.seq_len))
            print(f"{method} {calib_name} seed {seed}: {secs:.0f} s, {per_row[(method, calib_name)][-1]}", flush=True)
    raw[f"perplexity {calib_name}"] = {f"{m} {c}": runs for (m, c), runs in per_row.items()}
    raw[f"seconds {calib_name}"] = seconds
    rows = [ppl_row(runs, rtn, method=m, calibration=c) for (m, c), runs in per_row.items()]
    if not default:
        return {f"perplexity_{calib_name}": rows}
    time_rows = [{"method": m, "calibration_tokens": args.calib_seqs * args.calib_len, "seconds": spread(s)}
                 for m, s in seconds.items()]
    return {"perplexity": rows, "time": time_rows}


def run_variants(args, loaded, texts, raw: dict, table: str) -> dict:
    """One method with one setting changed from the defaults, mixed calibration, over seeds, on the selection
    sources: GPTQ's ablations ("ablation"), GPTQ with each of TOKEN_WINDOWS' calibration sizes ("tokens"), AWQ's
    scale search on each of AWQ_SEARCH_SEQS' numbers of sequences ("awq_search")."""
    base, tok = loaded.model, loaded.tokenizer
    if table == "tokens":
        variants = {f"{n} x {args.calib_len}": ("gptq", {}, n) for n in TOKEN_WINDOWS[args.quick]}
    elif table == "awq_search":
        variants = {f"{n} sequences": ("awq", {"awq_search_seqs": n}, args.calib_seqs) for n in AWQ_SEARCH_SEQS}
    else:
        variants = {name: ("gptq", change, args.calib_seqs) for name, change in ABLATIONS.items()}
        if resolve_precision("auto", torch.device("cpu")) == "fp32":  # the defaults already calibrate in fp32 here
            del variants["fp32 calibration forward"]
        if args.quick:  # one variant: each GPTQ run costs its column loop, whatever the calibration size
            variants = {"no act-order": variants["no act-order"]}
    rtn = scores(quantized(base, QuantSpec("rtn"), None)[0], tok, texts, args.eval_tokens, args.seq_len)
    raw[f"{table} rtn"] = rtn
    rows = []
    for name, (method, change, n_seqs) in variants.items():
        runs, secs = [], []
        for seed in range(args.seeds):
            calib = calibration_set(tok, DEFAULT_CALIBRATION, n_seqs, args.calib_len, seed)
            model, s = quantized(base, QuantSpec(method, **change), calib)
            runs.append(scores(model, tok, texts, args.eval_tokens, args.seq_len))
            secs.append(s)
            print(f"{method} {name} seed {seed}: {s:.0f} s, {runs[-1]}", flush=True)
        raw.setdefault(table, {})[name] = {"perplexity": runs, "seconds": secs}
        rows.append({**ppl_row(runs, rtn, variant=name), "seconds": spread(secs)})
    return {table: rows}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--seeds", type=int, default=3, help="calibration seeds per setting")
    args = p.parse_args()
    args.calib_seqs, args.calib_len = (4, 128) if args.quick else (DEFAULT_WINDOWS, DEFAULT_WINDOW_LEN)
    args.eval_tokens, args.seq_len = (512, 256) if args.quick else (8192, 512)
    args.seeds = 1 if args.quick else args.seeds
    sections = ["defaults", "ablations"] if args.quick else args.sections
    loaded = load_model(MODEL)
    settings = {"model": MODEL, "grid": "int4 g128", "threads": THREADS, "seeds": args.seeds,
                "calib_seqs": args.calib_seqs, "calib_len": args.calib_len, "eval_tokens": args.eval_tokens,
                "seq_len": args.seq_len, "selection_sources": SELECTION, "report_sources": REPORT, "sections": sections}
    raw, summary = {}, {}
    if "defaults" in sections:
        summary.update(run_calibrated(args, loaded, eval_texts(SELECTION + REPORT, args.eval_tokens), raw, DEFAULT_CALIBRATION))
    if "stdlib" in sections:
        summary.update(run_calibrated(args, loaded, eval_texts(SELECTION + REPORT, args.eval_tokens), raw, "stdlib"))
    for section, table in (("ablations", "ablation"), ("tokens", "tokens"), ("awq_search", "awq_search")):
        if section in sections:
            summary.update(run_variants(args, loaded, eval_texts(SELECTION, args.eval_tokens), raw, table))
    path = record(AREA, settings, raw, summary, args.out, args.quick, keep_others=True)
    for name, rows in summary.items():
        spec = TABLES[AREA][name]
        print(f"\n{TITLES[name].format(**settings)}")
        print_table(cells(spec, rows), [(c.header, c.header, "s") for c in spec])
    print(f"(recorded in {path})")


if __name__ == "__main__":
    main()
