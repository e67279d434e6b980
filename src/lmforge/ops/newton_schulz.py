"""Orthogonalisation of update matrices: the quintic Newton-Schulz iteration and its exact reference.

Muon (Jordan et al., 2024; Liu et al., "Muon is Scalable for LLM Training", arXiv
2502.16982) replaces an update G = U S V^T by (approximately) U V^T. Five steps of the
quintic iteration with coefficients (3.4445, -4.7750, 2.0315) map every singular value
into roughly [0.5, 1.5] using only matrix products, which run well in bf16.
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(
    g: torch.Tensor, steps: int = 5, eps: float = 1e-7, compute_dtype: torch.dtype | None = torch.bfloat16
) -> torch.Tensor:
    """Approximate U V^T of g [..., m, n] (batched over leading dims), returned in g's dtype.

    X = G / (||G||_F + eps), transposed when tall so that X X^T is the smaller Gram matrix;
    then `steps` times: A = X X^T, B = b A + c A^2, X = a X + B X.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(compute_dtype) if compute_dtype is not None else g
    tall = g.shape[-2] > g.shape[-1]
    if tall:
        x = x.mT
    x = x.reshape(-1, *x.shape[-2:])  # baddbmm wants exactly one batch dimension
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2 in one fused product
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + B X
    if tall:
        x = x.mT
    return x.reshape(g.shape).to(g.dtype)


def orthogonalize_reference(g: torch.Tensor) -> torch.Tensor:
    """Exact U V^T from the SVD of g (float64), what Newton-Schulz approximates."""
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    return (u @ vh).to(g.dtype)
