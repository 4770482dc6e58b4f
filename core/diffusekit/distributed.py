"""Scale-out with ``torch.distributed``: the same recipe on one process or many.

Launch any ``diffusekit`` command with ``torchrun`` and it runs on every process:

* training splits each step's global batch (``train.batch_size``, unchanged) across the
  processes, which average their gradients (DDP, or FSDP with ``train.shard``). The batch, its
  times, noise and condition dropout are drawn for the whole batch from the ``(seed, step)``
  generator on every process, so N processes compute the single-process step, up to
  the order of floating-point sums; process 0 alone writes checkpoints and metrics;
* sampling gives each process a contiguous share of the samples, drawn with per-sample
  random streams (:mod:`diffusekit.rng`), and gathers them: the result equals the
  single-process run bit for bit where the network's output for a sample does not
  depend on the rest of its batch.

The backend is chosen by the device: NCCL where CUDA is available, gloo otherwise.
Nothing here starts a process group unless ``torchrun`` (or another launcher) set
``WORLD_SIZE`` above 1.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor


@attrs.frozen
class World:
    """This process's place among the processes of a job (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and talks to the user."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """The device this process computes on: its own GPU under NCCL, else the CPU."""
        if self.size > 1 and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def world() -> World:
    """The current job: the initialised process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init_from_environment() -> World:
    """Join the process group a launcher (``torchrun``) describes in the environment, once.

    ``WORLD_SIZE`` above 1 starts ``torch.distributed`` with NCCL if CUDA is available
    (each process on GPU ``LOCAL_RANK``) and gloo otherwise; without it, nothing happens.
    """
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return world()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    atexit.register(leave)
    return world()


def leave(wait: bool = False) -> None:
    """Leave the process group (at exit, or sooner). ``wait``: first wait for every process to
    get here, so that none tears its connections down while another still uses them (gloo
    can abort a process whose peer left mid-exchange); only on success, as a failed process's
    peers may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def share(total: int, part: World | None = None) -> range:
    """The contiguous share of ``range(total)`` of one process: sizes differ by at most one,
    earlier ranks take the larger shares."""
    part = part or world()
    base, extra = divmod(total, part.size)
    start = part.rank * base + min(part.rank, extra)
    return range(start, start + base + (1 if part.rank < extra else 0))


def all_sum(value: Tensor) -> Tensor:
    """``value`` summed over the processes (itself for one process)."""
    if world().size == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_rows(parts: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    """Every process's rows of ``parts`` concatenated in rank order, on every process (``None``:
    a process without rows, when there are fewer samples than processes)."""
    if world().size == 1:
        return parts
    gathered: list[Any] = [None] * world().size
    dist.all_gather_object(gathered, None if parts is None else {n: v.cpu() for n, v in parts.items()})
    present = [g for g in gathered if g is not None]
    device = world().device
    return {name: torch.cat([g[name] for g in present]).to(device) for name in present[0]}


def barrier() -> None:
    if world().size > 1:
        dist.barrier()
