"""Data-parallel training across processes started by torchrun (one machine or several):

    torchrun --nproc-per-node 2 -m minbert train configs/quickstart.yaml

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and the rendezvous address; `setup` joins the
process group with the backend the device needs (gloo on CPU, nccl on GPU). Every rank builds the same task
schedule and the same global batches from the shared seed and takes its own share of each (`shard`), so the
schedule is identical everywhere; gradients are averaged (DistributedDataParallel for summed losses, an
all-reduce of the per-task gradient rows for PCGrad/GradVac); only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minbert.runs import pick_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    env = os.environ
    return Dist(
        dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1))
    )


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group when there is one; the device for this process. Under torchrun even one
    process joins a group of one, so `--nproc-per-node 1` brings up the backend (NCCL on a GPU) it would use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist(), pick_device(device_name)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    d = current()
    if not d.main:
        logging.getLogger("minbert").setLevel(logging.WARNING)  # one rank speaks
    log.info("distributed: %d processes, backend %s", d.world, dist.get_backend())
    return d, device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(idx: list[int], rank: int, world: int) -> list[int]:
    """This rank's share of a global batch: every world-th example (the batch is length-sorted, so shares balance)."""
    return idx[rank::world]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """t summed over the ranks, in place. NCCL reduces CUDA tensors only: a CPU one (the step's loss totals) makes
    the trip to this rank's GPU and back."""
    if current().world > 1:
        if t.device.type != "cuda" and dist.get_backend() == "nccl":
            on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            return t.copy_(on_gpu)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] (just [obj] in one process)."""
    d = current()
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's obj on every rank."""
    if current().world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_tensors(tensors) -> None:
    """Overwrite the tensors, in place, with rank 0's."""
    if current().world > 1:
        for t in tensors:
            dist.broadcast(t, src=0)


def barrier() -> None:
    if current().world > 1:
        dist.barrier()


def gathered_rows(fn, n: int) -> torch.Tensor:
    """fn(indices) -> tensor with one row per index; each rank computes rows rank, rank + world, ... and all of
    them come back in order on every rank (sharded evaluation)."""
    d = current()
    mine = list(range(d.rank, n, d.world))
    part = fn(mine)
    if d.world == 1:
        return part
    parts = all_gather(part.cpu())
    out = torch.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r :: d.world] = p
    return out.to(part.device)
