"""What each optimizer step gets: its learning rate, its optimizer, and its batches.

Both schedules are functions of the position alone, so a resumed run continues exactly:

- the lr is a pure function of the step (linear warmup, then cosine decay to ``min_lr_ratio``
  or a constant), written into every parameter group before each optimizer step. Being
  stateless it cannot drift from the step counter, and the generator and the discriminator
  follow it alike even when the discriminator starts late;
- the data order is this rank's shard of a permutation of (seed, epoch), and the position is
  (epoch, batches read in it): a resumed run starts its loader at that offset in the same
  permutation, without reading the skipped samples.

Layer 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = [
    "EpochBatches",
    "build_adamw",
    "default_param_groups",
    "lr_factor",
    "set_learning_rate",
]

Schedule = Literal["cosine", "constant"]


def lr_factor(
    step: int,
    *,
    steps: int,
    warmup_steps: int = 0,
    schedule: Schedule = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning-rate multiplier of optimizer step ``step``.

    Warmup rises linearly as ``(step + 1) / (warmup_steps + 1)`` so the first step already
    moves (nanoGPT's form); from ``warmup_steps`` on the factor is 1 for "constant", or for
    "cosine" falls as ``r + (1 - r) · ½(1 + cos(π · p))`` with ``p`` going from 0 at
    ``warmup_steps`` to 1 at ``steps`` (and held there beyond, should a run be extended).

    Args:
        step: 0-based index of the optimizer step (the number of steps already done).
        steps: total number of optimizer steps of the run.
        warmup_steps: length of the linear warmup.
        schedule: "cosine" or "constant".
        min_lr_ratio: r, the factor the cosine ends at.

    Returns:
        The factor in ``(0, 1]`` (or ``[r, 1]`` after warmup) to multiply the base lr by.
    """
    if step < 0:
        raise ValueError(f"expected a step >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"expected schedule 'cosine' or 'constant', got {schedule!r}")
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's ``lr`` to its ``base_lr`` times ``factor``.

    Args:
        optimizer: an optimizer from :func:`build_adamw` (each group holds ``base_lr``).
        factor: from :func:`lr_factor`.

    Returns:
        The lr of the first group, for logging.
    """
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return float(optimizer.param_groups[0]["lr"])


def default_param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels only.

    Biases, norm scales and every other 1-D (or scalar) parameter get no decay: decaying a
    LayerNorm gain towards 0 fights the normalization rather than regularizing (the GPT-2 /
    nanoGPT rule: decay iff ``ndim >= 2``).

    Args:
        module: the model or the discriminator.

    Returns:
        ``[{"params": decayed}, {"params": not decayed, "weight_decay": 0.0}]`` over the
        parameters that require a gradient.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2]},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_adamw(
    module: nn.Module,
    groups: Iterable[dict[str, Any]],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    fused: bool,
) -> torch.optim.AdamW:
    """AdamW over ``groups``, checked to cover each trainable parameter of ``module`` once.

    Args:
        module: the module whose trainable parameters the groups must partition.
        groups: parameter groups (``params`` plus optional ``lr`` / ``weight_decay`` /
            ``betas``); empty groups are dropped.
        lr: base lr of groups that set none; each group keeps its base as ``base_lr``.
        betas: Adam β1, β2.
        weight_decay: decoupled weight decay of groups that set none.
        fused: the fused CUDA kernel (one launch for all parameters).

    Returns:
        The optimizer.

    Raises:
        ValueError: a group holds a parameter twice or one that is not trainable in
            ``module``, or a trainable parameter is in no group.
    """
    trainable = {id(p): name for name, p in module.named_parameters() if p.requires_grad}
    seen: set[int] = set()
    kept: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        for p in params:
            if id(p) not in trainable:
                raise ValueError("param_groups returned a parameter that is not trainable here")
            if id(p) in seen:
                raise ValueError(f"param_groups lists {trainable[id(p)]!r} twice")
            seen.add(id(p))
        if params:
            base_lr = group.get("lr", lr)
            kept.append({**group, "params": params, "lr": base_lr, "base_lr": base_lr})
    missing = [name for key, name in trainable.items() if key not in seen]
    if missing:
        raise ValueError(f"param_groups left out trainable parameters: {', '.join(missing)}")
    if not kept:
        raise ValueError(f"{type(module).__name__} has no trainable parameters to optimize")
    return torch.optim.AdamW(
        kept, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None
    )


class _FromOffset(Sampler[int]):
    """This rank's shard of the (seed, epoch) permutation, from position ``start`` on."""

    def __init__(self, shard: DistributedSampler[Any]) -> None:
        self.shard, self.start = shard, 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.shard)[self.start :])

    def __len__(self) -> int:
        return len(self.shard) - self.start


class EpochBatches:
    """An endless iterator of batches over epochs that knows, and restores, its position.

    Args:
        dataset: a map-style dataset; if it has ``set_epoch(epoch)`` it is called before each
            epoch (and DataLoader workers are then restarted each epoch so they see it).
        batch_size: samples per batch on this rank; incomplete batches are dropped.
        seed: seeds the permutation (with the epoch) and the loader's worker seeds.
        rank, world_size: this rank's shard of each permutation (1 rank: all of it).
        collate: samples -> batch.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches for faster host-to-GPU copies.

    Raises:
        ValueError: the dataset holds less than one batch per rank.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        collate: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        # One sampler for 1 and N ranks (replicas and rank given, so no process group is
        # needed) keeps the order a function of (seed, epoch) alone.
        shard = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_epoch = len(shard) // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"the dataset has {len(shard) * world_size} usable samples ({len(shard)} per "
                f"rank), fewer than one batch of {batch_size} per rank"
            )
        self.dataset, self.batch_size, self.seed, self.rank = dataset, batch_size, seed, rank
        self.sampler = _FromOffset(shard)
        # A private generator: the loader draws worker seeds from it rather than from the
        # global RNG, so starting an epoch (or resuming in one) leaves the training RNG alone.
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=True,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0 and not hasattr(dataset, "set_epoch"),
            generator=self.generator,
        )
        self.epoch, self.index = 0, 0
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Any:
        while True:
            if self._iterator is None:
                self.sampler.shard.set_epoch(self.epoch)
                self.sampler.start = self.index * self.batch_size
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self.epoch)
                entropy = np.random.SeedSequence([self.seed, self.rank, self.epoch])
                self.generator.manual_seed(int(entropy.generate_state(1, np.uint64)[0] >> 1))
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator, self.epoch, self.index = None, self.epoch + 1, 0
                continue
            self.index += 1
            return batch

    def state_dict(self) -> dict[str, int]:
        """The position: ``{"epoch": e, "index": batches already read in epoch e}``."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a :meth:`state_dict`; the next batch is the one after it."""
        self.epoch, self.index, self._iterator = int(state["epoch"]), int(state["index"]), None
