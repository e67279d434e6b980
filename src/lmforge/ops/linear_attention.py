"""Decayed linear attention (the 2Mamba2Furious family and Mamba-2's SSD), three ways.

Per head, with log-decays a_t <= 0, keys k, queries q and values v:
    S_t = exp(a_t) S_{t-1} + phi(k_t)^T v_t,    y_t = phi(q_t) S_t
phi is the identity (order 1: Mamba-2 / Mamba-2S) or the packed second-order map with
phi(q).phi(k) = (q.k)^2 (order 2: 2Mamba; Mongaras & Larson, "2Mamba2Furious", arXiv
2602.17363). Three implementations that agree to float64 precision:
- `linear_attention_reference`: the quadratic formula with an explicit decay mask;
- `chunked_linear_attention`: quadratic inside chunks, states passed between chunks
  (Dao & Gu, "Transformers are SSMs", arXiv 2405.21060), linear in sequence length;
  `recomputed_linear_attention` is its first-order form for training, whose written-out
  backward rebuilds the within-chunk pieces instead of keeping them;
- `recurrent_linear_attention`: one token at a time from a fixed-size state (decoding);
- `sharded_linear_attention`: the chunked form over sequences split across context-parallel
  ranks, each rank's part from a zero state and the past ranks' states combined by a scan.
Every exponent is a difference of cumulative log-decays taken in the decaying direction,
so nothing positive is ever exponentiated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.ops.sequence_parallel import SequenceShard, gather_ranks


def square_features(x: torch.Tensor) -> torch.Tensor:
    """Packed x (x) x: the d(d+1)/2 monomials x_i x_j (i <= j), off-diagonal ones scaled by sqrt(2),
    so that square_features(q) . square_features(k) == (q . k)^2."""
    d = x.shape[-1]
    i, j = torch.triu_indices(d, d, device=x.device)
    scale = torch.where(i == j, 1.0, 2.0).to(x.dtype).sqrt()
    return x[..., i] * x[..., j] * scale


def _features(x: torch.Tensor, order: int) -> torch.Tensor:
    return x if order == 1 else square_features(x)


def linear_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, order: int = 1
) -> torch.Tensor:
    """y_i = sum_{j<=i} (q_i . k_j)^order exp(sum_{t=j+1..i} a_t) v_j, all pairs at once.

    q, k [B, H, T, d], v [B, H, T, dv], log_decay [B, H, T] (<= 0). Quadratic in T.
    """
    cum = log_decay.cumsum(-1)
    t = q.shape[-2]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    decay = torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))
    return ((q @ k.mT) ** order * decay) @ v


def _split_chunks(q, k, v, log_decay, chunk: int):
    """Pad T to a multiple of the chunk and split it: q, k, v [B, H, n, C, .] and the inclusive cumulative
    log-decays within each chunk [B, H, n, C]. Padded steps have zero keys and values and no decay: they
    change nothing."""
    t = q.shape[-2]
    chunk = max(1, min(chunk, t))
    pad = -t % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_decay = F.pad(log_decay, (0, pad))
    b, h, n = q.shape[0], q.shape[1], (t + pad) // chunk
    q, k, v = (x.reshape(b, h, n, chunk, x.shape[-1]) for x in (q, k, v))
    return q, k, v, log_decay.reshape(b, h, n, chunk).cumsum(-1)


def _decay_mask(cum: torch.Tensor) -> torch.Tensor:
    """exp(cum_i - cum_j) for j <= i within each chunk, 0 above the diagonal: [B, H, n, C, C]."""
    chunk = cum.shape[-1]
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=cum.device).tril()
    return torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))


def _chunk_contributions(kf: torch.Tensor, v: torch.Tensor, cum: torch.Tensor) -> torch.Tensor:
    """Each chunk's own addition to the state at its end, sum_j exp(L - cum_j) phi(k_j)^T v_j: [B, H, n, F, dv]."""
    return (kf * torch.exp(cum[..., -1:] - cum)[..., None]).mT @ v


def _scan_states(contributions: torch.Tensor, cum: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the state entering each chunk [B, H, n, F, dv], the state after the last chunk given): a short
    sequential scan over chunks, S_{c+1} = exp(L_c) S_c + U_c, for the n_U chunks that have contributions."""
    entering = []
    # unbind, not indexing: the backward of one unbind is one stack, while each index's backward
    # would scatter into a zero tensor as large as all chunk states (quadratic traffic in n)
    decays, added = torch.exp(cum[..., -1])[..., None, None].unbind(2), contributions.unbind(2)
    for c in range(cum.shape[2]):
        entering.append(state)
        if c < len(added):
            state = decays[c] * state + added[c]
    return torch.stack(entering, dim=2), state


def chunked_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    order: int = 1,
    chunk: int = 64,
    initial_state: torch.Tensor | None = None,
    need_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked form of `linear_attention_reference`, also returning the final state.

    The state is [B, H, F, dv] with F = d (order 1) or d(d+1)/2 (order 2). Inside a chunk the
    scores are (q.k)^order with the decay mask; across chunks the state carries the past.
    With `need_state=False` (training) the final state is not formed (None is returned), and a
    sequence that fits in one chunk never builds feature maps at all.
    """
    b, h, t, _ = q.shape
    dv = v.shape[-1]
    q, k, v, cum = _split_chunks(q, k, v, log_decay, chunk)
    n, chunk = cum.shape[2], cum.shape[3]
    scores = q @ k.mT
    y = ((scores if order == 1 else scores**order) * _decay_mask(cum)) @ v  # within chunks

    carried = n - 1 + need_state  # chunks whose state later chunks (or the caller) need
    if carried == 0 and initial_state is None:
        return y.reshape(b, h, n * chunk, dv)[:, :, :t], None
    kf = _features(k[:, :, :carried], order)
    state = initial_state if initial_state is not None else q.new_zeros(b, h, kf.shape[-1], dv)
    past, state = _scan_states(_chunk_contributions(kf, v[:, :, :carried], cum[:, :, :carried]), cum, state)
    first = 0 if initial_state is not None else 1  # without an initial state, chunk 0 has no past
    qf = _features(q[:, :, first:], order)
    y_past = torch.exp(cum[:, :, first:])[..., None] * (qf @ past[:, :, first:])
    y = torch.cat([y[:, :, :first], y[:, :, first:] + y_past], dim=2)
    return y.reshape(b, h, n * chunk, dv)[:, :, :t], state if need_state else None


class _RecomputedLinearAttention(torch.autograd.Function):
    """First-order chunked linear attention whose backward recomputes what the chunks need.

    Saves only q, k, v, the log-decays and the state entering each chunk; the within-chunk decay masks
    and scores, which autograd would keep for every chunk (T x C per head, each), are rebuilt in the
    backward. The gradients are written out (the same approach as the chunked kernels of Yang et al.,
    "Gated Linear Attention Transformers", arXiv 2312.06635): with A = (Q K^T) o M within a chunk,
    Y = A V + e^cum Q S and S' = e^L S + K^T diag(e^(L - cum)) V, the state's gradient G runs backward
    over chunks (G = e^L G' + Q^T diag(e^cum) dY) and every other gradient is local to its chunk."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, chunk: int, initial_state):
        b, h, t, _ = q.shape
        qc, kc, vc, cum = _split_chunks(q, k, v, log_decay, chunk)
        n, size = cum.shape[2], cum.shape[3]
        state = initial_state if initial_state is not None else q.new_zeros(b, h, q.shape[-1], v.shape[-1])
        entering, final = _scan_states(_chunk_contributions(kc, vc, cum), cum, state)
        y = ((qc @ kc.mT) * _decay_mask(cum)) @ vc + torch.exp(cum)[..., None] * (qc @ entering)
        ctx.save_for_backward(qc, kc, vc, cum, entering)  # the chunked copies, so the backward copies nothing
        ctx.length, ctx.has_initial = t, initial_state is not None
        return y.reshape(b, h, n * size, -1)[:, :, :t], final

    @staticmethod
    def backward(ctx, dy, dfinal):
        qc, kc, vc, cum, entering = ctx.saved_tensors
        b, h, n, size = cum.shape
        t = ctx.length
        dy = F.pad(dy, (0, 0, 0, n * size - t)).reshape(b, h, n, size, -1)
        end = cum[..., -1:]
        into_state, from_state = torch.exp(end - cum)[..., None], torch.exp(cum)[..., None]
        # the state's gradient: G_c = e^(L_c) G_{c+1} + Q_c^T diag(e^cum) dY_c, from the final state's gradient
        local = qc.mT @ (from_state * dy)
        grad = dfinal if dfinal is not None else entering.new_zeros(entering[:, :, 0].shape)
        leaving, decays, locals_ = [], torch.exp(end)[..., None].unbind(2), local.unbind(2)
        for c in reversed(range(n)):
            leaving.append(grad)
            grad = decays[c] * grad + locals_[c]
        leaving = torch.stack(leaving[::-1], dim=2)  # the gradient of the state each chunk hands on
        mask = _decay_mask(cum)
        weights = (qc @ kc.mT).mul_(mask)
        d_weights = dy @ vc.mT
        d_scores = d_weights * mask
        del mask  # the backward's large temporaries are freed, or reused, as soon as they are spent
        pairs = d_weights.mul_(weights)
        dcum = pairs.sum(-1) - pairs.sum(-2)  # through the decay masks
        del pairs, d_weights
        dy_state = dy @ entering.mT
        dq = (d_scores @ kc).addcmul_(from_state, dy_state)
        dk = (d_scores.mT @ qc).addcmul_(into_state, vc @ leaving.mT)
        del d_scores
        k_leaving = kc @ leaving
        dv = (weights.mT @ dy).addcmul_(into_state, k_leaving)
        # the log-decays also scale the read of the entering state and what each token adds to the state handed on
        to_end = into_state[..., 0] * (k_leaving * vc).sum(-1)
        dcum += from_state[..., 0] * (qc * dy_state).sum(-1) - to_end
        dcum[..., -1] += to_end.sum(-1) + torch.exp(end[..., 0]) * (leaving * entering).sum((-2, -1))
        d_log_decay = dcum.flip(-1).cumsum(-1).flip(-1)  # cum_i sums a_t for t <= i within the chunk
        grads = [x.reshape(b, h, n * size, -1)[:, :, :t] for x in (dq, dk, dv)]
        return *grads, d_log_decay.reshape(b, h, n * size)[:, :, :t], None, grad if ctx.has_initial else None


def recomputed_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, chunk: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`chunked_linear_attention` of order 1 for training: (y, final state), equal in value, with a
    backward that keeps only q, k, v, the log-decays and each chunk's entering state (see
    `_RecomputedLinearAttention`)."""
    return _RecomputedLinearAttention.apply(q, k, v, log_decay, chunk, initial_state)


def _chunked(q, k, v, log_decay, order: int, chunk: int, state, need_state: bool):
    """The chunked form that fits: the recomputing one where first-order gradients will be taken."""
    if order == 1 and torch.is_grad_enabled():
        y, final = recomputed_linear_attention(q, k, v, log_decay, chunk, state)
        return y, final if need_state else None
    return chunked_linear_attention(q, k, v, log_decay, order, chunk, state, need_state)


def recurrent_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    order: int = 1,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token form: S = exp(a_t) S + phi(k_t)^T v_t, y_t = phi(q_t) S. Returns (y, final state)."""
    b, h, t, _ = q.shape
    qf, kf = _features(q, order), _features(k, order)
    if state is None:
        state = q.new_zeros(b, h, qf.shape[-1], v.shape[-1])
    out = []
    for i in range(t):
        state = torch.exp(log_decay[:, :, i])[..., None, None] * state + kf[:, :, i, :, None] * v[:, :, i, None, :]
        out.append((qf[:, :, i, None, :] @ state).squeeze(-2))
    return torch.stack(out, dim=2), state


def decayed_softmax_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, scale: float) -> torch.Tensor:
    """2Mamba-E: softmax over j<=i of scale q_i.k_j + sum_{t=j+1..i} a_t (the Forgetting Transformer's form)."""
    cum = log_decay.cumsum(-1)
    t = q.shape[-2]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    logits = (scale * (q @ k.mT) + cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf"))
    return logits.softmax(-1) @ v


def decayed_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_cum: torch.Tensor,
    k_cum: torch.Tensor,
    scale: float,
    q_positions: torch.Tensor | None = None,
    block: int = 256,
) -> torch.Tensor:
    """Blocked 2Mamba-E attention: query blocks against all earlier keys, the decay as an additive bias.

    q [B, H, Tq, d] with cumulative log-decays q_cum [B, H, Tq]; k, v [B, H, Tk, d] with k_cum
    [B, H, Tk]. Query i (absolute position q_positions[..., i], [Tq] or per row [B, Tq], default
    Tk - Tq + i) sees keys at positions <= its own. Each block runs through the fused SDPA
    kernel, which keeps an online max, so memory is O(block x Tk) instead of O(Tq x Tk).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    key_pos = torch.arange(tk, device=q.device)
    out = []
    for s in range(0, tq, block):
        e = min(s + block, tq)
        visible = key_pos <= q_positions[..., s:e, None]
        if visible.dim() == 3:  # per-row positions: broadcast over heads
            visible = visible[:, None]
        bias = (q_cum[..., s:e, None] - k_cum[..., None, :]).masked_fill(~visible, float("-inf"))
        out.append(F.scaled_dot_product_attention(q[..., s:e, :], k, v, attn_mask=bias, scale=scale))
    return torch.cat(out, dim=-2)


def sharded_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, order: int, chunk: int,
    shard: SequenceShard,
) -> torch.Tensor:
    """`chunked_linear_attention` of sequences whose T/P consecutive tokens [B, H, T/P, .] lie on each rank.

    The recurrence is linear, so each rank runs its tokens from a zero state, and the state entering rank r is
    S_in(r) = sum_{j<r} exp(A_{j+1} + ... + A_{r-1}) S_j, from every rank's final state S_j and total log-decay
    A_j (gathered: a scan over ranks); its contribution to token t is exp(cum a_t) phi(q_t) S_in(r). Exact, and
    differentiable through the gathers. Every rank weighs every gathered state (the later ranks' and, on rank
    0, all of them by zero), so every rank's backward joins the gathers' backward collectives."""
    y, state = _chunked(q, k, v, log_decay, order, chunk, None, True)
    states, totals = gather_ranks(state, shard), gather_ranks(log_decay.sum(-1), shard)  # [P, B, H, F, dv], [P, B, H]
    ends = totals.cumsum(0)
    later = (torch.arange(shard.size, device=q.device) >= shard.rank).view(-1, 1, 1)
    weights = torch.exp((ends[shard.rank - 1] - ends).masked_fill(later, float("-inf")))  # decay from j's end to r
    entering = (weights[..., None, None] * states).sum(0)
    return y + torch.exp(log_decay.cumsum(-1))[..., None] * (_features(q, order) @ entering)


def linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, order: int, chunk: int,
    state: torch.Tensor | None, need_state: bool, shard: SequenceShard | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, final state) by the form that fits: one token after a state, recurrent; tokens split over
    context-parallel ranks, sharded (no state returned); otherwise chunked."""
    if shard is not None:
        return sharded_linear_attention(q, k, v, log_decay, order, chunk, shard), None
    if need_state and q.shape[-2] == 1:
        return recurrent_linear_attention(q, k, v, log_decay, order, state)
    return _chunked(q, k, v, log_decay, order, chunk, state, need_state)
