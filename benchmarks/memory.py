"""Deterministic training memory of one forward and backward pass.

What training holds beyond the model is, above all, what it keeps for the backward pass.
`training_memory` counts it exactly, as the bytes of distinct storages (views of one tensor, or one
tensor saved by several operations, share a storage) of two kinds: every tensor autograd saves for
the backward (through `torch.autograd.graph.saved_tensors_hooks`), and every tensor the forward
created that is still alive when it returns, its result aside (seen through a TorchDispatchMode
and weak references: what activation checkpointing keeps, which the hooks do not see, such as the
outputs selective checkpointing caches). The parameters' own storages are not counted there but
as parameters, and again as their gradients.
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
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves


class _CreatedStorages(TorchDispatchMode):
    """Weak references to the storage of every tensor the operations run under it create."""

    def __init__(self):
        super().__init__()
        self.created: list[tuple[StorageWeakRef, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not is_traceable_wrapper_subclass(t):
                storage = t.untyped_storage()
                if storage.nbytes():
                    self.created.append((StorageWeakRef(storage), storage.data_ptr(), storage.nbytes()))
        return out

    def alive(self) -> dict[int, int]:
        """Data pointer -> bytes of the created storages still alive."""
        return {ptr: size for ref, ptr, size in self.created if not ref.expired()}


def kept_for_backward(forward: Callable[[], torch.Tensor], exclude: set[int], kept: tuple[torch.Tensor, ...] = ()
                      ) -> tuple[torch.Tensor, int]:
    """(forward()'s result, bytes of the distinct storages kept for its backward: those autograd saved and
    those the forward created that are still alive after it, besides its result), leaving out the storages
    whose data pointers are in `exclude`. `kept`: tensors held for the backward that the forward did not
    create (the inputs a recomputed region keeps), counted too."""
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
    created = _CreatedStorages()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), created:
        out = forward()
    result = {t.untyped_storage().data_ptr() for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
    storages.update({ptr: size for ptr, size in created.alive().items() if ptr not in exclude | result})
    return out, sum(storages.values())


def training_memory(model: nn.Module, forward: Callable[[], torch.Tensor], kept: tuple[torch.Tensor, ...] = ()) -> dict:
    """Memory of one training pass: `forward()` (a scalar loss over `model`) then its backward.

    `kept` as in `kept_for_backward`. Returns saved_bytes (activations saved for backward), param_bytes and grad_bytes (of the
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
    loss, saved = kept_for_backward(forward, {p.untyped_storage().data_ptr() for p in params}, kept)
    loss.backward()
    peak = None
    if on_gpu:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    return {"saved_bytes": saved, "param_bytes": param_bytes, "grad_bytes": param_bytes,
            "total_bytes": saved + 2 * param_bytes, "cuda_peak_bytes": peak}
