"""Chat data for supervised fine-tuning: conversations rendered with the model's own chat template, the
loss on the assistant's tokens only, and batches that are a pure function of (seed, index).

The mask comes from rendering the conversation message by message: the text a message adds to the
rendering is its span, and for an assistant message the header the template adds before it (what
`add_generation_prompt` renders) is prompt, not target. Each span is tokenized on its own, so the
boundary between prompt and answer is a token boundary; the template must render every prefix of a
conversation as a prefix of the whole (the Llama, ChatML and SmolLM2 templates do), else it is refused.

Batching (`data.packing`): "none" puts one conversation per row, padded (no token sees another
conversation); "packed" concatenates conversations and cuts windows of `seq_len` from the stream, the
usual packing, in which a window's later conversations attend to the earlier ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.data.readers import json_records
from lmforge.errors import DataError
from lmforge.interop.chat import render_chat
from lmforge.tokenizer import Tokenizer

IGNORE = -100  # targets the loss skips
ROLES = ("system", "user", "assistant", "tool")
PACKING = ("none", "packed")
VAL_SHARE = 10  # one conversation in VAL_SHARE (by a hash of its content) is held out


def read_conversations(path: str | Path) -> list[list[dict]]:
    """The `messages` of each line of a JSON-lines file (as `lmforge data synth` writes), checked."""
    conversations = []
    for number, record in json_records(path, '{"messages": [...]}'):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages)):
            raise DataError(f"{path}:{number}: expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}} "
                            f"with roles among {', '.join(ROLES)}")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise DataError(f"{path} holds no conversations")
    return conversations


def render_for_training(tokenizer: Tokenizer, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a conversation in the tokenizer's chat template, and a mask of the assistant's tokens."""
    ids: list[int] = []
    mask: list[bool] = []
    done = ""

    def add(text: str, target: bool) -> None:
        piece = tokenizer.encode(text)
        ids.extend(piece)
        mask.extend([target] * len(piece))

    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            header = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
            if not header.startswith(done):
                raise DataError("the chat template does not render a conversation's prefixes as its prefixes; "
                                "it cannot mark the assistant's tokens")
            add(header[len(done):], False)
            done = header
        full = render_chat(tokenizer, messages[:k + 1], add_generation_prompt=False)
        if not full.startswith(done):
            raise DataError("the chat template does not render a conversation's prefixes as its prefixes; "
                            "it cannot mark the assistant's tokens")
        add(full[len(done):], message["role"] == "assistant")
        done = full
    if tokenizer.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        ids.insert(0, tokenizer.bos_id)
        mask.insert(0, False)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)


def is_validation(messages: list[dict]) -> bool:
    """Whether a conversation is held out, from a hash of its content (stable across runs and machines)."""
    digest = hashlib.blake2b(json.dumps(messages, sort_keys=True).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % VAL_SHARE == 0


@dataclass
class ChatData:
    """A conversations file rendered for training: (ids, assistant mask) per conversation, train and held out."""

    train: list[tuple[np.ndarray, np.ndarray]]
    val: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def load(cls, path: str | Path, tokenizer: Tokenizer) -> "ChatData":
        train, val = [], []
        for messages in read_conversations(path):
            (val if is_validation(messages) else train).append(render_for_training(tokenizer, messages))
        if not val:  # a tiny set: hold out its last conversation
            val.append(train.pop())
        return cls(train, val)


class ChatLoader:
    """Training batches of chat examples: inputs [B, T] and targets with IGNORE outside the assistant's tokens.

    Batch `index` is a pure function of (seed, index), so resuming, on any number of data-parallel ranks,
    continues exactly; each epoch visits the conversations (or, packed, the windows) in a new order.
    """

    def __init__(self, examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, batch_size: int, seed: int,
                 packing: str = "none", pad_id: int = 0):
        if packing not in PACKING:
            raise DataError(f"data.packing={packing!r} is not one of {', '.join(PACKING)}")
        if not examples:
            raise DataError("no training conversations; add conversations or lower the share held out")
        self.seq_len, self.batch_size, self.seed, self.packing, self.pad_id = seq_len, batch_size, seed, packing, pad_id
        if packing == "packed":
            self.ids = np.concatenate([ids for ids, _ in examples])
            self.targets = np.concatenate([np.where(mask, ids, IGNORE) for ids, mask in examples])
            self.items = max(1, (len(self.ids) - 1) // seq_len)
        else:  # a conversation whose answers all lie beyond the window teaches nothing: left out
            self.examples = [(ids[:seq_len + 1], mask[:seq_len + 1]) for ids, mask in examples if mask[1:seq_len + 1].any()]
            if not self.examples:
                raise DataError(f"no conversation has an assistant token within train.seq_len={seq_len}; raise it")
            self.items = len(self.examples)

    def _item(self, sample: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, i = divmod(sample, self.items)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.items)
        j = int(order[i])
        if self.packing == "packed":
            window = slice(j * self.seq_len, min(j * self.seq_len + self.seq_len + 1, len(self.ids)))
            return self.ids[window], self.targets[window]
        ids, mask = self.examples[j]
        return ids, np.where(mask, ids, IGNORE)

    def batch(self, index: int, part: int = 0, parts: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` (rank `part`'s rows of it with `parts` data-parallel ranks), right-padded to train.seq_len:
        one shape for every step, so a compiled model is compiled once rather than once per batch width."""
        rows = self.batch_size // parts
        first = index * self.batch_size + part * rows
        return pad_rows([self._item(s) for s in range(first, first + rows)], self.pad_id, self.seq_len)


def pad_rows(items: list[tuple[np.ndarray, np.ndarray]], pad_id: int,
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (ids, targets) of up to T+1 tokens each as inputs [B, T] and next-token targets [B, T], right-padded
    to `width` tokens (default: the longest row's)."""
    width = width or max(len(ids) for ids, _ in items) - 1
    x = torch.full((len(items), width), pad_id, dtype=torch.long)
    y = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for r, (ids, targets) in enumerate(items):
        n = len(ids) - 1
        x[r, :n] = torch.from_numpy(ids[:-1])
        y[r, :n] = torch.from_numpy(targets[1:])
    return x, y


def eval_batches(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, batch_size: int,
                 pad_id: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every held-out conversation once (cut to seq_len + 1 tokens), in batches of similar lengths."""
    items = sorted(((ids[:seq_len + 1], np.where(mask, ids, IGNORE)[:seq_len + 1]) for ids, mask in examples),
                   key=lambda item: len(item[0]))
    return [pad_rows(items[i:i + batch_size], pad_id) for i in range(0, len(items), batch_size)]
