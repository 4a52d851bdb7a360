"""Data-parallel training across processes started by ``torchrun`` (DDP); one process otherwise.

``torchrun --nproc_per_node 4 -m pdeserve.cli train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; each process then trains on its share of every shuffled epoch and gradients are
averaged by ``DistributedDataParallel``. NCCL with CUDA, Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run.

    Parameters
    ----------
    rank : int
        Global rank (0 writes checkpoints, shows progress and publishes).
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this machine: the CUDA device it uses.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Read torchrun's variables; a single process when they are absent."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (when distributed); returns the device this process trains on."""
        if self.world_size == 1:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` wrapped in ``DistributedDataParallel`` when distributed."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This process's share of an epoch's sample order (equal shares: the tail is dropped)."""
        if self.world_size == 1:
            return order
        usable = len(order) - len(order) % self.world_size
        return order[:usable][self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
