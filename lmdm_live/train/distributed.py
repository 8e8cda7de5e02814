"""Data-parallel training under `torchrun`: one process per device, the gloo backend on CPU, NCCL on GPUs.

The batch a run is given is the global one. Every random draw of a step (which examples, their crops,
dropout, noise, timesteps, rollout exits) is made for the whole global batch from the step's generator, as
a single process makes it, and each process then computes only its own rows (`Rows`). DDP averages the
gradients, so N processes follow the single-process trajectory up to float rounding, and the step counter
and per-step RNG do not depend on the world size (a run may resume on another number of processes).

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) a run is the plain single process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Rows:
    """This process's rows [start, stop) of a global batch of `total` rows."""

    start: int
    stop: int
    total: int

    @classmethod
    def all(cls, total: int) -> Rows:
        return cls(0, total, total)

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    @property
    def indices(self) -> list[int]:
        return list(range(self.start, self.stop))

    def take(self, x: Tensor) -> Tensor:
        """This process's rows of a tensor drawn for the whole batch."""
        return x if self.whole else x[self.start : self.stop]

    def widen(self, x: Tensor) -> Tensor:
        """This process's rows placed in a whole batch of zeros (where batch-wide code expects all rows)."""
        if self.whole:
            return x
        before = x.new_zeros(self.start, *x.shape[1:])
        after = x.new_zeros(self.total - self.stop, *x.shape[1:])
        return torch.cat([before, x, after])


@dataclass(frozen=True)
class World:
    """Where this process stands among the run's processes, and the device it trains on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints and prints; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rows(self, batch: int) -> Rows:
        """An equal share of the global batch, the ranks in order."""
        if batch % self.size:
            raise ValueError(
                f"--batch {batch} does not split over {self.size} processes: the batch is the global one, "
                f"give a multiple of {self.size}"
            )
        share = batch // self.size
        return Rows(self.rank * share, (self.rank + 1) * share, batch)

    def mean(self, value: Tensor) -> float:
        """The mean of a per-process value over the processes (each has an equal share of the rows, so this
        is the value of the whole batch): what the logs and progress files record."""
        if not self.distributed:
            return float(value.detach())
        v = value.detach().float().reshape(1).clone()
        dist.all_reduce(v)
        return float(v) / self.size

    def same_step(self, step: int) -> None:
        """Fail on every rank unless all start at the same step: a host that does not see rank 0's
        checkpoint would start afresh while the others resume, and their collectives would never meet."""
        if not self.distributed:
            return
        steps: list[int | None] = [None] * self.size
        dist.all_gather_object(steps, step)
        if len(set(steps)) > 1:
            self.refuse(
                f"the ranks start at steps {steps}: every host needs the same --out (a shared filesystem, "
                "or a copy of rank 0's checkpoint)"
            )

    def refuse(self, message: str) -> NoReturn:
        """Stop the run over something every rank found: rank 0 says it (one line), the others leave quietly."""
        if self.main:
            raise ValueError(message)
        raise SystemExit(2)


def world_from_env(env: Mapping[str, str] = os.environ, device: str = "cpu") -> World:
    """The world torchrun describes in the environment; a single process without it."""
    if "WORLD_SIZE" not in env:
        return World(device=device)
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")), device)


@contextmanager
def process_group(device: str, batch: int) -> Iterator[World]:
    """Join torchrun's process group for the length of a run (nothing to join for a single process).

    The batch is checked first, so a bad world size fails at once with one line instead of after a
    rendezvous. On CUDA each process takes cuda:LOCAL_RANK."""
    world = world_from_env(device=device)
    try:
        world.rows(batch)
    except ValueError as e:
        world.refuse(str(e))
    if not world.distributed:
        yield world
        return
    kind = torch.device(device)
    if kind.type == "cuda":
        if kind.index is not None:
            raise ValueError("under torchrun give --device cuda: each process takes cuda:LOCAL_RANK")
        torch.cuda.set_device(world.local_rank)
        world, backend = World(world.rank, world.size, world.local_rank, f"cuda:{world.local_rank}"), "nccl"
    elif kind.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"data-parallel training runs on cpu (gloo) or cuda (NCCL), not {device}")
    # torchrun's MASTER_ADDR/MASTER_PORT (or its c10d rendezvous) are in the environment: env:// reads them
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    ok = False
    try:
        yield world
        ok = True
    finally:
        if ok:
            dist.barrier()  # nobody leaves while rank 0 still writes the last checkpoint
        dist.destroy_process_group()


class _GlobalSum(torch.autograd.Function):
    """Sum over the processes. Every process then computes the same loss from it, so the gradient reaching
    each process's share is the same; DDP divides the summed parameter gradients by the world size, which
    the backward undoes by giving each share N times its gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * dist.get_world_size()


def global_sum(x: Tensor) -> Tensor:
    """`x` summed over the processes of the run, with gradient (a loss normalised by a whole-batch total, not
    a mean over its rows, needs it); `x` itself in a single process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    return _GlobalSum.apply(x)


class Objective(nn.Module):
    """A step's loss as a module, so that DistributedDataParallel can wrap it: its parameters are those of
    `owner` (the network being trained), its forward is `loss`. Anything else `loss` uses (a frozen
    opponent, data) stays outside the module, so DDP syncs only what this optimizer trains."""

    def __init__(self, owner: nn.Module, loss: Callable[..., object]) -> None:
        super().__init__()
        self.owner = owner
        self.loss = loss

    def forward(self, *args, **kwargs):
        return self.loss(*args, **kwargs)


def data_parallel(
    owner: nn.Module, loss: Callable[..., object], world: World, find_unused: bool = False
) -> nn.Module:
    """`Objective(owner, loss)`, wrapped in DistributedDataParallel when the run has several processes (which
    also broadcasts rank 0's weights, so every process starts from the same ones). `find_unused` where some
    of the owner's trainable parameters take no part in the loss."""
    objective = Objective(owner, loss)
    if not world.distributed:
        return objective
    from torch.nn.parallel import DistributedDataParallel

    device = next(owner.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=find_unused)
