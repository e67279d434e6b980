"""Multi-turn robustness: does a model keep what it was told as a conversation goes on?

Each conversation gives a few facts in its first user turn (a person's number for some thing), then k unrelated
turns (a question and its answer, written in, not generated, so every model sees the same conversation), then
asks for one of the facts. A reply is right when it contains the number. Accuracy against k shows how fast a
model loses the facts: fixed-state mixers (linear attention) and sparse attention may lose them sooner than
softmax attention, and int4 weights may lose them sooner than float.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lmforge.interop.chat import render_chat
from lmforge.serve.llm import LLM, encode_prompt
from lmforge.serve.params import SamplingParams
from lmforge.tokenizer import Tokenizer

NAMES = ("Mira", "Tomas", "Aiko", "Bruno", "Leila", "Oskar", "Priya", "Sven", "Nadia", "Kofi", "Ines", "Ravi")
THINGS = ("locker code", "room number", "bus number", "PIN", "ticket number", "house number", "badge number")
FILLER_TOPICS = (
    ("What is {a} plus {b}?", "{a} plus {b} is {c}."),
    ("Name a color that starts with the letter {l}.", "One color is {color}."),
    ("How many days are in {n} weeks?", "{n} weeks have {d} days."),
    ("Spell the word {w} backwards.", "{w} backwards is {r}."),
)
COLORS = {"b": "blue", "g": "green", "r": "red", "p": "purple", "y": "yellow", "o": "orange"}
WORDS = ("river", "planet", "garden", "window", "silver", "candle", "forest", "bridge")
CORPUS_CONVERSATIONS, CORPUS_MAX_TURNS = 20_000, 16


@dataclass
class Conversation:
    """The messages up to the final question, and the number the reply must contain."""

    messages: list[dict]
    answer: str


def filler(rng: random.Random) -> tuple[str, str]:
    """One unrelated question and its answer."""
    question, reply = rng.choice(FILLER_TOPICS)
    a, b, n, w = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9), rng.choice(WORDS)
    letter = rng.choice(sorted(COLORS))
    values = {"a": a, "b": b, "c": a + b, "l": letter.upper(), "color": COLORS[letter], "n": n, "d": 7 * n, "w": w,
              "r": w[::-1]}
    return question.format(**values), reply.format(**values)


def _opening(rng: random.Random, n_facts: int) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """The facts (person, thing, number) and the first exchange, which states them."""
    people = rng.sample(NAMES, n_facts)
    facts = [(p, rng.choice(THINGS), str(rng.randint(1000, 9999))) for p in people]
    told = " ".join(f"The {thing} of {person} is {number}." for person, thing, number in facts)
    return facts, [{"role": "user", "content": f"Please remember these facts. {told}"},
                   {"role": "assistant", "content": "Understood, I will remember them."}]


def _question(fact: tuple[str, str, str]) -> dict:
    person, thing, _ = fact
    return {"role": "user", "content": f"What is the {thing} of {person}? Reply with the number only."}


def _exchange(question: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def conversation(k: int, seed: int | str, n_facts: int = 3) -> Conversation:
    """Facts, k unrelated turns, then the question about one fact (deterministic for the seed)."""
    rng = random.Random(f"multiturn/{seed}")
    facts, messages = _opening(rng, n_facts)
    filler_rng = random.Random(f"multiturn/{seed}/fillers")
    for _ in range(k):
        messages += _exchange(*filler(filler_rng))
    fact = rng.choice(facts)
    return Conversation([*messages, _question(fact)], fact[2])


def training_conversation(seed: str, max_turns: int, n_facts: int = 3) -> list[dict]:
    """A whole conversation for training: facts, then up to `max_turns` turns, each an unrelated exchange or a
    question about a fact with its answer, ending with a question. Asking several times per conversation gives
    the lookup many more examples per token than the probe's single question would."""
    rng = random.Random(f"multiturn/{seed}")
    facts, messages = _opening(rng, n_facts)
    for _ in range(rng.randint(0, max_turns)):
        if rng.random() < 0.5:
            messages += _exchange(*filler(rng))
        else:
            fact = rng.choice(facts)
            messages += [_question(fact), {"role": "assistant", "content": fact[2]}]
    fact = rng.choice(facts)
    return [*messages, _question(fact), {"role": "assistant", "content": fact[2]}]


def plain_text(messages: list[dict]) -> str:
    """The conversation as "User: ... / Assistant: ..." lines, ending where the assistant's reply begins."""
    lines = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def prompt_ids(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """The conversation in the model's chat template, or in the plain format without one."""
    if tokenizer.chat_template:
        return tokenizer.encode(render_chat(tokenizer, messages))
    return encode_prompt(tokenizer, plain_text(messages))


def read_conversations(count: int = CORPUS_CONVERSATIONS, max_turns: int = CORPUS_MAX_TURNS):
    """The built-in corpus "conversations": training conversations (`training_conversation`) in the plain
    format, from seeds the probe never uses (its seeds are integers, these strings), so a model trained on them
    is probed on conversations it has not seen."""
    from lmforge.data.document import Document

    for i in range(count):
        messages = training_conversation(f"train-{i}", max_turns)
        yield Document(plain_text(messages[:-1]) + " " + messages[-1]["content"], f"conversations/{i}")


def is_right(reply: str, answer: str) -> bool:
    """Whether the reply states the number (as a whole number, not inside a longer one)."""
    return re.search(rf"(?<!\d){answer}(?!\d)", reply) is not None


def probe(llm: LLM, turns: list[int], conversations: int, max_tokens: int = 16, seed: int = 0) -> dict[int, float]:
    """Greedy accuracy for each number of unrelated turns k, over the same `conversations` seeds at every k;
    conversations longer than the model's context are left out of their k (and none left is None)."""
    limit = llm.engine.max_seq_len - max_tokens
    accuracy = {}
    for k in turns:
        convs = [conversation(k, seed + i) for i in range(conversations)]
        ids = [prompt_ids(llm.tokenizer, c.messages) for c in convs]
        kept = [(c, p) for c, p in zip(convs, ids) if len(p) <= limit]
        if not kept:
            accuracy[k] = None
            continue
        outs = llm.generate([p for _, p in kept], SamplingParams(max_tokens=max_tokens, temperature=0))
        accuracy[k] = sum(is_right(o.outputs[0].text, c.answer) for (c, _), o in zip(kept, outs)) / len(kept)
    return accuracy


def plot(results: dict[str, dict[int, float | None]], path) -> None:
    """Accuracy against the number of unrelated turns, one line per model."""
    from lmforge.plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4))
    for name, accuracy in results.items():
        ks = [k for k, a in accuracy.items() if a is not None]
        ax.plot(ks, [accuracy[k] for k in ks], marker="o", label=name)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("unrelated turns between the facts and the question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
