"""llama.cpp's own tools as peers: llama-quantize, llama-imatrix, llama-perplexity, llama-bench and llama-server,
run as subprocesses with the benchmarks' thread count, and the parsing of what they print.

The tools are built from the llama.cpp source the llama-cpp-python sdist vendors (see MEASUREMENTS.md);
scripts take their directory from --llama-bin or the environment variable LLAMA_CPP_BIN.

    llama = LlamaCpp(bin_dir, tools=("llama-quantize", "llama-bench"))
    llama.quantize(f16, out, "Q4_1")
    tg = llama.bench(out, 0, 128, repeats=5)["tg"]
"""

from __future__ import annotations

from common import THREADS  # first: it pins the thread pools before torch is imported

import json
import os
import re
import subprocess
import sys
from collections import Counter
from functools import cached_property
from pathlib import Path

DEFAULT_BIN = "/work/peers/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"
TOOLS = ("llama-bench", "llama-server", "llama-quantize", "llama-imatrix", "llama-perplexity")
BUILD_HINT = (
    "build llama.cpp's tools from the llama-cpp-python sdist's vendor/llama.cpp (cmake --build build --target "
    "llama-server llama-quantize llama-imatrix llama-perplexity llama-bench) and pass --llama-bin DIR"
)


def default_bin() -> str:
    """The tools' directory: $LLAMA_CPP_BIN, else where MEASUREMENTS.md's build puts them."""
    return os.environ.get("LLAMA_CPP_BIN", DEFAULT_BIN)


def add_bin_argument(p) -> None:
    """The --llama-bin flag every script driving llama.cpp takes."""
    p.add_argument("--llama-bin", default=default_bin(),
                   help="directory of llama.cpp's tools (llama-quantize, llama-bench, ...; env LLAMA_CPP_BIN)")


class LlamaCppError(RuntimeError):
    """A llama.cpp tool failed or printed nothing the parser recognises."""


def run_tool(cmd: list[str]) -> subprocess.CompletedProcess:
    """A finished tool's run (llama.cpp logs to stdout and stderr); its last lines in the error if it failed."""
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace")  # it prints "±" and "Δp"
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise LlamaCppError(f"{Path(cmd[0]).name} exited with {proc.returncode}:\n{tail}")
    return proc


def logs(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def quantize_cmd(tool: Path, src: Path, dst: Path, qtype: str, imatrix: Path | None = None,
                 embedding_type: str | None = None) -> list[str]:
    """llama-quantize's command line: `qtype` for the matrices, an importance matrix if given, and the token
    embedding's type if given (else llama.cpp's choice for that qtype)."""
    flags = (["--imatrix", str(imatrix)] if imatrix else []) + (
        ["--token-embedding-type", embedding_type] if embedding_type else [])
    return [str(tool), *flags, str(src), str(dst), qtype, str(THREADS)]


def imatrix_cmd(tool: Path, model: Path, text: Path, out: Path, ctx: int) -> list[str]:
    """llama-imatrix over every `ctx`-token chunk of `text` (no perplexity on the side: faster)."""
    return [str(tool), "-m", str(model), "-f", str(text), "-o", str(out), "-c", str(ctx), "-b", str(ctx),
            "-t", str(THREADS), "--no-ppl"]


def perplexity_cmd(tool: Path, model: Path, ctx: int, chunks: int, text: Path | None = None,
                   base: Path | None = None, kl: bool = False) -> list[str]:
    """llama-perplexity over `chunks` chunks of `ctx` tokens. With `text` and `base`: score the text and save the
    model's log-probabilities to `base` (the reference); with `base` and `kl`: score the tokens saved there and
    compare with the reference's log-probabilities (KL divergence, top-token agreement)."""
    cmd = [str(tool), "-m", str(model), "-c", str(ctx), "-b", str(ctx), "--chunks", str(chunks), "-t", str(THREADS)]
    if text is not None:
        cmd += ["-f", str(text)]
    if base is not None:
        cmd += ["--kl-divergence-base", str(base)]
    if kl:
        cmd.append("--kl-divergence")
    return cmd


def bench_cmd(tool: Path, model: Path, n_prompt: int, n_gen: int, repeats: int) -> list[str]:
    return [str(tool), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(THREADS),
            "-r", str(repeats), "-o", "json"]


def parse_bench(text: str) -> dict[str, list[float]]:
    """llama-bench's JSON (`-o json`): tokens/s of every repetition, {"pp": [...], "tg": [...]}; a test that was
    not run (-p 0 or -n 0) is absent."""
    tests = json.loads(text)
    out = {}
    for test in tests:
        kind = "tg" if test["n_prompt"] == 0 else "pp" if test["n_gen"] == 0 else None
        if kind:
            out[kind] = [float(v) for v in test["samples_ts"]]
    if not out:
        raise LlamaCppError("llama-bench printed no pp or tg test")
    return out


FINAL_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")
KL_FIELDS = {  # name: (pattern, scale); llama-perplexity prints Δp and top-token agreement in percent
    "ppl": (r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", 1.0),
    "ppl_base": (r"Mean PPL\(base\)\s*:\s*([0-9.]+)", 1.0),
    "ppl_ratio": (r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.]+)", 1.0),
    "kld": (r"Mean\s+KLD:\s*([0-9.eE+-]+)", 1.0),
    "kld_p99": (r"99\.0%\s+KLD:\s*([0-9.eE+-]+)", 1.0),
    "kld_max": (r"Maximum KLD:\s*([0-9.eE+-]+)", 1.0),
    "rms_dp": (r"RMS Δp\s*:\s*([0-9.]+)", 0.01),
    "same_top": (r"Same top p:\s*([0-9.]+)", 0.01),
}


def parse_perplexity(text: str) -> float:
    """The final perplexity of a llama-perplexity run."""
    m = FINAL_PPL.search(text)
    if not m:
        raise LlamaCppError("llama-perplexity printed no final estimate")
    return float(m.group(1))


def parse_kl_divergence(text: str) -> dict[str, float]:
    """A --kl-divergence run's statistics against the reference: perplexities, mean and tail KL divergence (nats
    per token), RMS change of the correct token's probability and how often both models' top token agree
    (fractions)."""
    out = {}
    for name, (pattern, scale) in KL_FIELDS.items():
        m = re.search(pattern, text)
        if not m:
            raise LlamaCppError(f"llama-perplexity printed no {name} (was it given at least 100 tokens to score?)")
        out[name] = float(m.group(1)) * scale
    return out


def tensor_types(path: Path) -> Counter:
    """How many of the blocks' tensors a GGUF file holds in each type (Q4_1, F32, ...)."""
    import gguf

    return Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk."))


def embedding_type(path: Path) -> str:
    import gguf

    return next(t.tensor_type.name for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")


def describe(path: Path) -> str:
    """The types of a GGUF file's matrices and its embedding, e.g. "Q4_1 (embedding Q8_0)"; norms (F32) left out."""
    return f"{'+'.join(sorted(set(tensor_types(path)) - {'F32'}))} (embedding {embedding_type(path)})"


class LlamaCpp:
    """llama.cpp's tools in one directory, checked present when made."""

    def __init__(self, bin_dir: str, tools: tuple[str, ...] = TOOLS):
        self.bin = Path(bin_dir)
        missing = [t for t in tools if not (self.bin / t).is_file()]
        if missing:
            sys.exit(f"{', '.join(missing)} not found in {self.bin}: {BUILD_HINT}")

    @cached_property
    def version(self) -> str:
        """The build's version line, from the first tool present that takes llama.cpp's common flags."""
        tool = next((self.bin / t for t in ("llama-server", "llama-perplexity") if (self.bin / t).is_file()), None)
        out = logs(subprocess.run([tool, "--version"], capture_output=True, text=True)) if tool else ""
        line = next((x for x in out.splitlines() if x.startswith("version")), "version: unknown")
        return line.split(":", 1)[1].strip()

    def quantize(self, src: Path, dst: Path, qtype: str, imatrix: Path | None = None,
                 embedding_type: str | None = None) -> Path:
        run_tool(quantize_cmd(self.bin / "llama-quantize", src, dst, qtype, imatrix, embedding_type))
        return dst

    def imatrix(self, model: Path, text: Path, out: Path, ctx: int) -> Path:
        run_tool(imatrix_cmd(self.bin / "llama-imatrix", model, text, out, ctx))
        return out

    def reference(self, model: Path, text: Path, base: Path, ctx: int, chunks: int) -> float:
        """Perplexity of the reference model on `text`, saving its log-probabilities to `base`."""
        cmd = perplexity_cmd(self.bin / "llama-perplexity", model, ctx, chunks, text, base)
        return parse_perplexity(logs(run_tool(cmd)))

    def kl_divergence(self, model: Path, base: Path, ctx: int, chunks: int) -> dict[str, float]:
        """`parse_kl_divergence` of `model` on the tokens saved in `base`."""
        cmd = perplexity_cmd(self.bin / "llama-perplexity", model, ctx, chunks, base=base, kl=True)
        return parse_kl_divergence(logs(run_tool(cmd)))

    def bench(self, model: Path, n_prompt: int, n_gen: int, repeats: int) -> dict[str, list[float]]:
        """llama-bench's tokens/s of every repetition: {"pp": [...], "tg": [...]} (after its warm-up run)."""
        return parse_bench(run_tool(bench_cmd(self.bin / "llama-bench", model, n_prompt, n_gen, repeats)).stdout)

    def server_cmd(self, model: Path, port: int, parallel: int, ctx: int) -> list[str]:
        return [str(self.bin / "llama-server"), "-m", str(model), "-t", str(THREADS), "-np", str(parallel),
                "-c", str(ctx), "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
