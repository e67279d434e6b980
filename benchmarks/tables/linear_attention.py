"""BENCHMARKS.md's linear-attention tables (benchmarks/linear_attention.py's records)."""

from columns import Column, Ratio, marked

LAYERS = ("softmax", "mamba2s", "2mamba", "2mamba (lmforge)", "2mamba_e", "mamba2")  # one-layer measurements
RECALL_PAIRS = (8, 16)  # key-value pairs of the recall task: 3 tokens each

TABLES = {
    "quality": (
        Column("variant", "variant"),
        Column("mixers", "mixers"),
        Column("configured as", "linear_variant"),
        Column("parameters", "params", ",d"),
        Column("held-out loss", "val_loss", ".4f"),
        Column("bits/byte", "val_bpb", ".4f"),
        Ratio("loss / softmax's", "val_loss", "val_loss", marked("softmax"), ".4f"),
        Column("gap to softmax (same seed)", "vs_softmax", ".2%"),
        Column("vs softmax, over seeds", "ranked_vs_softmax"),
    ),
    "recall": (
        Column("variant", "variant"),
        Column("mixers (2 layers)", "mixers"),
        *(column for n in RECALL_PAIRS for column in (Column(f"rate T={3 * n}", f"lr_T{3 * n}", "g"),
                                                      Column(f"accuracy T={3 * n}", f"acc_T{3 * n}", ".1%"))),
    ),
    "speed": (
        Column("T", "T", "d"),
        *(Column(f"{name} s", name, ".3f") for name in LAYERS),
        *(Ratio(f"softmax / {name}", "softmax", name) for name in LAYERS[1:]),
    ),
    "memory": (
        Column("T", "T", "d"),
        *(Column(f"{name} MiB", name, ",.1f") for name in LAYERS),
        *(Ratio(f"{name} / softmax", name, "softmax") for name in LAYERS[1:]),
    ),
    "memory_cuda": (
        Column("T", "T", "d"),
        *(Column(f"{name} peak MiB", name, ",.1f") for name in LAYERS),
    ),
    "decode": (
        Column("mixer", "mixer"),
        Column("context", "context", ",d"),
        Column("ms/token", "ms_per_token", ".3f"),
        Column("state MiB", "state_mib", ".2f"),
    ),
}
