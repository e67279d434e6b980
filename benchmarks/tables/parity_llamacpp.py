"""BENCHMARKS.md's SmolLM2 parity table (benchmarks/parity_llamacpp.py's records)."""

from columns import Column, Ratio

TABLES = {
    "parity": (
        Column("peer", "peer"),
        Column("weights", "weights"),
        Column("argmax agreement", "argmax_agreement", ".2%"),
        Column("loss correlation", "loss_correlation", ".5f"),
        Column("max abs logit difference", "max_abs_logit_diff", ".2e"),
        Column("perplexity", "perplexity", ".3f"),
        Column("greedy tokens matched", "greedy_prefix_match", "d"),
        Column("decode tokens/s", "decode_tokens_per_s", ".1f"),
        Ratio("vs lmforge", "decode_tokens_per_s", "decode_tokens_per_s", lambda row, other: other["peer"] == "lmforge"),
        Column("load s", "load_s", ".1f"),
    ),
}
