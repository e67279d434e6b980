"""Deterministic training memory of one forward and backward pass.

What training holds beyond the model is, above all, what autograd saves for the backward pass.
`training_memory` counts it exactly: every tensor saved for backward goes through
`torch.autograd.graph.saved_tensors_hooks`, and the bytes of each distinct storage are counted
once (views of one tensor, or one tensor saved by several operations, share a storage). The
parameters' own storages are not counted there but as parameters, and again as their gradients.
The same code gives the same figure on every run, unlike the growth of a process's resident set,
which depends on the allocator's history. On a GPU the allocator's peak over the pass
(`torch.cuda.max_memory_allocated`) is reported beside it.

    from memory import training_memory
    m = training_memory(layer, lambda: layer(x, positions).sum())
    m["saved_bytes"], m["total_bytes"], m["cuda_peak_bytes"]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass


def saved_for_backward(forward: Callable[[], torch.Tensor], exclude: set[int], kept: tuple[torch.Tensor, ...] = ()
                       ) -> tuple[torch.Tensor, int]:
    """(forward()'s result, bytes of the distinct storages autograd saved while running it, leaving out the
    storages whose data pointers are in `exclude`). `kept`: tensors held for the backward outside autograd's
    saved tensors (the inputs a recomputed region keeps), counted as saved ones are."""
    storages: dict[int, int] = {}

    def count(t: torch.Tensor) -> None:
        if is_traceable_wrapper_subclass(t):  # e.g. a collective's result: count the tensors it wraps
            for name in t.__tensor_flatten__()[0]:
                count(getattr(t, name))
            return
        storage = t.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in exclude:  # empty placeholders have no data pointer
            storages[storage.data_ptr()] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        count(t)
        return t

    for t in kept:
        count(t)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return out, sum(storages.values())


def training_memory(model: nn.Module, forward: Callable[[], torch.Tensor], kept: tuple[torch.Tensor, ...] = ()) -> dict:
    """Memory of one training pass: `forward()` (a scalar loss over `model`) then its backward.

    `kept` as in `saved_for_backward`. Returns saved_bytes (activations saved for backward), param_bytes and grad_bytes (of the
    parameters that require gradients), total_bytes (their sum), and cuda_peak_bytes (the
    allocator's peak above what was allocated before, on a GPU; None elsewhere)."""
    params = [p for p in model.parameters() if p.requires_grad]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    device = params[0].device if params else torch.device("cpu")
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    loss, saved = saved_for_backward(forward, {p.untyped_storage().data_ptr() for p in params}, kept)
    loss.backward()
    peak = None
    if on_gpu:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    return {"saved_bytes": saved, "param_bytes": param_bytes, "grad_bytes": param_bytes,
            "total_bytes": saved + 2 * param_bytes, "cuda_peak_bytes": peak}
