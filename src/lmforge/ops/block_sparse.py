"""Block-sparse causal attention with SpargeAttention2's hybrid top-k + top-p block selection.

Zhang, Jiang, Xiang et al., "SpargeAttention2" (arXiv 2602.13515): mean-pool queries and
keys in blocks, score the pooled pairs, and keep for each query block the key blocks that
are in the top k fraction of its candidate blocks or in the smallest prefix holding p of
the pooled probability mass (plus the block's own diagonal blocks, and optionally the
first block as an attention sink). Attention then runs exactly over the kept blocks.

For a causal language model the selection must not see the future: query block i is
summarised by the mean query of block i-1 (wholly in the past of every query in block i),
and only key blocks wholly before block i compete. So the choice for a position depends
on earlier tokens only, and decoding one token at a time selects exactly what a training
pass over the whole sequence selects.

Query blocks are numbered by absolute position (block b holds positions b*block_q ..).
- `lagged_query_means`: block summaries for a whole sequence;
- `predict_block_mask`: the selection rule (no gradient);
- `block_sparse_attention`: gathers each query block's kept key blocks for the fused SDPA
  kernel (forward and backward); `block_sparse_attention_flex`: compiled FlexAttention;
- `block_sparse_attention_reference`: dense attention with the block mask expanded to
  tokens, the obviously-correct reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmforge.errors import ConfigError


def check_sparsity_settings(block_q: int, block_k: int, top_k: float, top_p: float) -> None:
    """Reject settings that would silently give a different attention than asked for."""
    if block_q < 1 or block_k < 1:
        raise ConfigError(f"sparse block sizes must be positive, got {block_q} x {block_k}")
    for name, value in (("top_k", top_k), ("top_p", top_p)):
        if not 0 < value <= 1:
            raise ConfigError(f"sparse {name} must be in (0, 1], got {value}")


def _pool(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over blocks of `block` positions along dim -2 (a last partial block averages what it has)."""
    t = x.shape[-2]
    n = -(-t // block)
    sums = F.pad(x, (0, 0, 0, n * block - t)).unflatten(-2, (n, block)).sum(-2)
    counts = torch.full((n,), float(block), dtype=x.dtype, device=x.device)
    counts[-1] = t - (n - 1) * block
    return sums / counts[:, None]


def lagged_query_means(q: torch.Tensor, block_q: int) -> torch.Tensor:
    """[B, H, nq, d]: for query block i of a sequence starting at position 0, the mean query of
    block i-1 (zeros for block 0, which has no earlier key block to choose anyway)."""
    return F.pad(_pool(q, block_q), (0, 0, 1, 0))[..., :-1, :]


def block_layout(first_block: int, n_blocks: int, block_q: int, n_keys: int, block_k: int, device=None):
    """(own, candidates) [nq, nk] bool for query blocks first_block.. against the key blocks of n_keys keys.

    own: key blocks overlapping the query block's positions (kept always, causal inside);
    candidates: key blocks wholly before the query block (the ones the rule chooses among).
    """
    starts = (torch.arange(n_blocks, device=device) + first_block) * block_q
    key_starts = torch.arange(-(-n_keys // block_k), device=device) * block_k
    key_ends = key_starts + block_k - 1
    candidates = key_ends[None, :] < starts[:, None]
    own = (key_starts[None, :] <= starts[:, None] + block_q - 1) & ~candidates
    return own, candidates


@torch.no_grad()
def predict_block_mask(
    summary: torch.Tensor,
    k: torch.Tensor,
    block_q: int = 64,
    block_k: int = 64,
    top_k: float = 0.03,
    top_p: float = 0.2,
    sink: bool = True,
    first_block: int = 0,
) -> torch.Tensor:
    """Kept key blocks per query block, [B, H, nq, nk] bool.

    `summary` [B, H, nq, d] stands for query blocks first_block.. (see `lagged_query_means`),
    k [B, H, Tk, d]. P~ = softmax(summary pool(k)^T / sqrt(d)) over the n candidate blocks;
    keep the top max(ceil(top_k * n), n_p), n_p the shortest prefix of P~ in descending order
    with mass >= top_p; always keep the own blocks and, with `sink`, the first block.
    """
    check_sparsity_settings(block_q, block_k, top_k, top_p)
    own, candidates = block_layout(first_block, summary.shape[-2], block_q, k.shape[-2], block_k, k.device)
    scores = (summary.float() @ _pool(k.float(), block_k).mT) / math.sqrt(k.shape[-1])
    probs = scores.masked_fill(~candidates, float("-inf")).softmax(-1).nan_to_num(0.0)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    n_p = (mass_before < top_p).sum(-1, keepdim=True)  # entries needed to reach top_p
    n_k = torch.ceil(top_k * candidates.sum(-1, keepdim=True)).long()
    keep_sorted = torch.arange(probs.shape[-1], device=k.device) < torch.maximum(n_p, n_k)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted) & candidates
    keep |= own
    if sink:
        keep[..., 0] = True  # key block 0 is visible to every query block
    return keep


def _first_block(q_positions: torch.Tensor, block_q: int) -> int:
    return int(q_positions[0]) // block_q


def block_sparse_attention_reference(
    q, k, v, mask: torch.Tensor, block_q: int, block_k: int, q_positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense softmax attention with the block mask expanded to tokens (-inf elsewhere)."""
    tq, tk = q.shape[-2], k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    rows = mask[..., q_positions // block_q - _first_block(q_positions, block_q), :]
    allowed = rows.repeat_interleave(block_k, dim=-1)[..., :tk]
    allowed = allowed & (torch.arange(tk, device=q.device)[None, :] <= q_positions[:, None])
    scores = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def block_sparse_attention(
    q, k, v, mask: torch.Tensor, block_q: int, block_k: int, q_positions: torch.Tensor | None = None,
    first_block: int | None = None,
) -> torch.Tensor:
    """Exact attention over the kept key blocks only, through the fused SDPA kernel.

    Each query block gathers its kept key/value blocks (padded to the largest kept count
    with masked-out slots), so the work and memory grow with the number of kept blocks: that
    count is read from the mask, the one shape here that depends on data. Queries sit in the
    slots of their absolute query blocks (decoding fills one slot); `first_block`, the query
    block of q_positions[0], saves reading it back when the caller knows it.
    """
    b, h, tq, d = q.shape
    tk = k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    nq, nk = mask.shape[-2:]
    first = _first_block(q_positions, block_q) if first_block is None else first_block
    slots = q_positions - first * block_q
    width = int(mask.sum(-1).max())
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :width]  # kept blocks first
    slot_valid = mask.gather(-1, order)
    flat_index = (order + (torch.arange(b * h, device=q.device) * nk).view(b, h, 1, 1)).reshape(-1)

    def blocks(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, nk * block_k - tk)).reshape(b * h * nk, block_k, x.shape[-1])
        return x.index_select(0, flat_index).view(b * h, nq, width * block_k, x.shape[-1])

    key_pos = (order[..., None] * block_k + torch.arange(block_k, device=q.device)).flatten(-2)  # [B, H, nq, W*bk]
    qpos = torch.full((nq * block_q,), -1, dtype=q_positions.dtype, device=q.device).index_copy(0, slots, q_positions)
    qpos = qpos.view(nq, block_q)
    allowed = (key_pos[..., None, :] <= qpos[None, None, :, :, None]) & (key_pos[..., None, :] < tk)
    allowed &= slot_valid.repeat_interleave(block_k, dim=-1)[..., None, :]
    allowed[..., :, 0] |= ~allowed.any(-1)  # empty (padding) query slots: attend to one key to stay finite
    queries = q.new_zeros(b, h, nq * block_q, d).index_copy(2, slots, q).view(b * h, nq, block_q, d)
    out = F.scaled_dot_product_attention(queries, blocks(k), blocks(v), attn_mask=allowed.flatten(0, 1))
    return out.reshape(b, h, nq * block_q, d).index_select(2, slots)


def block_sparsity(mask: torch.Tensor, n_keys: int, block_q: int, block_k: int, first_block: int = 0) -> float:
    """Share of causally visible key blocks (own + candidates) that the mask skips."""
    own, candidates = block_layout(first_block, mask.shape[-2], block_q, n_keys, block_k, mask.device)
    visible = (own | candidates).sum() * mask.shape[0] * mask.shape[1]
    return 1.0 - float(mask.sum()) / float(visible)


def _flex_block_mask(mask: torch.Tensor, t: int, block_q: int, block_k: int):
    """A FlexAttention BlockMask for a whole sequence: own blocks get the causal mask_mod,
    every other kept block is attended in full. The mask_mod also looks the block up in `mask`, so
    an uncompiled call (which evaluates mask_mod everywhere) gives the same values as the kernel."""
    from torch.nn.attention.flex_attention import BlockMask

    own, _ = block_layout(0, mask.shape[-2], block_q, t, block_k, mask.device)

    def as_indices(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = m.sum(-1).to(torch.int32)
        order = torch.sort((~m).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
        return counts, order

    def causal_in_kept_blocks(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & mask[b, h, q_idx // block_q, kv_idx // block_k]

    return BlockMask.from_kv_blocks(*as_indices(mask & own), *as_indices(mask & ~own), BLOCK_SIZE=(block_q, block_k),
                                    mask_mod=causal_in_kept_blocks, seq_lengths=(t, t))


_compiled_flex = None


def flex_length(t: int, block_q: int, block_k: int) -> int:
    """The padded length FlexAttention runs a `t`-token sequence at: the next power of two, rounded up to
    both block sizes, so a few compiled shapes serve every length (one per length would reach the
    compiler's recompile limit, for example under the engine's chunked prefill)."""
    multiple = math.lcm(block_q, block_k)
    return -(-(1 << (t - 1).bit_length()) // multiple) * multiple


def block_sparse_attention_flex(q, k, v, mask: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    """The same attention for a whole sequence (queries and keys at positions 0..T-1) through
    compiled `torch.nn.attention.flex_attention` with a BlockMask, which skips dropped blocks
    inside one fused kernel. The sequence is padded to `flex_length`: padded keys come after every
    real query, so the causal mask hides them, and padded query blocks keep no key block. The first
    call per padded length compiles; PyTorch has no FlexAttention backward on CPU."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    t = q.shape[-2]
    padded = flex_length(t, block_q, block_k)
    q, k, v = (F.pad(x, (0, 0, 0, padded - t)) for x in (q, k, v))
    mask = F.pad(mask, (0, padded // block_k - mask.shape[-1], 0, padded // block_q - mask.shape[-2]), value=False)
    return _compiled_flex(q, k, v, block_mask=_flex_block_mask(mask, padded, block_q, block_k))[..., :t, :]
