"""Supervised fine-tuning on chat data: the loss mask is exactly the assistant's tokens, batches are
reproducible, and a fine-tuned checkpoint learns the answers, loads and chats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_model

from lmforge.checkpoint import load_checkpoint, save_checkpoint
from lmforge.config import RunConfig, run_config_from_dict
from lmforge.data.chat import IGNORE, ChatLoader, eval_batches, read_conversations, render_for_training
from lmforge.errors import ConfigError, DataError
from lmforge.interop.chat import render_chat
from lmforge.serve.llm import LLM
from lmforge.serve.params import SamplingParams
from lmforge.train.trainer import train

CONVERSATION = [{"role": "system", "content": "You add numbers."},
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "2 + 3 = 5."},
                {"role": "user", "content": "And 4 + 4?"},
                {"role": "assistant", "content": "4 + 4 = 8."}]


def test_the_mask_covers_exactly_the_assistant_tokens(tokenizer):
    ids, mask = render_for_training(tokenizer, CONVERSATION)
    assert tokenizer.decode(ids.tolist()) == render_chat(tokenizer, CONVERSATION, add_generation_prompt=False)
    runs, current = [], []
    for token, target in zip(ids.tolist(), mask.tolist()):
        if target:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    assert runs == ["2 + 3 = 5.<|im_end|>\n", "4 + 4 = 8.<|im_end|>\n"]


def test_a_template_that_does_not_render_prefixes_is_refused(tokenizer):
    from lmforge.tokenizer import Tokenizer

    reversed_template = ("{% for message in messages | reverse %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    odd = Tokenizer(tokenizer.hf, add_bos=False, chat_template=reversed_template)
    with pytest.raises(DataError, match="prefixes"):
        render_for_training(odd, CONVERSATION)


def test_loader_targets_are_assistant_tokens_and_reproducible(tokenizer):
    examples = [render_for_training(tokenizer, CONVERSATION[:3]), render_for_training(tokenizer, CONVERSATION)]
    loader = ChatLoader(examples, seq_len=128, batch_size=2, seed=0)
    x, y = loader.batch(3)
    assert x.shape == y.shape == (2, 128), "every batch has the one shape train.seq_len gives"
    assert torch.equal(x, loader.batch(3)[0]) and torch.equal(y, ChatLoader(examples, 128, 2, 0).batch(3)[1])
    expected = {len(ids) - 1: (ids, np.where(mask, ids, IGNORE)) for ids, mask in examples}
    for row in range(2):
        n = int((y[row] != IGNORE).nonzero().max()) + 1  # the row's real length: it ends on an answer
        ids, targets = expected[n]
        assert torch.equal(x[row, :n], torch.from_numpy(ids[:-1])) and torch.equal(y[row, :n], torch.from_numpy(targets[1:]))
        assert (y[row, n:] == IGNORE).all()
    packed = ChatLoader(examples, seq_len=16, batch_size=2, seed=0, packing="packed")
    px, py = packed.batch(0)
    assert px.shape == (2, 16) and (py == IGNORE).any() and (py != IGNORE).any()
    (batch_x, batch_y), = eval_batches(examples, 128, 4)
    assert int((batch_y != IGNORE).sum()) == sum(int(m[1:].sum()) for _, m in examples)


def test_conversation_files_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_conversations(bad)


def _conversations(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 5
        rows.append({"messages": [{"role": "user", "content": f"add {a} and {b}"},
                                  {"role": "assistant", "content": f"the sum is {a + b}"}]})
    return rows


def test_fine_tuning_learns_the_answers_and_the_checkpoint_chats(tmp_path, tokenizer):
    model = tiny_model(tokenizer.vocab_size, max_seq_len=64)
    base = tmp_path / "base"
    save_checkpoint(base, model, RunConfig(model=model.cfg), tokenizer)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _conversations(60)))
    cfg = run_config_from_dict({
        "data": {"format": "chat", "corpus": str(data)},
        "train": {"out": str(tmp_path / "sft"), "init_from": str(base), "seq_len": 48, "batch_size": 8, "steps": 60,
                  "lr": 3e-3, "warmup_steps": 5, "log_every": 10, "eval_every": 0, "precision": "fp32", "device": "cpu"}})
    result = train(cfg, progress=False, log=lambda s: None)
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_eval["loss"] < 1.0
    assert load_checkpoint(tmp_path / "sft").tokenizer.chat_template == tokenizer.chat_template
    question = [[{"role": "user", "content": "add 2 and 3"}]]
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    before = LLM(str(base), device="cpu").chat(question, greedy)[0].outputs[0].text
    after = LLM(str(tmp_path / "sft"), device="cpu").chat(question, greedy)[0].outputs[0].text
    assert after.startswith("the sum is") and not before.startswith("the sum is")


def test_chat_data_needs_a_model_to_start_from(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _conversations(4)))
    cfg = run_config_from_dict({"data": {"format": "chat", "corpus": str(data)},
                                "train": {"out": str(tmp_path / "o"), "steps": 1, "device": "cpu"}})
    with pytest.raises(ConfigError, match="needs train.init_from"):
        train(cfg, progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="data.packing"):
        run_config_from_dict({"data": {"packing": "tight"}})
