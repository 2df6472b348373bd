"""Training memory as torch measures it: what `lmforge.cost.activation_memory`'s formula is checked
against (tests/test_memory.py, tests/test_gpu.py, benchmarks/memory_check.py). Nothing in training
uses it; it imports no other lmforge module.
"""

from __future__ import annotations

import torch


def measured_training_memory(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor,
                             amp_dtype: torch.dtype | None = None, peak: bool = True) -> dict[str, int]:
    """Bytes one forward and backward of `model(idx, targets=targets)` keeps, measured by torch, not
    by `lmforge.cost`'s formula (which these measurements check):

    saved     the tensors autograd saves for backward (`saved_tensors_hooks`), each storage once,
              the model's parameters, buffers and the batch apart (saved too, but no activation:
              "saved_parameters"); it cannot see what a selective recomputation caches outside autograd
    held      the storages the forward made that are still alive when it returns: everything
              kept for backward, however it is kept (saved tensors, checkpointed blocks' inputs,
              selective recomputation's cache, the autocast copies of the weights)
    peak      the most bytes allocated at once during forward and backward beyond what was
              allocated before (the parameters, and gradients already allocated: as with
              gradient accumulation): `torch.cuda.max_memory_allocated` on CUDA, the profiler's
              memory timeline on a CPU (seconds where the rest takes milliseconds: `peak=False` skips it)
    """
    # gradients exist before the measured step, as from the second micro-batch on
    _forward_backward(model, idx, targets, amp_dtype)
    held, saved, saved_parameters = _held_and_saved(model, idx, targets, amp_dtype)
    measured = {"saved": saved, "saved_parameters": saved_parameters, "held": held}
    return measured | ({"peak": _peak(model, idx, targets, amp_dtype)} if peak else {})


def _forward(model, idx, targets, amp_dtype):
    with torch.autocast(idx.device.type, amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(idx, targets=targets)


def _forward_backward(model, idx, targets, amp_dtype) -> None:
    _forward(model, idx, targets, amp_dtype).backward()


def _held_and_saved(model, idx, targets, amp_dtype) -> tuple[int, int, int]:
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    def key(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    resident = {key(t) for t in [*model.parameters(), *model.buffers(), idx, targets]}  # not the forward's
    saved: dict[int, int] = {}
    parameters: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        (parameters if key(t) in resident else saved)[key(t)] = t.untyped_storage().nbytes()
        return t

    made: dict[int, tuple[StorageWeakRef, int]] = {}

    class Made(TorchDispatchMode):  # every storage an op of the forward returns
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta" and key(t) not in resident:
                    made[key(t)] = StorageWeakRef(t.untyped_storage()), t.untyped_storage().nbytes()
            return out

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), Made():
        loss = _forward(model, idx, targets, amp_dtype)
    held = sum(n for ptr, (ref, n) in made.items() if not ref.expired() and ptr != key(loss))
    loss.backward()
    return held, sum(saved.values()), sum(parameters.values())


def _peak(model, idx, targets, amp_dtype) -> int:
    if idx.device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _forward_backward(model, idx, targets, amp_dtype)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        _forward_backward(model, idx, targets, amp_dtype)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]
