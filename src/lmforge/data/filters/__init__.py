"""Document quality filters: Gopher, FineWeb and C4's rules for prose (decisions matching datatrove
0.10.1 without spaCy), and a code-aware filter for source files."""

from lmforge.data.filters.c4 import C4Quality
from lmforge.data.filters.code import CodeQuality
from lmforge.data.filters.fineweb import FineWebQuality
from lmforge.data.filters.gopher import GopherQuality, GopherRepetition

__all__ = ["C4Quality", "CodeQuality", "FineWebQuality", "GopherQuality", "GopherRepetition"]
