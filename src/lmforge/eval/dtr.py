"""Deep-Thinking Ratio: the share of generated tokens whose prediction settles only in the model's deepest
layers (Chen et al., "Think Deep, Not Just Long", arXiv 2602.13517).

For generated token t and block l = 1..L the logit lens gives p_{t,l} = softmax(W_U norm(h_{t,l})): the model's
own final norm and output head applied to the residual stream after block l, at the position that sampled t.
D_{t,l} = JSD(p_{t,L}, p_{t,l}) in bits (between 0 and 1). The settling depth c_t is the first layer l with
min_{j<=l} D_{t,j} <= g, i.e. the first whose divergence is at most g (the last layer's is 0, so every token
settles); t is deep-thinking when c_t >= ceil(rho L), and DTR is the share of deep-thinking tokens.

`settling_depths` is the reference: every layer's whole distribution in float64. `token_signals` is the fast path
the engine runs: a token is deep exactly when no layer below the cut settles, so it first proves, from a few
logits per layer, which layers lie above g (a lower bound on the divergence), then looks over the whole
vocabulary only at the layers left: the one just below the cut first (where a shallow token has almost always
settled), the others only for tokens still open, never holding more than `max_rows` distributions.
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
    """Jensen-Shannon divergence in bits between the distributions of log-probabilities over the last dim, as
    H(m) - (H(p) + H(q)) / 2 with m = (p + q) / 2: a few passes over the vocabulary, no log of the mixture's
    log-sum."""
    p, q = logp.exp(), logq.exp()

    def neg_entropy(log_a: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (a * log_a.clamp_min(torch.finfo(log_a.dtype).min)).sum(-1)  # 0 log 0 = 0

    mixture_entropy = torch.special.entr((p + q) * 0.5).sum(-1)
    return (mixture_entropy + 0.5 * (neg_entropy(logp, p) + neg_entropy(logq, q))) / LN2


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


@dataclass
class TokenSignals:
    """Per generated token: deep-thinking or not, the sampled token's log-probability under the model's own
    distribution, and self-certainty, KL(uniform || p) in nats (Kang et al., arXiv 2502.18581): the rules
    Think@n is compared against read the last two."""

    deep: torch.Tensor
    logprob: torch.Tensor
    certainty: torch.Tensor


def binary_jsd_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits between Bernoulli(a) and Bernoulli(b)."""

    def entropy(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0, 1)
        return -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)) / LN2

    return entropy((a + b) / 2) - (entropy(a) + entropy(b)) / 2


class LensHead:
    """The output head as the logit lens needs it: the dense matrix, the sum of its rows, and the model's norm."""

    def __init__(self, model: Transformer):
        self.model, self.weight = model, head_matrix(model).detach().float()
        self.row_sum = self.weight.sum(0)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 log-probabilities of the logit lens on residual-stream rows [R, D]: the model's norm, then its
        head in float32 whatever the model runs in, as the lower bound computes its logits."""
        return F.log_softmax(F.linear(self.model.norm(hidden).float(), self.weight), -1)

    @torch.no_grad()
    def divergence_lower_bound(self, hidden: torch.Tensor, final: torch.Tensor, k: int = 256,
                               enough: float = math.inf, newton_steps: int = 12) -> torch.Tensor:
        """A lower bound on D_{t,l} for residual streams [L', N, D] against the final log-probabilities [N, V],
        from k lens logits per row instead of V.

        With S the final distribution's top k tokens, merging the vocabulary into the cells {each token of S,
        the rest} cannot raise the divergence. The lens logits of S fix how the lens splits its mass u on S
        among S's tokens; u itself is at most E / Z_low, where E = sum_S exp(z) and Z_low = E + (V - k) exp(mean
        of the other logits) <= Z by Jensen's inequality (the other logits' mean comes from the row sum of the
        head, one dot product). Two bounds follow. The cheap one merges further, into {S_j, the rest} for the
        final top j, where the divergence only falls as u rises towards the final mass, so it holds at u's
        upper bound; the best j is taken. Where it does not exceed `enough`, the tight one keeps every cell: the
        cells' lens probabilities are affine in u and the divergence is jointly convex, so the divergence over
        the cells is convex in u, Newton's method approaches its minimum over [0, u_max], and the tangent at the
        point reached bounds that minimum from below wherever it lies. Most deep-thinking tokens (whose early
        layers put little mass where the final layer does) are decided without the lens over the vocabulary.
        """
        vocab = final.shape[-1]
        k = min(k, vocab - 1)
        top_logp, top = final.topk(k, -1)  # [N, k], sorted
        normed = self.model.norm(hidden).float()
        z = torch.einsum("lnd,nkd->lnk", normed, self.weight[top]).double()  # [L', N, k]
        rest_mean = ((normed @ self.row_sum).double() - z.sum(-1)) / (vocab - k)
        log_z_low = torch.logaddexp(z.logsumexp(-1), math.log(vocab - k) + rest_mean)  # [L', N]
        upper = (z.logcumsumexp(-1) - log_z_low.unsqueeze(-1)).exp()  # lens mass of S_j, at most
        p = top_logp.double().exp()
        mass = p.cumsum(-1).expand_as(upper)  # final mass of S_j
        bound = torch.where(upper < mass, binary_jsd_bits(mass, upper), torch.zeros_like(upper)).amax(-1)
        tight = (bound <= enough).nonzero(as_tuple=True)
        if tight[0].numel():
            u_max = upper[..., -1][tight]
            cells = cell_divergence_minimum(p[tight[1]], z[tight].softmax(-1), u_max, newton_steps)
            bound[tight] = torch.maximum(bound[tight], cells)  # both hold; the tangent can trail a slow Newton
        return bound


def cell_divergence_minimum(p: torch.Tensor, split: torch.Tensor, u_max: torch.Tensor, steps: int) -> torch.Tensor:
    """A lower bound, in bits, on min over u in [0, u_max] of the divergence between the final distribution's
    cells (p [M, k] on S, 1 - sum p on the rest) and the lens's (u * split on S, 1 - u on the rest): f is convex
    in u, so after Newton's steps the tangent at u bounds f on the side where its minimum lies."""
    p_rest = (1 - p.sum(-1)).clamp_min(0)
    u = torch.minimum(p.sum(-1), u_max).clamp_min(u_max * 1e-6)

    def terms(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, q_rest = u[:, None] * split, 1 - u
        m, m_rest = (p + q) / 2, (p_rest + q_rest) / 2
        f = 0.5 * ((torch.xlogy(p, p / m) + torch.xlogy(q, q / m)).sum(-1)
                   + torch.xlogy(p_rest, p_rest / m_rest) + torch.xlogy(q_rest, q_rest / m_rest))
        slope = 0.5 * (torch.xlogy(split, q / m).sum(-1) - (q_rest / m_rest).log())
        curve = 0.5 * ((split * p / (u[:, None] * (p + q))).sum(-1) + p_rest / (q_rest * (p_rest + q_rest)))
        return f, slope, curve

    for _ in range(steps):
        _, slope, curve = terms(u)
        u = (u - slope / curve).nan_to_num(0.0).clamp(u_max * 1e-6, u_max)
    f, slope, _ = terms(u)
    reach = torch.where(slope > 0, u, u_max - u)  # how far the minimum can lie from u
    return (f - slope.abs() * reach).clamp_min(0) / LN2


@torch.no_grad()
def token_signals(model: Transformer | LensHead, hiddens: torch.Tensor, tokens: torch.Tensor,
                  config: DTRConfig = DTRConfig(), max_rows: int = 256, final_logits: torch.Tensor | None = None,
                  margin: float = 1e-3) -> TokenSignals:
    """Fast path: the signals of tokens [N] from their residual streams [L, N, D] after blocks 1..L (and, when
    the caller has them, the model's own logits [N, V] at those positions, so the final lens is not redone).

    A token is deep exactly when every layer below the cut has divergence above g. Layers the lower bound
    (`LensHead.divergence_lower_bound`, with `margin` bits to spare for rounding) proves above g need no lens;
    of the others, the one nearest the cut (where a shallow token has almost always settled) is looked at
    first, and the rest only for tokens still open, at most `max_rows` whole-vocabulary lens rows per product.
    """
    lens = model if isinstance(model, LensHead) else LensHead(model)
    n_layers, n = hiddens.shape[:2]
    below = config.cut(n_layers) - 1  # layers 1..cut-1 lie below the deep regime: hiddens[:below]
    out = TokenSignals(torch.ones(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n))
    for a in range(0, n, max_rows):
        b = min(a + max_rows, n)
        group = hiddens[:, a:b]
        final = (F.log_softmax(final_logits[a:b].float(), -1) if final_logits is not None
                 else lens.log_probs(group[-1]))
        out.logprob[a:b] = final.gather(1, tokens[a:b, None].to(final.device))[:, 0]
        out.certainty[a:b] = -final.mean(-1) - math.log(final.shape[-1])
        if below == 0:
            continue  # no layer lies below the deep regime: every token settles inside it
        enough = config.threshold + margin
        unknown = lens.divergence_lower_bound(group[:below], final, enough=enough) <= enough  # [below, n]
        deep = out.deep[a:b]

        def settle(layer: torch.Tensor, token: torch.Tensor) -> None:
            """Whole-vocabulary lens of (layer, token) pairs; a token settled at any of them is not deep."""
            for c in range(0, len(token), max_rows):
                rows = group[layer[c:c + max_rows], token[c:c + max_rows]]
                settled = jsd_bits(final[token[c:c + max_rows]], lens.log_probs(rows)) <= config.threshold
                deep[token[c:c + max_rows][settled]] = False

        undecided = unknown.any(0).nonzero().squeeze(1)
        nearest = below - 1 - unknown[:, undecided].flip(0).int().argmax(0)  # the unknown layer nearest the cut
        settle(nearest, undecided)
        unknown[nearest, undecided] = False
        settle(*(unknown & deep).nonzero().t())
    return out


def mean_signals(signals: list[tuple[bool, float, float]]) -> dict[str, float] | None:
    """Each signal averaged over the tokens (DTR for the deep-thinking flags); None without tokens."""
    if not signals:
        return None
    return {name: sum(float(t[i]) for t in signals) / len(signals) for i, name in enumerate(SIGNAL_NAMES)}


@dataclass
class Rows:
    """What the meter keeps of one sequence's step: its length then, the last position's residual stream after
    every block, and the model's logits there (when handed over)."""

    seq: object
    length: int
    hiddens: list[torch.Tensor]
    logits: torch.Tensor | None = None


class DeepThinkingMeter:
    """Per-token signals (deep-thinking, log-probability, self-certainty) of what the engine generates, from
    the hidden states its observer hands over (`engine.observer = meter`) and the logits the model computed
    from them (`meter.observe_logits`): the rows of a step are kept until the sequence is seen to have sampled
    from them, and evaluated `batch_tokens` tokens at a time, so the lens runs as few, larger products.

    A request's samples share the prompt's last position (they fork after it), so its rows are kept once per
    request and evaluated with each sample's own first token.
    """

    def __init__(self, model: Transformer, config: DTRConfig = DTRConfig(), batch_tokens: int = 32):
        self.model, self.config, self.batch_tokens = model, config, batch_tokens
        self.n_layers = model.cfg.n_layers
        self._lens: LensHead | None = None
        self._pending: dict[int, Rows] = {}  # seq_id -> the rows of its last step
        self._first_rows: dict[str, Rows] = {}  # request_id -> rows of the prompt's last position
        self._queue: list[tuple[object, Rows, int]] = []  # (key, rows, the token sampled from them)
        self._signals: dict[object, list[tuple[bool, float, float]]] = {}  # key -> [(deep, logprob, certainty)]

    def __call__(self, seq, layer: int, hidden: torch.Tensor) -> None:
        if layer == 0 or not seq.params.wants_signals:
            return
        if layer == 1:
            self._settle(seq.seq_id)
            if len(self._queue) >= self.batch_tokens:
                self._evaluate()
            self._pending[seq.seq_id] = Rows(seq, len(seq), [])
        self._pending[seq.seq_id].hiddens.append(hidden[-1])

    def observe_logits(self, logits: dict[int, torch.Tensor]) -> None:
        """The model's logits [M, V] per sequence id from the step whose hidden states were just observed."""
        for seq_id, rows in self._pending.items():
            if rows.logits is None and seq_id in logits:
                rows.logits = logits[seq_id][-1]

    def _settle(self, seq_id: int) -> None:
        """Move the pending rows of `seq_id` to the queue once the sequence has sampled a token from them (rows it
        did not sample from are replaced by its next step's)."""
        rows = self._pending.get(seq_id)
        if rows is None or len(rows.seq) <= rows.length or len(rows.hiddens) != self.n_layers:
            return
        del self._pending[seq_id]
        if rows.length == rows.seq.num_prompt_tokens:
            self._first_rows[rows.seq.request_id] = rows
        else:
            self._queue.append((seq_id, rows, rows.seq.token_ids[rows.length]))

    def _evaluate(self) -> None:
        if not self._queue:
            return
        if self._lens is None:
            self._lens = LensHead(self.model)
        hiddens = torch.stack([torch.stack(rows.hiddens) for _, rows, _ in self._queue], 1)
        logits = [rows.logits for _, rows, _ in self._queue]
        final = torch.stack(logits) if all(x is not None for x in logits) else None
        tokens = torch.tensor([t for _, _, t in self._queue])
        signals = token_signals(self._lens, hiddens, tokens, self.config, final_logits=final)
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

    def release(self, request_id: str, seq_ids: list[int]) -> None:
        """Forget a finished request's rows and signals."""
        self._first_rows.pop(request_id, None)
        for seq_id in seq_ids:
            self._signals.pop(("first", seq_id), None)
            self._signals.pop(seq_id, None)
            self._pending.pop(seq_id, None)
