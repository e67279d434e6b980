"""lmforge: a language model made efficient from end to end, on one model definition."""

__version__ = "0.1.0"
