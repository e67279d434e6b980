"""Few-shot reasoning prompts: worked examples come from the train split and precede the problem in order."""

import pytest

from lmforge.errors import DataError
from lmforge.eval.reasoning import CHAT_INSTRUCTION, Item, few_shot, load_items, prompt_ids
from lmforge.eval.tasks import PLAIN_FORMAT, split_of


def test_worked_examples_are_train_problems_of_the_difficulty():
    shots = few_shot("arithmetic-words", 4, difficulty=2)
    assert len(shots) == 4 and len({s.prompt for s in shots}) == 4
    assert all(split_of(s) == "train" and s.solution.count(" = ") == 2 for s in shots)
    assert shots == few_shot("arithmetic-words", 4, difficulty=2)  # the same examples every time
    test_prompts = {i.prompt for i in load_items("arithmetic-words", None, "test", 200, 0, 2)}
    assert not test_prompts & {s.prompt for s in shots}
    assert few_shot(None, 0) == []
    with pytest.raises(DataError, match="give --task with --shots"):
        few_shot(None, 2)


def test_plain_prompt_shows_solved_problems_before_the_question(tokenizer):
    shots, item = few_shot("arithmetic", 2, difficulty=1), Item("Compute 2 + 3.", 5)
    text = tokenizer.decode(prompt_ids(tokenizer, item, False, shots))
    expected = "".join(PLAIN_FORMAT.format(prompt=s.prompt) + s.solution + "\n\n" for s in shots)
    assert text == expected + PLAIN_FORMAT.format(prompt=item.prompt)
    assert tokenizer.decode(prompt_ids(tokenizer, item, False)) == PLAIN_FORMAT.format(prompt=item.prompt)


def test_chat_prompt_gives_each_example_as_an_earlier_turn(tokenizer):
    shots, item = few_shot("arithmetic-words", 3, difficulty=1), Item("Ana has 2 cards. How many?", 2)
    text = tokenizer.decode(prompt_ids(tokenizer, item, True, shots))
    assert text.count("<|im_start|>user") == 4 and text.count("<|im_start|>assistant") == 4
    positions = [text.index(s.solution + "<|im_end|>") for s in shots]
    assert positions == sorted(positions) and text.index(item.prompt + CHAT_INSTRUCTION) > positions[-1]
    assert text.endswith("<|im_start|>assistant\n")


def test_run_asks_every_problem_after_the_examples(tokenizer):
    from test_think import engine

    from lmforge.eval.reasoning import run
    from lmforge.eval.think import think_at_n
    from lmforge.serve.params import SamplingParams

    shots, items = few_shot("arithmetic", 1, difficulty=1), [Item("Compute 2 + 3.", 5), Item("Compute 4 * 2.", 8)]
    params = SamplingParams(n=2, max_tokens=4, temperature=0, ignore_eos=True)
    votes = run(engine(tokenizer), items, params, False, shots, progress=False)
    direct = think_at_n(engine(tokenizer), [prompt_ids(tokenizer, i, False, shots) for i in items], params)
    assert [[s.text for s in v.samples] for v in votes] == [[s.text for s in v.samples] for v in direct]
    plain = run(engine(tokenizer), items, params, False, progress=False)
    assert [len(v.samples) for v in plain] == [2, 2]
