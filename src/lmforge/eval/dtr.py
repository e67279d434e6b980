"""Deep-Thinking Ratio: the share of generated tokens whose prediction settles only in the model's deepest
layers (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517).

For generated token t and block l = 1..L the logit lens gives p_{t,l} = softmax(W_U norm(h_{t,l})): the model's
own final norm and output head applied to the residual stream after block l, at the position that sampled t.
D_{t,l} = JSD(p_{t,L}, p_{t,l}) in bits (between 0 and 1). The settling depth c_t is the first layer l with
min_{j<=l} D_{t,j} <= g, i.e. the first whose divergence is at most g (the last layer's is 0, so every token
settles); t is deep-thinking when c_t >= ceil(rho L), and DTR is the share of deep-thinking tokens.

`settling_depths` is the reference: every layer's whole distribution in float64. `token_signals` is the fast path
the engine runs: a token is deep exactly when no layer below the cut settles, so it looks at the layer just
below the cut first (where a shallow token has almost always settled) and at the other layers only for the
tokens still open, in one float32 product per group of rows, never holding more than `max_rows` distributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.model.transformer import Transformer

LN2 = math.log(2.0)
SIGNAL_NAMES = ("dtr", "logprob", "certainty")  # the meter's per-token signals, in order


@dataclass(frozen=True)
class DTRConfig:
    """The settling threshold g (bits of Jensen-Shannon divergence) and the depth fraction rho of the deep
    regime; the defaults are the paper's best trade-off."""

    threshold: float = 0.5
    depth: float = 0.85

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"the settling threshold is a divergence in bits, between 0 and 1; got {self.threshold}")
        if not 0 < self.depth <= 1:
            raise ValueError(f"the depth fraction must be in (0, 1]; got {self.depth}")

    def cut(self, n_layers: int) -> int:
        """The first layer of the deep regime, ceil(rho L)."""
        return math.ceil(self.depth * n_layers - 1e-9)


def jsd_bits(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits between the distributions of log-probabilities over the last dim."""
    logm = torch.logaddexp(logp, logq) - LN2

    def kl_to_m(log_a: torch.Tensor) -> torch.Tensor:
        a = log_a.exp()
        return torch.where(a > 0, a * (log_a - logm), torch.zeros_like(a)).sum(-1)

    return 0.5 * (kl_to_m(logp) + kl_to_m(logq)) / LN2


def head_matrix(model: Transformer) -> torch.Tensor:
    """The output head as a dense [V, D] matrix (a quantized head dequantized)."""
    head = model.head
    return head.dequantize() if hasattr(head, "dequantize") else model.output_weight


@torch.no_grad()
def settling_depths(model: Transformer, hiddens: list[torch.Tensor], config: DTRConfig = DTRConfig()) -> torch.Tensor:
    """Reference: each row's settling depth c_t (1..L) from the residual streams [N, D] after blocks 1..L,
    every layer's whole lens distribution in float64."""
    weight = head_matrix(model).double()
    gain, eps = model.norm.weight.double(), model.norm.eps
    logps = [F.log_softmax(F.linear(F.rms_norm(h.double(), (h.shape[-1],), gain, eps), weight), -1) for h in hiddens]
    divergence = torch.stack([jsd_bits(logps[-1], lp) for lp in logps], 1)  # [N, L]
    return (divergence <= config.threshold).int().argmax(1) + 1


def lens_log_probs(model: Transformer, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 log-probabilities of the logit lens on residual-stream rows [R, D]: the model's norm and head."""
    return F.log_softmax(model.logits(model.norm(hidden)).float(), -1)


@dataclass
class TokenSignals:
    """Per generated token: deep-thinking or not, the sampled token's log-probability under the model's own
    distribution, and self-certainty, KL(uniform || p) in nats (Kang et al., arXiv 2502.18581): the rules
    Think@n is compared against read the last two."""

    deep: torch.Tensor
    logprob: torch.Tensor
    certainty: torch.Tensor


@torch.no_grad()
def token_signals(model: Transformer, hiddens: torch.Tensor, tokens: torch.Tensor, config: DTRConfig = DTRConfig(),
                  max_rows: int = 256) -> TokenSignals:
    """Fast path: the signals of tokens [N] from their residual streams [L, N, D] after blocks 1..L.

    A token is deep exactly when every layer below the cut has divergence above g. The final layer and the
    layer just below the cut go through the head together; only tokens unsettled there have their other
    layers computed, at most `max_rows` lens rows per product.
    """
    n_layers, n = hiddens.shape[:2]
    cut = config.cut(n_layers)
    below = cut - 2  # index of layer cut - 1; the layers before it are hiddens[:below]
    per_group, per_token = max(max_rows // 2, 1), max(max_rows // max(below, 1), 1)
    out = TokenSignals(torch.ones(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n))
    for a in range(0, n, per_group):
        group = hiddens[:, a:a + per_group]
        final, near = lens_log_probs(model, torch.cat([group[-1], group[below if cut > 1 else -1]])).chunk(2)
        b = a + len(final)
        out.logprob[a:b] = final.gather(1, tokens[a:b, None].to(final.device))[:, 0]
        out.certainty[a:b] = -final.mean(-1) - math.log(final.shape[-1])
        if cut <= 1:
            continue  # no layer lies below the deep regime: every token settles inside it
        open_ = jsd_bits(final, near) > config.threshold
        ids = open_.nonzero().squeeze(1) if below else ()
        for c in range(0, len(ids), per_token):
            sel = ids[c:c + per_token]
            logp = lens_log_probs(model, group[:below, sel].reshape(-1, group.shape[-1])).view(below, len(sel), -1)
            open_[sel[(jsd_bits(final[sel].unsqueeze(0), logp) <= config.threshold).any(0)]] = False
        out.deep[a:b] = open_
    return out


class DeepThinkingMeter:
    """Per-token signals (deep-thinking, log-probability, self-certainty) of what the engine generates, from
    the hidden states its observer hands over (`engine.observer = meter`): the rows of a step are kept until
    the sequence is seen to have sampled from them, and evaluated `batch_tokens` tokens at a time, so the lens
    runs as few, larger products.

    A request's samples share the prompt's last position (they fork after it), so its rows are kept once per
    request and evaluated with each sample's own first token.
    """

    def __init__(self, model: Transformer, config: DTRConfig = DTRConfig(), batch_tokens: int = 32):
        self.model, self.config, self.batch_tokens = model, config, batch_tokens
        self.n_layers = model.cfg.n_layers
        self._pending: dict[int, tuple[object, int, list[torch.Tensor]]] = {}  # seq_id -> (seq, its length, rows)
        self._first_rows: dict[str, torch.Tensor] = {}  # request_id -> rows [L, D] of the prompt's last position
        self._queue: list[tuple[object, torch.Tensor, int]] = []  # (key, rows [L, D], the token sampled from them)
        self._signals: dict[object, list[tuple[bool, float, float]]] = {}  # key -> [(deep, logprob, certainty)]

    def __call__(self, seq, layer: int, hidden: torch.Tensor) -> None:
        if layer == 0 or not seq.params.wants_signals:
            return
        if layer == 1:
            self._settle(seq.seq_id)
            if len(self._queue) >= self.batch_tokens:
                self._evaluate()
            self._pending[seq.seq_id] = (seq, len(seq), [])
        self._pending[seq.seq_id][2].append(hidden[-1])

    def _settle(self, seq_id: int) -> None:
        """Move the pending rows of `seq_id` to the queue once the sequence has sampled a token from them (rows it
        did not sample from are replaced by its next step's)."""
        seq, length, rows = self._pending.get(seq_id, (None, 0, []))
        if seq is None or len(seq) <= length or len(rows) != self.n_layers:
            return
        del self._pending[seq_id]
        if length == seq.num_prompt_tokens:
            self._first_rows[seq.request_id] = torch.stack(rows)
        else:
            self._queue.append((seq_id, torch.stack(rows), seq.token_ids[length]))

    def _evaluate(self) -> None:
        if not self._queue:
            return
        hiddens = torch.stack([rows for _, rows, _ in self._queue], 1)
        signals = token_signals(self.model, hiddens, torch.tensor([t for _, _, t in self._queue]), self.config)
        per_token = zip(signals.deep.tolist(), signals.logprob.tolist(), signals.certainty.tolist())
        for (key, _, _), values in zip(self._queue, per_token):
            self._signals.setdefault(key, []).append(values)
        self._queue.clear()

    def signals(self, seq) -> list[tuple[bool, float, float]]:
        """(deep, logprob, certainty) of each token `seq` has generated so far, in order."""
        for seq_id in list(self._pending):
            self._settle(seq_id)
        first = ("first", seq.seq_id)
        if first not in self._signals and seq.request_id in self._first_rows and len(seq) > seq.num_prompt_tokens:
            self._queue.append((first, self._first_rows[seq.request_id], seq.token_ids[seq.num_prompt_tokens]))
        self._evaluate()
        return self._signals.get(first, []) + self._signals.get(seq.seq_id, [])

    def flags(self, seq) -> list[bool]:
        """The deep-thinking flag of each token `seq` has generated so far."""
        return [deep for deep, _, _ in self.signals(seq)]

    def summary(self, seq) -> dict[str, float] | None:
        """Over `seq`'s generated tokens so far: its DTR, mean log-probability and mean self-certainty (None
        before its first token)."""
        signals = self.signals(seq)
        if not signals:
            return None
        return {name: sum(float(t[i]) for t in signals) / len(signals) for i, name in enumerate(SIGNAL_NAMES)}

    def release(self, request_id: str, seq_ids: list[int]) -> None:
        """Forget a finished request's rows and signals."""
        self._first_rows.pop(request_id, None)
        for seq_id in seq_ids:
            self._signals.pop(("first", seq_id), None)
            self._signals.pop(seq_id, None)
            self._pending.pop(seq_id, None)
