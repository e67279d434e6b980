"""Helpers shared by test modules: a generated corpus, tiny configs and tiny models."""

from __future__ import annotations

import importlib
import random
import socket
import sys
import threading
import time
from pathlib import Path

import torch

from lmforge.config import ModelConfig, run_config_from_dict
from lmforge.model.transformer import Transformer

ROOT = Path(__file__).resolve().parent.parent


def benchmark_modules(*names: str) -> list:
    """Modules of benchmarks/ by name (the scripts import each other as top-level modules)."""
    path = str(ROOT / "benchmarks")
    if path not in sys.path:
        sys.path.insert(0, path)
    return [importlib.import_module(name) for name in names]


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega def return class import while for in if else").split()


def write_corpus(directory, n_docs: int = 40, seed: int = 0) -> None:
    """Text files of pseudo-code sentences, deterministic for a seed."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "." for _ in range(rng.randint(20, 60))]
        (directory / f"doc{i:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_run_config(corpus_dir, out, data_dir, **train):
    """A run config small enough to train a few steps in a second."""
    raw = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64},
        "data": {"corpus": str(corpus_dir), "vocab_size": 300, "val_bytes": 8000, "dir": str(data_dir)},
        "train": {"out": str(out), "seq_len": 32, "batch_size": 4, "steps": 6, "lr": 3e-3, "warmup_steps": 2,
                  "log_every": 1, "eval_every": 3, "eval_tokens": 256, "precision": "fp32", "device": "cpu", **train},
    }
    return run_config_from_dict(raw)


def tiny_model(vocab: int, **kw) -> Transformer:
    cfg = dict(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128, rope_theta=50000.0)
    cfg.update(kw)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**cfg))
    with torch.no_grad():  # non-trivial norms and biases so a wrong mapping shows up
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (0 if name.endswith("bias") else 1))
    return model


class ServerThread:
    """uvicorn serving `server` on a free loopback port, in a thread, for the duration of a test module."""

    def __init__(self, server):
        import uvicorn

        from lmforge.serve.server import build_app

        self.server = server
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uvicorn = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
