"""`lmforge eval dtr` and `lmforge eval think-at-n`: reasoning effort on a task's problems or a file of prompts.

Problems come from a synthetic task (`lmforge.eval.tasks`) or a file: JSON lines with "prompt" and, where known,
"answer" (an integer), or plain text, one prompt per line. A model trained on a task reads the task's own
format, "Problem: ...\nSolution:\n"; a chat model (`chat=True`) gets the problem as a user message asking for the
answer line the verifier reads. Either can be shown worked examples first (`few_shot`: the task's train-split
problems with their solutions), as few-shot chain-of-thought prompting does (Wei et al., arXiv 2201.11903): a
small chat model that rambles past the answer when only told the format follows it when shown it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lmforge.errors import DataError
from lmforge.eval.tasks import PLAIN_FORMAT, Problem, generate
from lmforge.eval.think import Vote, think_at_n
from lmforge.interop.chat import render_chat
from lmforge.serve.engine import LLMEngine
from lmforge.serve.llm import encode_prompt
from lmforge.serve.params import SamplingParams
from lmforge.tokenizer import Tokenizer

CHAT_INSTRUCTION = "\n\nWork it out step by step, one short line per step, and end with the line 'Answer: <integer>'."
SHOT_SEED = -1  # the worked examples' own draw from the train split, apart from the seeds problems are drawn with


@dataclass
class Item:
    """One prompt and, where known, its answer."""

    prompt: str
    answer: int | None = None


def load_items(task: str | None, prompts_file: str | None, split: str = "test", limit: int = 50, seed: int = 0,
               difficulty: int = 3) -> list[Item]:
    """The problems of a task's split, or the prompts of a file; at most `limit`."""
    if (task is None) == (prompts_file is None):
        raise DataError("give either --task or --prompts")
    if task is not None:
        try:
            return [Item(p.prompt, p.answer) for p in generate(task, split, limit, seed, difficulty)]
        except ValueError as e:
            raise DataError(str(e)) from None
    path = Path(prompts_file)
    if not path.is_file():
        raise DataError(f"prompts file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
                answer = row.get("answer")
                items.append(Item(str(row["prompt"]), None if answer is None else int(answer)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise DataError(f"{path}:{number}: a JSON line needs a string 'prompt' and an optional integer "
                                "'answer'") from None
        else:
            items.append(Item(line))
        if len(items) == limit:
            break
    if not items:
        raise DataError(f"{path} holds no prompts")
    return items


def few_shot(task: str | None, shots: int, difficulty: int = 3) -> list[Problem]:
    """`shots` worked examples of `task` at `difficulty`, from its train split (so never a test problem)."""
    if shots == 0:
        return []
    if task is None:
        raise DataError("worked examples come from a task's train split: give --task with --shots")
    try:
        return generate(task, "train", shots, SHOT_SEED, difficulty)
    except ValueError as e:
        raise DataError(str(e)) from None


def prompt_ids(tokenizer: Tokenizer, item: Item, chat: bool, shots: list[Problem] = ()) -> list[int]:
    """Token ids of a problem as the model is asked it, after the worked examples `shots`: earlier chat turns,
    or solved problems in the task format."""
    if chat:
        messages = []
        for shot in shots:
            messages += [{"role": "user", "content": shot.prompt + CHAT_INSTRUCTION},
                         {"role": "assistant", "content": shot.solution}]
        messages.append({"role": "user", "content": item.prompt + CHAT_INSTRUCTION})
        return tokenizer.encode(render_chat(tokenizer, messages))
    solved = "".join(PLAIN_FORMAT.format(prompt=shot.prompt) + shot.solution + "\n\n" for shot in shots)
    return encode_prompt(tokenizer, solved + PLAIN_FORMAT.format(prompt=item.prompt))


def run(engine: LLMEngine, items: list[Item], params: SamplingParams, chat: bool, shots: list[Problem] = (),
        progress: bool = True) -> list[Vote]:
    """Every item's n samples through the engine under `params.think` (None: plain sampling), each asked after
    the worked examples `shots`, with a progress bar over the most tokens they can generate."""
    prompts = [prompt_ids(engine.tokenizer, item, chat, shots) for item in items]
    bound = len(items) * params.n * (params.max_tokens or engine.max_seq_len)
    with tqdm(total=bound, unit="tok", desc=f"{params.think or 'sample'} n={params.n}", disable=not progress) as bar:
        return think_at_n(engine, prompts, params, progress=bar.update)


def sample_rows(items: list[Item], votes: list[Vote]) -> list[dict]:
    """One row per sample: the prompt, its text, answer, correctness and signals."""
    rows = []
    for i, (item, vote) in enumerate(zip(items, votes)):
        for s in vote.samples:
            correct = None if item.answer is None or not s.kept else s.answer == item.answer
            rows.append({"problem": i, "prompt": item.prompt, "expected": item.answer, "correct": correct, **asdict(s)})
    return rows


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r of two equal-length lists (None when either is constant or too short)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def dtr_report(rows: list[dict]) -> str:
    """Mean DTR and, where answers are known, accuracy and each signal's correlation with correctness."""
    scored = [r for r in rows if r["dtr"] is not None]
    lines = [f"{len(scored)} samples, mean DTR {sum(r['dtr'] for r in scored) / max(len(scored), 1):.3f}, "
             f"mean length {sum(r['tokens'] for r in scored) / max(len(scored), 1):.1f} tokens"]
    judged = [r for r in scored if r["correct"] is not None]
    if judged:
        correct = [float(r["correct"]) for r in judged]
        lines.append(f"accuracy {sum(correct) / len(correct):.3f} over {len(judged)} samples; Pearson r with correctness:")
        for name, key in (("DTR", "dtr"), ("length", "tokens"), ("mean log-probability", "logprob"),
                          ("self-certainty", "certainty")):
            r = pearson([float(row[key]) for row in judged], correct)
            lines.append(f"  {name:22s} {'n/a (constant)' if r is None else f'{r:+.3f}'}")
    return "\n".join(lines)


def think_report(items: list[Item], results: dict[str, list[Vote]]) -> str:
    """Per rule: accuracy of the vote (where answers are known) and generated tokens per problem."""
    lines = [f"{'rule':10s} {'accuracy':>9s} {'tokens/problem':>15s}"]
    for rule, votes in results.items():
        known = [(item, vote) for item, vote in zip(items, votes) if item.answer is not None]
        accuracy = f"{sum(v.answer == i.answer for i, v in known) / len(known):.3f}" if known else "n/a"
        tokens = sum(v.tokens for v in votes) / len(votes)
        lines.append(f"{rule:10s} {accuracy:>9s} {tokens:>15.1f}")
    return "\n".join(lines)
