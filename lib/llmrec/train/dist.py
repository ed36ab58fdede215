"""The two data-parallel backends, as seen from inside one training process.

The train loop is written once against `Dist`; HorovodDist and TorchDist differ only in
how gradients are averaged (Horovod's DistributedOptimizer vs DDP hooks), how metrics
and objects travel between ranks, and how accumulation skips communication.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch


class Dist:
    name = "single"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def allreduce_max(self, value: float) -> float:
        return float(value)

    def allgather(self, array: np.ndarray) -> np.ndarray:
        """Concatenation of every rank's 1-D array, in rank order."""
        return array

    def broadcast_object(self, obj):
        return obj

    def prepare(self, model, optimizer, accum: int):
        return model, optimizer

    def no_sync(self, model):
        """Context for micro-batches whose gradients are only accumulated."""
        return contextlib.nullcontext()

    def step(self, optimizer, params, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()

    def shutdown(self) -> None:
        pass


class HorovodDist(Dist):
    name = "horovod"

    def __init__(self):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()

    def allreduce_sum(self, values) -> np.ndarray:
        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        return self.hvd.allreduce(t, op=self.hvd.Sum, name=None).numpy()

    def allreduce_max(self, value: float) -> float:
        return float(self.hvd.allreduce(torch.tensor([value], dtype=torch.float64),
                                        op=self.hvd.Max).item())

    def allgather(self, array: np.ndarray) -> np.ndarray:
        return self.hvd.allgather(torch.as_tensor(array)).numpy()

    def broadcast_object(self, obj):
        # An explicit name: Horovod's default is the object's type name, which differs when
        # only rank 0 holds the object (dict vs NoneType), and the ranks then wait forever.
        self._objects = getattr(self, "_objects", 0) + 1
        return self.hvd.broadcast_object(obj, root_rank=0, name=f"llmrec.object.{self._objects}")

    def prepare(self, model, optimizer, accum: int):
        # Same starting point everywhere; optimizer state is already identical on every
        # rank (fresh, or loaded from the checkpoint rank 0 broadcast).
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = self.hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(),
            backward_passes_per_step=accum, op=self.hvd.Average)
        return model, optimizer

    def step(self, optimizer, params, max_norm: float) -> None:
        # Clip the averaged gradients: wait for the allreduce, then step without another.
        optimizer.synchronize()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        with optimizer.skip_synchronize():
            optimizer.step()

    def shutdown(self) -> None:
        self.hvd.shutdown()


class TorchDist(Dist):
    name = "torch_distributor"

    def __init__(self, use_gpu: bool):
        import torch.distributed as dist

        self.dist = dist
        self.device = torch.device("cpu")
        self.rank, self.size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        if use_gpu:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        dist.init_process_group("nccl" if use_gpu else "gloo")

    def _reduce(self, values, op) -> np.ndarray:
        t = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(self.device)
        self.dist.all_reduce(t, op=op)
        return t.cpu().numpy()

    def allreduce_sum(self, values) -> np.ndarray:
        return self._reduce(values, self.dist.ReduceOp.SUM)

    def allreduce_max(self, value: float) -> float:
        return float(self._reduce([value], self.dist.ReduceOp.MAX)[0])

    def allgather(self, array: np.ndarray) -> np.ndarray:
        parts = [None] * self.size
        self.dist.all_gather_object(parts, array)
        return np.concatenate(parts)

    def broadcast_object(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def prepare(self, model, optimizer, accum: int):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids), optimizer  # DDP broadcasts rank 0's parameters

    def no_sync(self, model):
        return model.no_sync()

    def shutdown(self) -> None:
        self.dist.destroy_process_group()


def create(backend: str, use_gpu: bool) -> Dist:
    if backend == "horovod":
        return HorovodDist()
    if backend == "torch_distributor":
        return TorchDist(use_gpu)
    return Dist()
