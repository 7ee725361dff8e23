"""Training across processes with torchrun: one process per GPU (or CPU worker), one model replica each.

    torchrun --nproc_per_node=N -m trainer STAGE --config FILE --out DIR [...]

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; without them
(``python -m trainer ...``) everything here is a no-op and the run is the single-process run.
With them: a process group from the environment (NCCL on CUDA devices, gloo on CPUs), the
model in DistributedDataParallel, gradients of the loss's own trainable parts (KD adapters, the
discriminator) averaged the same way, decisions (early stop, time budget) taken by rank 0 and
broadcast, and only rank 0 evaluates, logs and writes checkpoints.

Batches: ``train.batch_size`` is per process, so the effective batch is N x batch_size. Step
``s`` draws the *global* batch of N x batch_size indices from the generator seeded by
(seed, s) (``trainer.train.StepBatches``) and rank r takes the r-th contiguous slice
(:class:`ShardedBatches`): a batch depends only on the step, so ``--resume`` stays exact, and
N processes at batch_size B/N see exactly the samples of one process at B (the mean of the
ranks' mean losses is the global mean, so the gradient step is the same up to float order and
per-rank BatchNorm statistics). This replaces DistributedSampler + set_epoch, whose order
depends on an epoch counter instead of the step. Learning rate: not scaled automatically;
keep the recipe's LR at the same effective batch (``--set train.batch_size=B/N``), or raise it
with the batch (linear scaling, with warmup) yourself (docs/SCALE_OUT.md).
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

WORLD_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# The other ranks wait in a collective while rank 0 evaluates on the full validation slices.
COLLECTIVE_TIMEOUT = timedelta(hours=1)


class ShardedBatches(torch.utils.data.Sampler):
    """Rank ``rank``'s contiguous slice of every global batch a batch sampler yields."""

    def __init__(self, global_batches: torch.utils.data.Sampler, rank: int, world_size: int) -> None:
        self.global_batches, self.rank, self.world_size = global_batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches:
            per_rank = len(batch) // self.world_size
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return len(self.global_batches)


class AuxForward(nn.Module):
    """``forward`` = the model's ``forward_with_aux``, so DDP sees the call it synchronizes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_with_aux(x)


class SilentLog:
    """What the other ranks write their log records to: nowhere."""

    def write(self, record: dict) -> None:
        pass


@dataclass
class Distributed:
    """This process's place in the run; world_size 1 (the default) is a single-process run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs and checkpoints."""
        return self.rank == 0

    def global_batch(self, batch_size: int) -> int:
        """The effective batch: ``batch_size`` per process times the number of processes."""
        return batch_size * self.world_size

    def shard(self, global_batches: torch.utils.data.Sampler) -> torch.utils.data.Sampler:
        """This rank's share of a sampler of global batches (the sampler itself when alone)."""
        return ShardedBatches(global_batches, self.rank, self.world_size) if self.active else global_batches

    def forward(self, model: nn.Module) -> Callable[[torch.Tensor], Any]:
        """The training forward: ``model.forward_with_aux`` alone, in DDP across processes."""
        if not self.active:
            return model.forward_with_aux
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Unused parameters are allowed: a stage's loss need not touch every head of the model.
        return nn.parallel.DistributedDataParallel(AuxForward(model), device_ids=ids, find_unused_parameters=True)

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Average the gradients of parameters outside DDP (KD adapters, discriminator) over ranks."""
        if not self.active:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad.div_(self.world_size)

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (a time measured once for all)."""
        if not self.active:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._collective_device())
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision on every rank (stop early, out of time)."""
        return bool(self.from_main(1.0 if flag else 0.0))

    def replica_digests(self, model: nn.Module) -> list[str]:
        """Every rank's sha256 of its model's parameters and buffers (identical replicas agree)."""
        digest = weights_digest(model)
        if not self.active:
            return [digest]
        mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=self._collective_device())
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        return [bytes(t.cpu().tolist()).hex() for t in gathered]

    def close(self) -> None:
        """Leave the process group (all ranks wait for each other first)."""
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def weights_digest(model: nn.Module) -> str:
    """sha256 over a model's state_dict tensors (name, dtype, shape and bytes) in key order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def start(device: torch.device, environ: dict[str, str] | None = None) -> Distributed:
    """This process's :class:`Distributed`: a process group from torchrun's environment (NCCL for
    CUDA, gloo for CPU) with one device per local rank, or a single-process run on ``device``."""
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device)
    missing = [name for name in WORLD_VARIABLES if name not in environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: start the run with torchrun")
    rank, local_rank = int(environ["RANK"]), int(environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} CUDA device(s): "
                             "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                timeout=COLLECTIVE_TIMEOUT)
    return Distributed(device, rank, world_size, local_rank)
