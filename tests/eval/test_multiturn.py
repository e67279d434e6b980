"""The multi-turn probe: the same conversations for every model, the answer judged as a whole number."""

import re

import torch
from helpers import tiny_model

from lmforge.data.readers import read_corpus
from lmforge.eval.multiturn import conversation, is_right, plain_text, plot, probe, prompt_ids
from lmforge.serve.engine import EngineConfig
from lmforge.serve.llm import LLM


def test_conversations_are_seeded_and_hold_the_fact_and_k_turns():
    for k in (0, 3, 16):
        c = conversation(k, seed=4)
        assert c == conversation(k, seed=4) and len(c.messages) == 2 + 2 * k + 1
        assert c.answer in c.messages[0]["content"] and c.answer not in c.messages[-1]["content"]
        assert [m["role"] for m in c.messages[:2]] == ["user", "assistant"] and c.messages[-1]["role"] == "user"
    assert conversation(2, 1).messages[:2] == conversation(8, 1).messages[:2]  # the same facts at every k
    assert conversation(2, 1).messages[2:6] == conversation(8, 1).messages[2:6]  # the same first fillers
    assert conversation(2, 1) != conversation(2, 2)


def test_the_conversations_corpus_asks_several_answered_questions_from_other_seeds():
    probed = {plain_text(conversation(k, seed).messages) for k in (0, 1, 2, 4) for seed in range(200)}
    turns, questions = set(), []
    for _, doc in zip(range(300), read_corpus("conversations")):
        lines = doc.text.split("\n")
        facts = dict(re.findall(r"The ([a-zA-Z ]+ of \w+) is (\d+)\.", lines[0]))
        assert len(facts) == 3 and lines[-1].startswith("Assistant: ") and lines[-2].startswith("User: What is the ")
        asked = [(re.search(r"the (.+)\?", q).group(1), a.removeprefix("Assistant: "))
                 for q, a in zip(lines[2::2], lines[3::2]) if "Reply with the number only" in q]
        assert asked and all(facts[key] == answer for key, answer in asked)  # every question answered right
        assert doc.text.rsplit(" ", 1)[0] not in probed
        turns.add(len(lines) // 2 - 2)
        questions.append(len(asked))
    assert min(turns) == 0 and max(turns) == 16 and sum(questions) / len(questions) > 4


def test_only_the_whole_number_counts():
    assert is_right("It is 4821.", "4821") and is_right("4821", "4821")
    assert not is_right("14821", "4821") and not is_right("48210", "4821") and not is_right("48 21", "4821")


def test_prompts_with_and_without_a_chat_template(tokenizer):
    c = conversation(1, 0)
    chat = tokenizer.decode(prompt_ids(tokenizer, c.messages))
    assert "<|im_start|>user" in chat and chat.rstrip().endswith("assistant")
    plain_tok = type(tokenizer)(tokenizer.hf, add_bos=False, chat_template=None)
    plain = plain_tok.decode(prompt_ids(plain_tok, c.messages))
    assert plain.startswith("User: Please remember") and plain.endswith("Assistant:")


def test_probe_scores_every_k_and_leaves_out_what_does_not_fit(tokenizer, tmp_path):
    llm = LLM(tiny_model(tokenizer.vocab_size, max_seq_len=1024), tokenizer, EngineConfig(dtype=torch.float32))
    accuracy = probe(llm, [0, 2, 200], conversations=3)
    assert set(accuracy) == {0, 2, 200}
    assert all(0 <= accuracy[k] <= 1 for k in (0, 2)) and accuracy[200] is None  # 200 turns exceed 1,024 tokens
    plot({"tiny": accuracy}, tmp_path / "multiturn.png")
    assert (tmp_path / "multiturn.png").stat().st_size > 1000
