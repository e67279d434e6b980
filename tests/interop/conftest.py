"""A byte-level tokenizer with chat tokens and a ChatML template, for interop round trips."""

import pytest

from lmforge.data.readers import read_stdlib
from lmforge.tokenizer import Tokenizer

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="session")
def tokenizer():
    texts = [doc.text for _, doc in zip(range(40), read_stdlib())]
    tok = Tokenizer.train(texts, vocab_size=512)
    tok.hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return Tokenizer(tok.hf, add_bos=False, chat_template=CHATML)
