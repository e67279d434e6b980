import pytest

from lmforge.errors import GenerationError
from lmforge.interop.chat import render_chat
from lmforge.tokenizer import Tokenizer


def test_chatml_rendering(tokenizer):
    text = render_chat(tokenizer, [{"role": "user", "content": "What is 2+2?"}])
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.hf.token_to_id("<|im_start|>")


def test_missing_or_failing_template(tokenizer):
    with pytest.raises(GenerationError, match="no chat template"):
        render_chat(Tokenizer(tokenizer.hf), [{"role": "user", "content": "x"}])
    broken = Tokenizer(tokenizer.hf, chat_template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(GenerationError, match="roles must alternate"):
        render_chat(broken, [{"role": "user", "content": "x"}])
