"""Evaluation: perplexity and bits per byte, compression baselines."""
