"""Data-parallel set-up under ``torchrun`` (base layer: the autoencoder trainer and the DG training import it).

:func:`init_distributed` joins the process group that ``torchrun`` describes; :func:`world` reads (rank, world
size) of the current process group, (0, 1) without one.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (env WORLD_SIZE > 1); returns (rank, world size).

    Backend gloo on CPU, nccl when CUDA is available. Without torchrun this is (0, 1) and does nothing.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
