"""The few pieces every bundle's ``multi_gpu.yaml`` needs under ``torchrun``: NCCL on GPUs, gloo on CPU.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; each process trains on the GPU of its
``LOCAL_RANK`` (or on the CPU when there is none), gradients are averaged by DistributedDataParallel,
and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardHandler

# every TensorBoard handler (scalars, images, MAE reconstructions) writes from rank 0 only
MAIN_PROCESS_ONLY = (StatsHandler, TensorBoardHandler, CheckpointSaver)


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when a GPU is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: torch.device | None = None) -> int:
    """Join the process group (NCCL for CUDA devices, gloo otherwise) once; returns this process's rank."""
    device = device or local_device()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return dist.get_rank()


def distributed_model(
    module: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False
) -> torch.nn.parallel.DistributedDataParallel:
    """Move ``module`` to ``device`` and wrap it for data-parallel training.

    Args:
        module: the network.
        device: this process's device.
        find_unused_parameters: needed when some trainable parameters never reach the loss (e.g. the
            ``norm_cross_attn`` of MONAI ``TransformerBlock`` s built without cross-attention).
    """
    module = module.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (``module`` itself when not wrapped)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def is_main_process() -> bool:
    """True on rank 0, or when not running distributed."""
    return not dist.is_initialized() or dist.get_rank() == 0


def main_process_handlers(handlers: list) -> list:
    """Drop logging and checkpoint handlers on every rank but 0.

    Dropping a handler does not undo its construction: a MONAI ``TensorBoardStatsHandler`` opens its event
    file when built, so the bundles also disable it (``_disabled_``) on other ranks; this package's
    TensorBoard handlers open theirs at the first write.
    """
    return [h for h in handlers if is_main_process() or not isinstance(h, MAIN_PROCESS_ONLY)]


def finish_distributed() -> None:
    """Leave the process group (after training)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
