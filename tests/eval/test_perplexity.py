import gzip
import math

import numpy as np
import torch

from lmforge.config import ModelConfig
from lmforge.eval.compression import gzip_bpb, xz_bpb
from lmforge.eval.perplexity import evaluate
from lmforge.model.transformer import Transformer


def test_bits_per_byte_from_per_token_losses():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2)).double()
    windows = [torch.randint(0, 20, (9,)) for _ in range(3)] + [torch.randint(0, 20, (4,))]
    token_bytes = np.arange(20) % 4  # token i stands for i % 4 bytes
    result = evaluate(model, windows, token_bytes, batch_size=2)
    nll = sum(
        torch.nn.functional.cross_entropy(model(w[None, :-1])[0], w[1:], reduction="sum").item() for w in windows
    )
    n_bytes = sum(token_bytes[w[1:].numpy()].sum() for w in windows)
    assert result["tokens"] == 8 * 3 + 3
    assert math.isclose(result["loss"], nll / result["tokens"], rel_tol=1e-9)
    assert math.isclose(result["bpb"], nll / math.log(2) / n_bytes, rel_tol=1e-9)
    assert math.isclose(result["ppl"], math.exp(result["loss"]), rel_tol=1e-12)


def test_compressor_baselines():
    data = b"abcabcabc" * 1000
    assert math.isclose(gzip_bpb(data), 8 * len(gzip.compress(data, 9)) / len(data))
    assert gzip_bpb(data) < 0.2 and xz_bpb(data) < 0.2
    noise = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    assert gzip_bpb(noise) > 7.9 and xz_bpb(noise) > 7.9
