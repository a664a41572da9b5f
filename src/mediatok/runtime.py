"""Where work runs: the device a command or a training run asks for, and the ranks `torchrun`
launched. One place for both, so that `mediatok train`, `encode`, `decode`, `sample` and `eval`
read `--device` and the torchrun environment the same way.

Layer 1: torch and the standard library.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DEVICES", "barrier", "resolve_device", "torchrun_rank"]

DEVICES = ("auto", "cpu", "cuda")  # what `--device` and `train.device` accept ("cuda:N" too)


def resolve_device(name: str = "auto") -> torch.device:
    """The device named by `name`, checked.

    "auto" is CUDA when torch sees a device, else the CPU. Under torchrun, "auto" and "cuda"
    are this process's `LOCAL_RANK` device (one GPU per rank), made the current device, so that
    kernels and collectives land there; "cuda:N" is taken as it is.

    Args:
        name: "auto", "cpu", "cuda" or "cuda:N".

    Raises:
        ValueError: an unknown name, or a CUDA device asked for where torch sees none.
    """
    if not isinstance(name, str) or name.split(":")[0] not in DEVICES:
        valid = ", ".join(repr(device) for device in DEVICES)
        raise ValueError(f"expected a device among {valid} or 'cuda:N', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"expected a CUDA device for device {name!r}, but torch sees none")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device(name)
    torch.cuda.set_device(device)
    return device


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun describes it in the environment; (0, 1)
    outside torchrun. Joins no process group.

    Raises:
        ValueError: WORLD_SIZE > 1 without RANK (not launched by torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if "RANK" not in os.environ:
        raise ValueError(f"expected RANK beside WORLD_SIZE={world}; launch with torchrun")
    return int(os.environ["RANK"]), world


def barrier(timeout: timedelta = timedelta(days=7)) -> None:
    """Wait for every torchrun rank, on a process group joined for it if there is none yet
    (gloo: nothing to move but the barrier); the timeout lets the slowest rank finish long
    work, such as encoding its share of a folder."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)
    dist.barrier()
