"""Optimizers: AdamW, and the matrix optimizers Muon, NAMO and NAMO-D for hidden weight matrices."""

from lmforge.optim.build import build_optimizer

__all__ = ["build_optimizer"]
