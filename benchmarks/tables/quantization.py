"""BENCHMARKS.md's quantization tables (benchmarks/quantization.py's records): the 8-bit and the 4-bit GGUF files
(formats8, formats4) and their ranking claims (claims8, claims4) are recorded by separate runs."""

from columns import Column, Ratio, marked


def _float_file(row: dict, other: dict) -> bool:
    return other["format"] == "F16"


FORMATS = (
    Column("type", "format"),
    Column("made by", "tool"),
    Column("method", "method"),
    Column("seeds", "seeds", "d"),
    Column("tensors", "types"),
    Column("MiB", "mib", ".1f"),
    Column("quantize s", "quantize_s", ".0f"),
    Column("code ppl", "ppl_code", ".3f"),
    Column("code KLD", "kld_code", ".4f"),
    Column("code same top", "same_top_code", ".1%"),
    Column("prose ppl", "ppl_prose", ".3f"),
    Column("prose KLD", "kld_prose", ".4f"),
    Column("prose same top", "same_top_prose", ".1%"),
    Column("tg tok/s", "tg_tokens_per_s", ".1f"),
    Ratio("vs F16", "tg_tokens_per_s", "tg_tokens_per_s", _float_file),
    Column("lmforge codes kept", "codes_kept"),
)
CLAIMS = (
    Column("type", "format"),
    Column("text", "text"),
    Column("lmforge method", "method"),
    Column("KLD", "kld", ".4f"),
    Column("llama.cpp's lowest", "peer"),
    Column("its KLD", "peer_kld", ".4f"),
    Column("against llama.cpp", "vs_peer"),
    Column("against lmforge RTN", "vs_rtn"),
)

TABLES = {
    "formats8": FORMATS,
    "claims8": CLAIMS,
    "formats4": FORMATS,
    "claims4": CLAIMS,
    "kernels": (
        Column("K x N", "shape"),
        Column("fp32 us", "fp32", ".0f"),
        Column("bf16 us", "bf16", ".0f"),
        Column("int8, bf16 act. us", "int8_bf16", ".0f"),
        Column("int4, bf16 act. us", "int4_bf16", ".0f"),
        Column("int8, fp32 act. us", "int8_fp32", ".0f"),
        Column("int4, fp32 act. us", "int4_fp32", ".0f"),
        Ratio("int4 / bf16", "int4_bf16", "bf16"),
    ),
    "speed": (
        Column("weights", "weights"),
        Column("tok/s", "tokens_per_s", ".1f"),
        Ratio("vs bf16", "tokens_per_s", "tokens_per_s", marked("reference")),
        Column("bound tok/s", "bound_tokens_per_s", ".0f"),
        Ratio("of bound", "tokens_per_s", "bound_tokens_per_s", fmt=".0%"),
        Column("weights MiB read per token", "weight_mib", ".0f"),
        Column("prefill s", "prefill_s", ".2f"),
    ),
}
