"""Next-token losses fused with the output projection, computed in row chunks.

A 50k vocabulary at batch 16 x 1024 tokens would need 3.3 GB of fp32 logits. Here the
logits of one chunk of rows exist at a time: the forward pass computes the loss and, when
gradients are needed, the gradients of that chunk at once (the approach of Liger-Kernel's
fused linear cross-entropy, Hsu et al., arXiv 2410.10989), so autograd stores only the
[N, D] and [V, D] gradients, never [N, V]. The same loop serves hard targets (cross-
entropy) and a teacher's distribution (KL divergence, for distillation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 21  # logits per chunk: 8 MB in fp32, below glibc's 32 MB mmap threshold, so chunk buffers are reused instead of page-faulted afresh


class _FusedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, teacher_hidden, teacher_weight, ignore_index, compute_dtype):
        n, _ = hidden.shape
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: fp32, or fp64 for fp64
        if targets is not None:
            valid = targets != ignore_index
            n_valid = valid.sum().clamp(min=1)
        else:
            n_valid = torch.tensor(n, device=hidden.device)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        w = weight.to(compute_dtype)
        tw = teacher_weight.to(compute_dtype) if teacher_weight is not None else None
        loss_sum = torch.zeros((), dtype=acc, device=hidden.device)
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        for start in range(0, n, chunk):
            h = hidden[start : start + chunk].to(compute_dtype)
            logp = torch.log_softmax((h @ w.T).to(acc), dim=-1)
            if targets is None:  # KL(teacher || student) per row
                log_teacher = torch.log_softmax((teacher_hidden[start : start + chunk].to(compute_dtype) @ tw.T).to(acc), -1)
                teacher = log_teacher.exp()
                loss_sum += (teacher * (log_teacher - logp)).sum()
            else:
                t = targets[start : start + chunk]
                ok = valid[start : start + chunk]
                safe_t = t.masked_fill(~ok, 0)
                loss_sum -= (logp.gather(1, safe_t[:, None]).squeeze(1) * ok).sum()
            if need_h or need_w:
                grad_logits = logp.exp_()  # softmax, in place
                if targets is None:
                    grad_logits -= teacher
                    grad_logits /= n_valid
                else:
                    grad_logits[torch.arange(len(t), device=t.device), safe_t] -= 1.0
                    grad_logits *= (ok.to(acc) / n_valid)[:, None]
                g = grad_logits.to(compute_dtype)
                if need_h:
                    grad_h[start : start + chunk] = (g @ w).to(hidden.dtype)
                if need_w:
                    grad_w += (g.T @ h).to(acc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss_sum / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        out_h = grad_h * grad_loss.to(h_dtype) if grad_h is not None else None
        out_w = (grad_w * grad_loss).to(w_dtype) if grad_w is not None else None
        return out_h, out_w, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T) against targets, chunked.

    hidden [N, D], weight [V, D], targets [N] (entries equal to `ignore_index` are skipped).
    Matrix products run in `compute_dtype` (default: hidden's dtype); the softmax and the
    sums in fp32 (fp64 when computing in fp64).
    """
    return _FusedHeadLoss.apply(hidden, weight, targets, None, None, ignore_index, compute_dtype or hidden.dtype)


def linear_kl_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean over rows of KL(teacher || student), each side's distribution being
    softmax(hidden @ weight.T); gradients flow to the student side only. Chunked like
    `linear_cross_entropy`, so neither side's [N, V] logits exist at once."""
    return _FusedHeadLoss.apply(hidden, weight, None, teacher_hidden.detach(), teacher_weight.detach(), -100,
                                compute_dtype or hidden.dtype)


def linear_cross_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Naive reference: materialise all logits, then F.cross_entropy."""
    logits = hidden @ weight.T
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, ignore_index=ignore_index)


def linear_kl_divergence_reference(
    hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor
) -> torch.Tensor:
    """Naive reference: both sides' full log-probabilities, then the KL sum."""
    log_student = torch.log_softmax(hidden @ weight.T, -1)
    log_teacher = torch.log_softmax(teacher_hidden @ teacher_weight.T, -1).detach()
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean()
