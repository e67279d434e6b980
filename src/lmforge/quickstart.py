"""`lmforge quickstart`: prepare the stdlib corpus, train the small default model, report and sample.

The report puts the model's validation bits per byte beside gzip -9 and xz -9 measured on
the same validation text in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lmforge.checkpoint import load_checkpoint
from lmforge.config import load_run_config
from lmforge.data.prepare import prepare_or_load
from lmforge.eval.compression import gzip_bpb, xz_bpb
from lmforge.fileio import write_json
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams
from lmforge.train.trainer import train

SAMPLE_PROMPT = "def read_config(path):\n"


def run_quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None, progress: bool = True, log=print) -> dict:
    """Run the whole quickstart and return the report (also written to `out/report.json`)."""
    started = time.perf_counter()
    out = Path(out)
    cfg = load_run_config("quickstart", [f"train.out={out}", *(overrides or [])])
    log(f"preparing the stdlib corpus ({cfg.data.vocab_size}-token BPE) in {cfg.data_dir()}")
    data = prepare_or_load(cfg.data, cfg.data_dir(), progress, rebuild=not cfg.data.dir)
    prepare_seconds = time.perf_counter() - started
    split = data.manifest["splits"]
    log(f"  train {split['train']['tokens']:,} tokens, val {split['val']['tokens']:,} tokens ({prepare_seconds:.0f} s)")
    result = train(cfg, overwrite=True, progress=progress)

    val_tokens = np.asarray(data.shard("val").tokens)
    val_text = data.tokenizer.decode_bytes(val_tokens[val_tokens != data.tokenizer.eos_id].tolist())
    ckpt = load_checkpoint(result.out)
    prompt = ckpt.tokenizer.encode(SAMPLE_PROMPT)
    params = SamplingParams(max_tokens=96, temperature=0.7, top_p=0.95, seed=cfg.train.seed)
    llm = LLM(ckpt.model, ckpt.tokenizer, EngineConfig(max_num_seqs=1))
    sample = SAMPLE_PROMPT + llm.generate([prompt], params)[0].outputs[0].text
    report = {
        "val_bpb": result.final_eval["bpb"],
        "gzip_bpb": gzip_bpb(val_text),
        "xz_bpb": xz_bpb(val_text),
        "val_loss": result.final_eval["loss"],
        "val_ppl": result.final_eval["ppl"],
        "val_bytes": len(val_text),
        "params": result.params,
        "steps": result.step,
        "train_tokens": result.tokens,
        "tokens_per_second": result.tokens_per_second,
        "mfu": result.mfu,
        "prepare_seconds": prepare_seconds,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "sample": sample,
    }
    write_json(out / "report.json", report)
    log(format_report(report))
    return report


def format_report(r: dict) -> str:
    """The report as a short human-readable table."""
    beaten = [name for name in ("gzip", "xz") if r["val_bpb"] < r[f"{name}_bpb"]]
    verdict = f"the model beats {' and '.join(beaten)}" if beaten else "the model does not beat gzip yet"
    lines = [
        "",
        "quickstart report",
        f"  validation bits/byte   {r['val_bpb']:.3f}   (gzip -9 {r['gzip_bpb']:.3f}, xz -9 {r['xz_bpb']:.3f}; {verdict})",
        f"  validation perplexity  {r['val_ppl']:.2f} on {r['val_bytes']:,} bytes",
        f"  model                  {r['params'] / 1e6:.2f}M parameters, {r['steps']} steps, {r['train_tokens']:,} tokens",
        f"  speed                  {r['tokens_per_second']:,.0f} tokens/s, MFU {r['mfu']:.1%}",
        f"  wall time              {r['wall_seconds']:.0f} s (prepare {r['prepare_seconds']:.0f} s, train {r['train_seconds']:.0f} s)",
        "  sample:",
        *("    " + line for line in r["sample"].splitlines()),
    ]
    return "\n".join(lines)
