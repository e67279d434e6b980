"""Reading a GGUF file's header: metadata, tensor descriptions and views of the tensors' bytes.

The `gguf` package's reader builds a numpy view for every part of every metadata value, which takes
seconds for a tokenizer of 49k tokens and 49k merges (most of SmolLM2's load time); this reader parses
the same header with `struct` in a fraction of that and maps the tensor data without copying it. Every
length and count is checked against the file's size, so a damaged or hostile file is an error, never
a huge allocation. The format: github.com/ggml-org/ggml, docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import CheckpointError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's name, shape (GGUF order: the fastest-varying dimension first), ggml type and raw bytes."""

    name: str
    shape: tuple[int, ...]
    tensor_type: int
    data: np.ndarray  # uint8 view into the mapped file


class _Cursor:
    def __init__(self, buf: memoryview, source: str):
        self.buf, self.pos, self.source = buf, 0, source

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise CheckpointError(f"{self.source} is not a readable GGUF file (truncated or corrupt header)")

    def scalar(self, fmt: str):
        size = struct.calcsize(fmt)
        self.need(size)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        self.need(n)
        text = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.scalar("<I"), self.scalar("<Q")
            if item == _STRING:
                self.need(8 * count)  # every string has at least its length
                return [self.string() for _ in range(count)]
            if item in _NUMPY:
                dtype = np.dtype(_NUMPY[item])
                self.need(dtype.itemsize * count)
                values = np.frombuffer(self.buf, dtype, count, self.pos).tolist()
                self.pos += dtype.itemsize * count
                return values
            self.need(count)  # nested arrays: every element has at least a type and a count
            return [self.value(item) for _ in range(count)]
        if kind not in _SCALARS:
            raise CheckpointError(f"{self.source} is not a readable GGUF file (unknown value type {kind})")
        return self.scalar(_SCALARS[kind])


class GGUFFile:
    """A GGUF file opened for reading: `fields` (metadata key -> Python value) and `tensors` (in file order)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise CheckpointError(f"GGUF file {path} not found")
        with open(path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                raise CheckpointError(f"{path} is not a readable GGUF file (it is empty)") from None
        cur = _Cursor(memoryview(self._map), source)
        cur.need(4)
        if bytes(cur.buf[:4]) != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file (no GGUF magic at its start)")
        cur.pos = 4
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise CheckpointError(f"{path} is not a readable GGUF file (version {version}; lmforge reads versions 2 and 3)")
        n_tensors, n_fields = cur.scalar("<Q"), cur.scalar("<Q")
        cur.need(n_fields * 13 + n_tensors * 24)  # the smallest possible entries
        self.fields = {}
        for _ in range(n_fields):
            key = cur.string()
            self.fields[key] = cur.value(cur.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name, n_dims = cur.string(), cur.scalar("<I")
            if n_dims > _MAX_DIMS:
                raise CheckpointError(f"{path}: tensor {name} claims {n_dims} dimensions")
            shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
            infos.append((name, shape, cur.scalar("<I"), cur.scalar("<Q")))
        alignment = self.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0:
            raise CheckpointError(f"{path}: general.alignment {alignment!r} is not a positive integer")
        start = -(-cur.pos // alignment) * alignment
        self.tensors = [self._tensor(cur, start, *info) for info in infos]

    def _tensor(self, cur: _Cursor, start: int, name: str, shape: tuple[int, ...], kind: int, offset: int) -> GGUFTensor:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise CheckpointError(f"{cur.source}: tensor {name} has unknown ggml type {kind}") from None
        n = int(np.prod(shape, dtype=np.uint64)) if shape else 1
        if n % block:
            raise CheckpointError(f"{cur.source}: tensor {name} of shape {shape} is not whole {block}-value blocks")
        size = n // block * block_bytes
        cur.pos = start + offset
        cur.need(size)
        return GGUFTensor(name, shape, kind, np.frombuffer(cur.buf, np.uint8, size, cur.pos))
