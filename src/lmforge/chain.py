"""The whole chain on one model: curate a corpus, train a hybrid (linear + sparse + softmax layers) with NAMO,
quantize it to int4, serve it with the real `lmforge serve`, and score it through the server with lm-eval's own
client model and the Deep-Thinking Ratio; one report with every stage's figure.

Every stage is the project's own command or function on the previous stage's output, so the chain is the test
that the one-model design holds: the same checkpoint format, model class and engine all the way through.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from lmforge.fileio import write_json

SIZES = {  # full (about 9 minutes on 2 cores, within the 15-minute goal) and quick (CI)
    False: {"steps": 300, "d_model": 192, "n_layers": 4, "seq_len": 256, "batch_size": 16, "vocab": 4096,
            "eval_limit": 40, "dtr_prompts": 8, "calib_seqs": 16},
    True: {"steps": 8, "d_model": 32, "n_layers": 4, "seq_len": 64, "batch_size": 4, "vocab": 512,
           "eval_limit": 4, "dtr_prompts": 2, "calib_seqs": 2},
}
MIXERS = "[mamba2s,sparse,mamba2s,softmax]"  # a hybrid: linear, trainable sparse and softmax attention layers
API_KEY = "lmforge-chain"


class Stage:
    """Times one stage and collects its figures into the report."""

    def __init__(self, report: dict, name: str):
        self.report, self.name, self.figures = report, name, {}

    def __enter__(self):
        self.start = time.perf_counter()
        print(f"[chain] {self.name} ...", flush=True)
        return self.figures

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.report["stages"].append({"stage": self.name, "seconds": round(time.perf_counter() - self.start, 1),
                                          **self.figures})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chain(out: str | Path, quick: bool = False, corpus: str | None = None, progress: bool = True) -> dict:
    """Run every stage into `out` (replacing what an earlier chain left there); returns the report, also written
    to out/report.json. The data stage runs the built-in `stdlib` pipeline (stdlib code and pydoc prose), or its
    steps over `corpus` when one is given."""
    from lmforge.config import load_run_config, read_toml
    from lmforge.data.pipeline import pipeline_config_from_dict
    from lmforge.data.run import run_pipeline
    from lmforge.train.trainer import train

    size, out = SIZES[quick], Path(out)
    report: dict = {"quick": quick, "stages": []}
    with Stage(report, f"data: curate {corpus or 'the stdlib + pydoc corpora'}") as fig:
        raw = read_toml("stdlib", "data")
        if corpus is not None:
            raw["sources"] = [{"corpus": corpus, "domain": "code"}]
            raw["steps"] = [s for s in raw["steps"] if not s.get("domains")]
        overrides = [f"output.dir={out / 'data'}", f"output.vocab_size={size['vocab']}"]
        data = run_pipeline(pipeline_config_from_dict(raw, overrides), progress=progress, overwrite=True)
        splits = data.manifest["splits"]
        fig.update(documents=splits["train"]["documents"], train_tokens=splits["train"]["tokens"])
    with Stage(report, "train: hybrid (Mamba-2S, sparse, softmax) with NAMO") as fig:
        cfg = load_run_config("small", [
            f"data.dir={out / 'data'}", f"train.out={out / 'model'}", f"model.mixers={MIXERS}",
            f"model.n_layers={size['n_layers']}", f"model.d_model={size['d_model']}", "optimizer=namo",
            f"train.steps={size['steps']}", f"train.seq_len={size['seq_len']}", f"train.batch_size={size['batch_size']}",
            f"train.eval_every={size['steps']}", "train.compile=false", "model.sparse_block_q=32",
            "model.sparse_block_k=32", "model.linear_chunk_size=32"])
        result = train(cfg, overwrite=True, progress=progress)
        fig.update(steps=result.step, val_bpb=round(result.final_eval["bpb"], 4), tokens_per_s=round(result.tokens_per_second))
    int4 = out / "model-int4"
    with Stage(report, "quantize: GPTQ int4") as fig:
        fig.update(**quantize_int4(out / "model", int4, size["calib_seqs"]))
    with Stage(report, "serve + score through the server: lm-eval and DTR") as fig:
        fig.update(**score_through_server(int4, out, size))
    report["seconds"] = round(sum(s["seconds"] for s in report["stages"]), 1)
    write_json(out / "report.json", report)
    return report


def quantize_int4(model_dir: Path, out: Path, calib_seqs: int) -> dict:
    """GPTQ int4 of the trained model, calibrated on the library's default set; its perplexity before and after."""
    from lmforge.checkpoint import save_checkpoint
    from lmforge.eval.perplexity import evaluation_texts, perplexity
    from lmforge.interop.load import load_model
    from lmforge.quant.calibration import calibration_set
    from lmforge.quant.quantize import QuantSpec, quantize_model

    loaded = load_model(str(model_dir))
    texts = evaluation_texts("pydoc")
    before = perplexity(loaded.model, loaded.tokenizer, texts, 256, 8192)["ppl"]
    calib = calibration_set(loaded.tokenizer, n_seqs=calib_seqs, seq_len=256, log=lambda m: None)
    spec = QuantSpec("gptq", 4, 32)
    stats = quantize_model(loaded.model, spec, calib, progress=False)
    after = perplexity(loaded.model, loaded.tokenizer, texts, 256, 8192)["ppl"]
    save_checkpoint(out, loaded.model, loaded.config, loaded.tokenizer, quantization=spec.to_dict())
    return {"pydoc_ppl_float": round(before, 3), "pydoc_ppl_int4": round(after, 3),
            "quantize_s": round(stats["seconds"], 1)}


def score_through_server(model_dir: Path, out: Path, size: dict) -> dict:
    """Start `lmforge serve` on the int4 model, score it with lm-eval's local-completions and with DTR requests
    through the `openai` client, and stop it."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "lmforge.cli", "serve", str(model_dir), "--port", str(port), "--api-key", API_KEY,
           "--served-model-name", "chain"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"lmforge serve stopped: {server.stderr.read()[-500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("lmforge serve did not answer /health within 2 minutes")
            time.sleep(0.5)
        figures = lm_eval_through(url, out, size["eval_limit"])
        figures.update(dtr_through(url, size["dtr_prompts"]))
        return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def lm_eval_through(url: str, out: Path, limit: int) -> dict:
    """lm-eval's local-completions model against the server on the offline tasks."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lmforge.eval.harness import task_files

    os.environ["OPENAI_API_KEY"] = API_KEY
    info = __import__("httpx").get(f"{url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    max_length = info["data"][0]["max_model_len"]  # local-completions keeps one token of it for generation
    manager = TaskManager(include_path=str(task_files(out / "lm-eval-tasks", n=limit)), verbosity="ERROR")
    args = {"base_url": f"{url}/v1/completions", "model": "chain", "max_length": max_length,
            "tokenizer_backend": "remote", "tokenized_requests": True, "num_concurrent": 4, "max_retries": 1,
            "auth_token": API_KEY}
    results = lm_eval.simple_evaluate(model="local-completions", model_args=args, task_manager=manager, limit=limit,
                                      tasks=["lmforge_arithmetic_mc", "lmforge_pydoc_rolling"], bootstrap_iters=0,
                                      verbosity="ERROR")["results"]
    return {"arithmetic_mc_acc": round(results["lmforge_arithmetic_mc"]["acc,none"], 4),
            "pydoc_bits_per_byte": round(results["lmforge_pydoc_rolling"]["bits_per_byte,none"], 4)}


def dtr_through(url: str, n_prompts: int) -> dict:
    """Mean DTR of sampled completions, asked for through the server's extension field."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    prompts = ["def ", "import ", "class ", "The ", "for ", "if ", "# ", "return "][:n_prompts]
    r = client.completions.create(model="chain", prompt=prompts, max_tokens=32, temperature=0.8, seed=0,
                                  extra_body={"return_dtr": True})
    values = [c.model_extra["dtr"] for c in r.choices]
    return {"mean_dtr": round(sum(values) / len(values), 4), "dtr_tokens": r.usage.completion_tokens}


def format_report(report: dict) -> str:
    """The report as one table: a line per stage with its seconds and figures."""
    lines = []
    for s in report["stages"]:
        figures = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("stage", "seconds"))
        lines.append(f"{s['stage']:52s} {s['seconds']:>7.1f} s   {figures}")
    lines.append(f"{'total':52s} {report['seconds']:>7.1f} s")
    return "\n".join(lines)
