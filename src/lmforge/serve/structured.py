"""Structured outputs: generation constrained to a JSON schema, a regular expression, a list of choices or a grammar.

A request's `Constraint` compiles, through llguidance (Moskal et al., guidance-ai/llguidance: an Earley
parser over a lexer, with the token trie walked per step), into a matcher that knows, before each
token, which tokens of the vocabulary keep the output valid. The sampler turns every constrained
row's bitmask into -inf logits (constrained and free rows share a batch), and the engine feeds the
matcher each sampled token and finishes the sample once the grammar is complete.

llguidance was chosen over XGrammar by measurement on CPU (`benchmarks/structured.py`): it compiles a
schema several times faster (the time a new schema adds to the first token), needs no other package,
and its masks, slower than XGrammar's precomputed ones, take tens of microseconds against a decode step
of tens of milliseconds. A constraint is compiled once and kept (least recently used out): a sequence
gets a copy of the compiled matcher, so a schema seen before costs a copy.

JSON is generated compact, with the separators `json.dumps` writes (", " and ": ") and no other
whitespace: free whitespace lets a small model pad its output with newlines until max_tokens.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lmforge.errors import GenerationError
from lmforge.tokenizer import Tokenizer

KINDS = ("json", "regex", "choice", "grammar")
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_BITS = 1 << torch.arange(8, dtype=torch.uint8)


@dataclass(frozen=True)
class Constraint:
    """What a request's output must match. `value` is text, so equal constraints share one compiled grammar:
    json: a JSON schema (as compact JSON text); regex: a regular expression the whole output matches;
    choice: a JSON list of the allowed outputs; grammar: a Lark grammar (llguidance's dialect) or GBNF."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GenerationError(f"unknown constraint kind {self.kind!r}; choose one of {', '.join(KINDS)}")

    @classmethod
    def json_schema(cls, schema: dict | str | bool) -> "Constraint":
        """A JSON schema given as an object or as JSON text."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GenerationError(f"the JSON schema is not valid JSON: {e}") from None
        if not isinstance(schema, (dict, bool)):
            raise GenerationError("a JSON schema must be an object")
        return cls("json", json.dumps(schema, separators=(",", ":")))  # key order kept: it is the order of generation

    @classmethod
    def choice(cls, choices: list[str]) -> "Constraint":
        """Exactly one of the given strings."""
        if not choices or not all(isinstance(c, str) and c for c in choices):
            raise GenerationError("choice needs a list of non-empty strings")
        return cls("choice", json.dumps(list(choices)))

    def grammar(self) -> str:
        """The constraint as llguidance grammar text."""
        from llguidance import LLMatcher
        from llguidance.gbnf_to_lark import gbnf_to_lark

        if self.kind == "json":
            try:
                return LLMatcher.grammar_from_json_schema(self.value, defaults=JSON_OPTIONS)
            except ValueError as e:
                raise GenerationError(f"the JSON schema is not usable: {e}") from None
        if self.kind == "regex":
            return LLMatcher.grammar_from_regex(self.value)
        if self.kind == "choice":  # JSON string literals are Lark string literals
            return LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in json.loads(self.value)))
        text = gbnf_to_lark(self.value) if "::=" in self.value else self.value
        return LLMatcher.grammar_from_lark(text)


class GrammarCache:
    """Compiled constraints for one tokenizer and vocabulary width, shared by every request.

    `compile` checks a constraint (a GenerationError says what is wrong with it) and keeps its
    matcher; `matcher` hands out a fresh copy for one sequence. Thread-safe: the server compiles on its
    request threads (llguidance releases the GIL while it builds a grammar) and the engine copies.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, capacity: int = 256):
        self.tokenizer, self.vocab_size, self.capacity = tokenizer, vocab_size, capacity
        self._compiled: OrderedDict[Constraint, object] = OrderedDict()
        self._lock = threading.Lock()
        self._lltokenizer = None

    def lltokenizer(self):
        """llguidance's view of the tokenizer (about half a second to build; built once, on first use)."""
        with self._lock:
            if self._lltokenizer is None:
                from llguidance import LLTokenizer

                self._lltokenizer = LLTokenizer(self.tokenizer.hf.to_str(), n_vocab=self.vocab_size,
                                                eos_token=self.tokenizer.eos_id)
            return self._lltokenizer

    def compile(self, constraint: Constraint):
        """The compiled matcher of `constraint` in its initial state (not to be advanced: see `matcher`)."""
        with self._lock:
            if constraint in self._compiled:
                self._compiled.move_to_end(constraint)
                return self._compiled[constraint]
        from llguidance import LLMatcher

        tokenizer = self.lltokenizer()
        matcher = LLMatcher(tokenizer, constraint.grammar(), log_level=0)
        if matcher.is_error():
            raise GenerationError(f"the {constraint.kind} constraint cannot be compiled: {first_line(matcher.get_error())}")
        with self._lock:
            self._compiled[constraint] = matcher
            while len(self._compiled) > self.capacity:
                self._compiled.popitem(last=False)
        return matcher

    def matcher(self, constraint: Constraint):
        """A fresh matcher of `constraint` for one sequence."""
        return self.compile(constraint).deep_copy()


def first_line(message: str) -> str:
    return next((line.strip() for line in message.splitlines() if line.strip()), "invalid")


def allowed_tokens(matchers: list, vocab_size: int) -> torch.Tensor | None:
    """[M, V] booleans: the tokens each row's matcher allows next (every token for a row without one);
    None when no row is constrained. One bitmask per row from llguidance, unpacked by broadcasting."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return None
    words = (vocab_size + 31) // 32
    bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
    for i in rows:
        row = bitmask[i]
        matchers[i].unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())
    # token t is bit t % 32 of word t // 32; the words are little-endian, so byte t // 8, bit t % 8
    bits = (bitmask.view(torch.uint8)[:, :, None] & _BITS) != 0
    return bits.flatten(1)[:, :vocab_size]


def allowed_tokens_reference(matcher, vocab_size: int) -> set[int]:
    """The tokens one matcher allows next, read bit by bit from its mask bytes; the reference of `allowed_tokens`."""
    mask = matcher.compute_bitmask()
    return {t for t in range(vocab_size) if mask[t // 8] >> (t % 8) & 1}
