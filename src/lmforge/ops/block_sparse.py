"""Block-sparse causal attention with SpargeAttention2's hybrid top-k + top-p block selection.

Zhang, Jiang, Xiang et al., "SpargeAttention2" (arXiv 2602.13515): mean-pool queries and
keys in blocks, score the pooled pairs, and keep for each query block the key blocks that
are in the top k fraction of its visible blocks or in the smallest prefix holding p of the
pooled probability mass (plus the diagonal block, and optionally the first block as an
attention sink). Attention then runs exactly, but only over the kept blocks.

- `predict_block_mask`: the selection rule (no gradient);
- `block_sparse_attention`: gathers each query block's kept key blocks and runs the fused
  SDPA kernel on them, so work grows with the kept blocks, not with T^2;
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
    padded = F.pad(x, (0, 0, 0, n * block - t)).unflatten(-2, (n, block)).sum(-2)
    counts = torch.full((n,), float(block), dtype=x.dtype, device=x.device)
    counts[-1] = t - (n - 1) * block
    return padded / counts[:, None]


def visible_blocks(q_positions: torch.Tensor, block_q: int, n_keys: int, block_k: int) -> torch.Tensor:
    """[nq, nk] bool: key block j holds a key at or before the last query of query block i."""
    nq = -(-len(q_positions) // block_q)
    last = q_positions[torch.clamp(torch.arange(1, nq + 1, device=q_positions.device) * block_q, max=len(q_positions)) - 1]
    first_key = torch.arange(-(-n_keys // block_k), device=q_positions.device) * block_k
    return first_key[None, :] <= last[:, None]


def _own_blocks(q_positions: torch.Tensor, block_q: int, n_keys: int, block_k: int) -> torch.Tensor:
    """[nq, nk] bool: key blocks that hold the query block's own positions (the local causal part)."""
    nq = -(-len(q_positions) // block_q)
    idx = torch.arange(nq, device=q_positions.device)
    first = q_positions[idx * block_q]
    last = q_positions[torch.clamp((idx + 1) * block_q, max=len(q_positions)) - 1]
    starts = torch.arange(-(-n_keys // block_k), device=q_positions.device) * block_k
    return (starts[None, :] <= last[:, None]) & (starts[None, :] + block_k - 1 >= first[:, None])


@torch.no_grad()
def predict_block_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    block_q: int = 64,
    block_k: int = 64,
    top_k: float = 0.03,
    top_p: float = 0.2,
    sink: bool = True,
    q_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Kept key blocks per query block, [B, H, nq, nk] bool.

    q [B, H, Tq, d] at absolute positions `q_positions` (default: the last Tq of the Tk
    keys), k [B, H, Tk, d]. P~ = softmax(pool(q) pool(k)^T / sqrt(d)) over the visible blocks
    that lie wholly before the query block; keep the top max(ceil(top_k * n), n_p) of those
    n blocks, n_p the shortest prefix of P~ in descending order with mass >= top_p; always
    keep the query block's own (diagonal) blocks and, with `sink`, the first block.

    The own blocks are kept anyway and, in a causal model, their pooled keys include
    positions after some of the queries; leaving them out of P~ keeps the choice causal, so
    a query decoded alone selects what it would select in a training pass with block_q = 1.
    """
    check_sparsity_settings(block_q, block_k, top_k, top_p)
    tq, tk = q.shape[-2], k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    visible = visible_blocks(q_positions, block_q, tk, block_k)
    own = _own_blocks(q_positions, block_q, tk, block_k)
    candidates = visible & ~own  # blocks wholly before the query block: the ones the rule chooses among
    scores = (_pool(q.float(), block_q) @ _pool(k.float(), block_k).mT) / math.sqrt(q.shape[-1])
    probs = scores.masked_fill(~candidates, float("-inf")).softmax(-1).nan_to_num(0.0)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    n_p = (mass_before < top_p).sum(-1, keepdim=True)  # entries needed to reach top_p
    n_k = torch.ceil(top_k * candidates.sum(-1, keepdim=True)).long()
    keep_sorted = torch.arange(probs.shape[-1], device=q.device) < torch.maximum(n_p, n_k)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted) & candidates
    keep |= own
    if sink:
        keep[..., 0] |= visible[..., 0]
    return keep


def _token_mask(mask: torch.Tensor, q_positions: torch.Tensor, tk: int, block_q: int, block_k: int) -> torch.Tensor:
    """Expand a block mask to [B, H, Tq, Tk] tokens, with causal masking inside blocks."""
    tq = len(q_positions)
    rows = mask.repeat_interleave(block_q, dim=-2)[..., :tq, :]
    tokens = rows.repeat_interleave(block_k, dim=-1)[..., :tk]
    causal = torch.arange(tk, device=mask.device)[None, :] <= q_positions[:, None]
    return tokens & causal


def block_sparse_attention_reference(
    q, k, v, mask: torch.Tensor, block_q: int, block_k: int, q_positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense softmax attention with the block mask expanded to tokens (-inf elsewhere)."""
    tq, tk = q.shape[-2], k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    allowed = _token_mask(mask, q_positions, tk, block_q, block_k)
    scores = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def block_sparse_attention(
    q, k, v, mask: torch.Tensor, block_q: int, block_k: int, q_positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact attention over the kept key blocks only, through the fused SDPA kernel.

    Each query block gathers its kept key/value blocks (padded to the largest kept count
    with masked-out slots), so the work and memory grow with the number of kept blocks.
    """
    b, h, tq, d = q.shape
    tk = k.shape[-2]
    if q_positions is None:
        q_positions = torch.arange(tk - tq, tk, device=q.device)
    nq, nk = mask.shape[-2:]
    width = int(mask.sum(-1).max())
    # kept block indices first (stable order), padding slots after them
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :width]  # [B, H, nq, width]
    slot_valid = mask.gather(-1, order)

    offsets = (torch.arange(b * h, device=q.device) * nk).view(b, h, 1, 1)
    flat_index = (order + offsets).reshape(-1)

    def blocks(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, nk * block_k - tk)).reshape(b * h * nk, block_k, x.shape[-1])
        return x.index_select(0, flat_index).view(b, h, nq, width * block_k, x.shape[-1])

    keys, values = blocks(k), blocks(v)
    key_pos = (order[..., None] * block_k + torch.arange(block_k, device=q.device)).flatten(-2)  # [B, H, nq, width * bk]
    q_pad = nq * block_q - tq
    qpos = F.pad(q_positions, (0, q_pad), value=-1).view(nq, block_q)  # padded queries see nothing useful
    allowed = (key_pos[..., None, :] <= qpos[None, None, :, :, None]) & (key_pos[..., None, :] < tk)
    allowed &= slot_valid.repeat_interleave(block_k, dim=-1)[..., None, :]
    allowed[..., :, 0] |= ~allowed.any(-1)  # padded query rows: attend to one slot to stay finite
    queries = F.pad(q, (0, 0, 0, q_pad)).reshape(b * h, nq, block_q, d)  # 4-D, so SDPA takes its fused kernel
    out = F.scaled_dot_product_attention(queries, keys.flatten(0, 1), values.flatten(0, 1), attn_mask=allowed.flatten(0, 1))
    return out.reshape(b, h, nq * block_q, d)[:, :, :tq]


def block_sparsity(mask: torch.Tensor, q_positions: torch.Tensor, block_q: int, n_keys: int, block_k: int) -> float:
    """Share of causally visible blocks that the mask skips."""
    visible = visible_blocks(q_positions, block_q, n_keys, block_k)
    return 1.0 - float(mask.sum()) / float(visible.sum() * mask.shape[0] * mask.shape[1])


def _flex_block_mask(mask: torch.Tensor, tq: int, tk: int, block_q: int, block_k: int):
    """A FlexAttention BlockMask for `mask`: the query block's own blocks get the causal mask_mod,
    every other kept block is attended in full."""
    from torch.nn.attention.flex_attention import BlockMask

    offset = tk - tq
    own = _own_blocks(torch.arange(offset, tk, device=mask.device), block_q, tk, block_k)

    def as_indices(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = m.sum(-1).to(torch.int32)
        order = torch.sort((~m).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
        return counts, order

    def causal(b, h, q_idx, kv_idx):
        return q_idx + offset >= kv_idx

    partial, full = as_indices(mask & own), as_indices(mask & ~own)
    return BlockMask.from_kv_blocks(*partial, *full, BLOCK_SIZE=(block_q, block_k), mask_mod=causal, seq_lengths=(tq, tk))


_compiled_flex = None


def block_sparse_attention_flex(q, k, v, mask: torch.Tensor, block_q: int, block_k: int, compiled: bool = True) -> torch.Tensor:
    """The same attention through `torch.nn.attention.flex_attention` with a BlockMask, which
    skips the dropped blocks inside one fused kernel instead of gathering kept blocks.
    Queries are the last Tq of the Tk keys. Compiled (the fast path; the first call per shape
    compiles) or eager (slow, for checking)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _flex_block_mask(mask, q.shape[-2], k.shape[-2], block_q, block_k)
    if not compiled:
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)
