"""Multi-process training with torchrun: DDP (gloo on CPU, NCCL on GPU) and a global NT-Xent.

NT-Xent negatives are gathered from every rank with `torch.distributed.nn.functional.all_gather`, whose
backward sends each rank the gradient of its own rows, so the effective contrastive batch is the global one.
Every rank computes the same global loss; all_gather's backward sums the W identical gradients and DDP's
averaging divides by W again, so parameter gradients equal those of one process on the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from training.losses import nt_xent


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if world <= 1:
        return DistInfo(device=device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device
    )


def teardown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks along dim 0, in rank order, with gradients through the gather."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def global_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent over the views of all ranks (rank r holds rows r·B … r·B + B − 1 of the global batch)."""
    return nt_xent(gather_rows(z1), gather_rows(z2), temperature)


def mean_across_ranks(value: float) -> float:
    """Average a Python float over ranks (for logging)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()
