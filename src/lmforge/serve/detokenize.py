"""Generated tokens to streamed text: complete UTF-8 only, special tokens skipped, stop strings matched across tokens.

A token may end in the middle of a UTF-8 character, and a stop string may be spread over
several tokens, so text cannot be emitted token by token as it is decoded. The detokenizer
emits a character once its bytes are complete (`tokenizer.StreamDecoder`) and once it can no
longer be the start of a stop string: it holds back the longest tail of the text that is a
prefix of some stop string. The stop found is the one that completes first in the text
(ties: the one starting earliest), so the result does not depend on how the tokens were
grouped into pushes. Stop strings behave as in OpenAI's and vLLM's APIs: the text ends
before the stop string, or after it with `include_stop_str_in_output`.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from lmforge.serve.params import SamplingParams
from lmforge.tokenizer import Tokenizer


class Delta(NamedTuple):
    """Text to emit now, and the stop string that ended the text (None while it goes on)."""

    text: str
    stop: str | None = None


class IncrementalDetokenizer:
    """Text of one sequence's generated tokens, piece by piece.

    Push each step's new token ids and emit the returned text; after the last token (or on a
    stop token, which is not pushed) call `flush` for the text held back. Once a stop string
    is found (`stop`) the text is over: later pushes and the flush return nothing. The
    emitted pieces always concatenate to `text`.
    """

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams):
        self._tokenizer = tokenizer
        self._decoder = tokenizer.stream_decoder()
        self._skip_special = params.skip_special_tokens
        self._stops = params.stop
        self._include_stop = params.include_stop_str_in_output
        self._held = ""  # decoded text that may be the start of a stop string
        self.text = ""  # everything emitted so far
        self.stop: str | None = None  # the stop string found, if any

    def push(self, token_ids: Iterable[int]) -> Delta:
        """The text that became final with these tokens, and the stop string if one completed."""
        if self.stop is not None:
            return Delta("")
        ids = [t for t in token_ids if not (self._skip_special and self._tokenizer.is_special(t))]
        return self._emit(self._decoder.push(ids), final=False)

    def flush(self) -> str:
        """At the end of generation: the held-back text (an incomplete UTF-8 tail becomes U+FFFD).

        The tail is still searched for stop strings (one may contain U+FFFD); `stop` tells."""
        if self.stop is not None:
            return ""
        return self._emit(self._decoder.flush(), final=True).text

    def _emit(self, new: str, final: bool) -> Delta:
        pending = self._held + new
        found = self._first_stop(pending)
        if found is not None:
            start, stop = found
            self.stop, self._held = stop, ""
            return self._release(pending[: start + len(stop) if self._include_stop else start], stop)
        keep = 0 if final else self._stop_prefix_length(pending)
        self._held = pending[len(pending) - keep :]
        return self._release(pending[: len(pending) - keep], None)

    def _release(self, text: str, stop: str | None) -> Delta:
        self.text += text
        return Delta(text, stop)

    def _first_stop(self, text: str) -> tuple[int, str] | None:
        """(start, stop string) of the stop string that ends first in `text` (ties: the earliest start)."""
        hits = [(i + len(s), i, s) for s in self._stops if (i := text.find(s)) >= 0]
        if not hits:
            return None
        _, start, stop = min(hits)
        return start, stop

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest tail of `text` that some stop string starts with (0 if none)."""
        longest = max((len(s) - 1 for s in self._stops), default=0)
        for n in range(min(longest, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0
