"""Bits per byte of general-purpose compressors: the baselines a language model must beat."""

from __future__ import annotations

import gzip
import lzma


def gzip_bpb(data: bytes) -> float:
    """Bits per byte of `gzip -9`."""
    return 8 * len(gzip.compress(data, compresslevel=9)) / len(data)


def xz_bpb(data: bytes) -> float:
    """Bits per byte of `xz -9`."""
    return 8 * len(lzma.compress(data, preset=9)) / len(data)
