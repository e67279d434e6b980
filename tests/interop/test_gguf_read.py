"""lmforge's GGUF header reader and block dequantization against the `gguf` package's reader and reference."""

import struct

import numpy as np
import pytest
import torch
from helpers import tiny_model

from lmforge.errors import CheckpointError
from lmforge.interop.gguf_file import export_gguf
from lmforge.interop.gguf_read import GGUFFile
from lmforge.quant.gguf_blocks import from_blocks


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_1"])
def test_the_reader_sees_what_the_gguf_package_sees(tmp_path, tokenizer, dtype):
    import gguf

    path = export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "m.gguf", dtype=dtype)
    ours, theirs = GGUFFile(path), gguf.GGUFReader(path)
    assert ours.fields == {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert a.shape == tuple(int(n) for n in b.shape) and a.tensor_type == int(b.tensor_type), a.name
        assert np.array_equal(a.data, np.asarray(b.data).view(np.uint8).reshape(-1)), a.name


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_1"])
def test_block_dequantization_equals_the_reference(qtype):
    import gguf

    kind = getattr(gguf.GGMLQuantizationType, qtype.upper())
    w = (torch.randn(24, 256, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 24)[:, None]).numpy()
    blocks = gguf.quants.quantize(w, kind)
    reference = torch.from_numpy(gguf.quants.dequantize(blocks, kind).astype(np.float64))
    assert torch.equal(from_blocks(blocks, qtype).double(), reference)


def _header(n_tensors: int, n_fields: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_fields)


def _string(text: str, length: int | None = None) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data) if length is None else length) + data


@pytest.mark.parametrize("body, message", [
    (_header(0, 2**60), "truncated or corrupt"),  # counts no file of this size can hold
    (_header(0, 1) + _string("k", 2**62), "truncated or corrupt"),  # a key longer than the file
    (_header(0, 1) + _string("k") + struct.pack("<IIQ", 9, 8, 2**40), "truncated or corrupt"),  # a huge string array
    (_header(0, 1) + _string("k") + struct.pack("<I", 77) + b"\0" * 8, "unknown value type 77"),
    (_header(1, 0) + _string("t") + struct.pack("<I", 1) + struct.pack("<QIQ", 64, 0, 2**50), "truncated or corrupt"),
    (_header(1, 0) + _string("t") + struct.pack("<I", 1) + struct.pack("<QIQ", 64, 999, 0), "unknown ggml type 999"),
    (_header(1, 0) + _string("t") + struct.pack("<I", 1) + struct.pack("<QIQ", 33, 2, 0) + b"\0" * 64, "not whole 32"),
    (b"GGUF" + struct.pack("<I", 1), "version 1"),
    (b"GGML" + b"\0" * 20, "no GGUF magic"),
    (b"", "empty"),
])
def test_a_damaged_or_hostile_header_is_a_one_line_error(tmp_path, body, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(body)
    with pytest.raises(CheckpointError, match=message):
        GGUFFile(path)
