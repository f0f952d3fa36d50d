"""Data-parallel training under torchrun (``torchrun --nproc-per-node N -m realfake.train``, or
``-m realfake.finetune``).

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` for each process; without them the
world is one process and nothing here touches ``torch.distributed``. Semantics (docs/stages.md):

* A recipe's ``batch_size`` is the global batch of a step (the paper's 1024 = 128 x 8 GPUs), on
  any number of processes; each accumulates micro-batches (:mod:`realfake.budget`). The learning
  rate is not rescaled.
* Each epoch's global order (a pure function of seed and epoch) is cut into global batches; rank
  ``r`` takes the ``r``-th slice of ``batch_size / size`` in each (:func:`rank_order`), so the
  images of step ``s`` are the same on any number of processes.
* Gradients are averaged over ranks by DDP; only rank 0 writes files, and the resumable state
  holds every rank's RNG state, so a resumed run continues exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, outputs and logs."""
        return self.rank == 0


SINGLE = World()


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in ``env`` (one process when it describes none)."""
    size = int(env.get("WORLD_SIZE", "1"))
    world = World(int(env.get("RANK", "0")), size, int(env.get("LOCAL_RANK", "0")))
    if not 0 <= world.rank < size:
        raise ValueError(f"RANK={world.rank} is outside WORLD_SIZE={size}")
    return world


def start(world: World, device_type: str) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); nothing for a single process."""
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


def stop(world: World) -> None:
    """Leave the process group after every rank has arrived."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_order(order: torch.Tensor, batch_size: int, world: World) -> torch.Tensor:
    """Rank ``world.rank``'s share of a global sample ``order``, in step order: from each global
    batch of ``batch_size * world.size`` indices, its ``batch_size``-long slice. An incomplete last
    global batch is dropped (as ``drop_last``)."""
    steps = len(order) // (batch_size * world.size)
    shaped = order[: steps * batch_size * world.size].view(steps, world.size, batch_size)
    return shaped[:, world.rank].reshape(-1)


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a stop signal that reached one rank)."""
    if world.size == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read next)."""
    if world.size > 1:
        dist.barrier()


def gather(value: object, world: World) -> list[object]:
    """``value`` of every rank, in rank order (a one-item list for a single process)."""
    if world.size == 1:
        return [value]
    values: list[object] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def wrap(model: torch.nn.Module, device: torch.device, world: World) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several processes."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def device_for(device: str, world: World) -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` for CUDA with several processes (made current,
    as NCCL collectives need), else ``device`` as resolved."""
    if device.startswith("cuda") and world.size > 1:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device(device)
