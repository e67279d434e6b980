"""Byte-level BPE tokenizers to and from GGUF metadata (`tokenizer.ggml.*`).

llama.cpp names the text-splitting rule a vocabulary was trained with (`tokenizer.ggml.pre`);
each name maps to the Hugging Face pre-tokenizer that splits text the same way, so the
token ids are the ones the model was trained on.
"""

from __future__ import annotations

import json

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import CheckpointError
from lmforge.tokenizer import Tokenizer

GGUF_NORMAL, GGUF_CONTROL, GGUF_USER_DEFINED = 1, 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _gpt2():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()])


def _split_then_bytes(pattern: str):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


# llama.cpp pre-tokenizer name -> Hugging Face pre-tokenizer (the first name is used on export).
PRE_TOKENIZERS = {
    "gpt2": _gpt2,
    "default": _gpt2,
    "smollm": _digits_then_gpt2,
    "starcoder": _digits_then_gpt2,
    "refact": _digits_then_gpt2,
    "llama-bpe": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "qwen2": lambda: _split_then_bytes(_QWEN2_SPLIT),
}
IGNORE_MERGES = {"llama-bpe"}  # llama.cpp matches whole words in the vocabulary before merging


def tokenizer_from_gguf(fields: dict, source: str) -> Tokenizer:
    """Build the tokenizer described by GGUF metadata (`fields`: key -> value)."""
    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(f"{source}: tokenizer model {kind!r} is not supported; lmforge reads byte-level BPE ('gpt2') vocabularies")
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise CheckpointError(f"{source}: pre-tokenizer {pre!r} is not supported (known: {', '.join(sorted(PRE_TOKENIZERS))})")
    tokens = list(fields["tokenizer.ggml.tokens"])
    types = list(fields.get("tokenizer.ggml.token_type") or [GGUF_NORMAL] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges", [])]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=pre in IGNORE_MERGES)
    hf = HFTokenizer(bpe)
    hf.pre_tokenizer = PRE_TOKENIZERS[pre]()
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == GGUF_CONTROL])
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == GGUF_USER_DEFINED])
    if hf.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise CheckpointError(f"{source}: the tokenizer vocabulary has duplicate tokens; the file is malformed")
    return Tokenizer(
        hf,
        bos_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_id=fields.get("tokenizer.ggml.eos_token_id"),
        pad_id=fields.get("tokenizer.ggml.padding_token_id"),
        add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
        chat_template=fields.get("tokenizer.chat_template"),
    )


def gguf_pre_tokenizer_name(tokenizer: Tokenizer) -> str:
    """The llama.cpp name of the tokenizer's text-splitting rule."""
    current = json.loads(tokenizer.hf.to_str()).get("pre_tokenizer")
    for name, build in PRE_TOKENIZERS.items():
        probe = HFTokenizer(models.BPE())
        probe.pre_tokenizer = build()
        if json.loads(probe.to_str())["pre_tokenizer"] == current:
            return name
    raise CheckpointError("the tokenizer's pre-tokenizer has no llama.cpp equivalent; it cannot be written to GGUF")


def add_tokenizer_to_gguf(writer, tokenizer: Tokenizer) -> None:
    """Write the tokenizer into a `gguf.GGUFWriter` as llama.cpp expects it."""
    spec = json.loads(tokenizer.hf.to_str())
    if spec["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(spec.get("decoder")):
        raise CheckpointError("only byte-level BPE tokenizers can be written to GGUF")
    tokens = [tokenizer.hf.id_to_token(i) for i in range(tokenizer.vocab_size)]
    added = {t.content: t.special for t in tokenizer.hf.get_added_tokens_decoder().values()}
    types = [GGUF_NORMAL if t not in added else GGUF_CONTROL if added[t] else GGUF_USER_DEFINED for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(gguf_pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for ident, add in ((tokenizer.bos_id, writer.add_bos_token_id), (tokenizer.eos_id, writer.add_eos_token_id),
                       (tokenizer.pad_id, writer.add_pad_token_id)):
        if ident is not None:
            add(ident)
    writer.add_add_bos_token(tokenizer.add_bos)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
