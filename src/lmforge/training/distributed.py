"""torch.distributed setup for `torchrun`: one process per device, gloo (CPU) or NCCL; the model
replicated (DDP) or sharded (FSDP2, `train.data_parallel=fsdp`)."""

from __future__ import annotations

import os
from datetime import timedelta
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); one device per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # gloo beside NCCL on a GPU: the ranks' small host-side agreements (`any_rank`) go over it,
        # without a device synchronisation each step (torchtitan keeps a CPU backend for the same)
        dist.init_process_group("cuda:nccl,cpu:gloo" if device.type == "cuda" else "gloo")
    return info, device


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether `flag` holds on any rank (every rank calls it, at the same point)."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)  # a CPU tensor: gloo, the host only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def main_first(info: DistInfo, work, key: str) -> None:
    """Rank 0 runs `work()` (tokenizing a corpus: minutes to hours) while the other ranks wait on
    the rendezvous store with no deadline, not in a collective whose timeout (10 minutes under
    NCCL) would kill the job. A failed rank 0 ends the job through torchrun, not a hang."""
    if not info.enabled:
        work()
        return
    store = dist.distributed_c10d._get_default_store()
    if info.is_main:
        work()
        store.set(key, "done")
    else:
        store.wait([key], timedelta(days=365))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo, finished: bool = False) -> None:
    """Leave the process group. A rank that `finished` first waits for the others, so no rank shuts
    its connections down (and exits) while a peer is still using them; after an error there is no
    waiting, which would hang on a peer that is gone."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def shard_model(model: torch.nn.Module, dtype: torch.dtype = torch.float32, compile_blocks: bool = False) -> torch.nn.Module:
    """FSDP2 (`fully_shard`): each Transformer block is a unit (its parameters all-gathered just before
    it runs and freed after), then the root takes the rest (embedding, tied head). Parameters become
    DTensors sharded on dim 0; gradients are reduce-scattered and averaged over ranks, as DDP does.

    With `dtype` bf16 the mixed-precision policy of torchtitan: parameters gathered and computed in
    bf16 (half the all-gather traffic), gradients reduced in float32, the sharded master weights
    and optimizer state float32. `compile_blocks` compiles each block on its own, before sharding,
    so the compiled graphs sit inside FSDP's per-block gather and free (one block's graph, reused)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in model.blocks:
        if compile_blocks:
            block.compile()
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def gather_full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every rank calls it); others as they are."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like` (a DTensor parameter or state): every rank holds `full`."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)
