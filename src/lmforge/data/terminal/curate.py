"""Trajectory curation: which agent runs become fine-tuning conversations, and why the others do not.

The filters of "On Data Engineering for Scaling LLM Terminal Capabilities" (Pi, Lam et al., 2026,
arXiv 2602.21193): decontamination by word 14-grams against held-out tasks, incomplete runs (the agent
never finished: out of turns or time, a dead shell, a teacher error, a sandbox breach), looping runs
(the same commands turn after turn) and identity leaks (a teacher naming itself). Runs that finished but
failed verification are kept by default: the paper found that keeping them trains a better agent than
keeping only the successful ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lmforge.data.decontaminate import Decontaminate
from lmforge.data.document import Document
from lmforge.data.terminal.task import TerminalTask

DECONTAMINATION_N = 14
LOOP_REPEATS = 3  # the same commands in this many consecutive turns make a run "looping"
IDENTITY = re.compile(r"\b(?:as an ai (?:language )?model|i am (?:chatgpt|claude|gpt-?\d\w*|gemini|qwen|llama|deepseek)|"
                      r"(?:openai|anthropic|google|alibaba|meta|deepseek) (?:trained|created|built|developed) me)\b", re.I)


def task_text(task: TerminalTask) -> str:
    """What a held-out task shows a model (its instruction and files): the text decontamination searches for."""
    return "\n".join([task.instruction, *task.files.values()])


def _commands(message: str) -> str | None:
    start, end = message.find("{"), message.rfind("}")
    try:
        data = json.loads(message[start:end + 1])
        return json.dumps(data["commands"], sort_keys=True)
    except (ValueError, KeyError, TypeError):
        return None


def looping(messages: list[dict], repeats: int = LOOP_REPEATS) -> bool:
    """Whether the assistant sent the same non-empty commands in `repeats` consecutive turns."""
    run, previous = 0, None
    for message in messages:
        if message["role"] != "assistant":
            continue
        commands = _commands(message["content"])
        run = run + 1 if commands is not None and commands == previous and commands != "[]" else 1
        previous = commands
        if run >= repeats:
            return True
    return False


@dataclass
class Curator:
    """Decides, for each trajectory record (`Episode.to_dict()`), None (keep) or the reason it is dropped."""

    held_out: list[str]
    keep_failed: bool = True

    def __post_init__(self) -> None:
        self._contamination = Decontaminate(texts=list(self.held_out), n=DECONTAMINATION_N) if self.held_out else None

    def reject(self, record: dict) -> str | None:
        if record["ended"] != "complete":
            return f"incomplete ({record['ended'].split(':', 1)[0]})"
        if not self.keep_failed and record["score"] < 1.0:
            return "failed verification"
        assistant = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        if any(IDENTITY.search(text) for text in assistant):
            return "identity leak"
        if looping(record["messages"]):
            return "looping"
        if self._contamination is not None:
            text = "\n".join(m["content"] for m in record["messages"] if m["role"] != "system")
            if self._contamination.reject(Document(text=text, id=record["task"])):
                return "contaminated"
        return None


def conversation(record: dict) -> dict:
    """A kept trajectory as a chat fine-tuning example: the messages, with the task's labels beside them."""
    return {"messages": record["messages"], "task": record["task"], "family": record["family"],
            "domain": record["domain"], "skills": record["skills"], "score": record["score"]}
