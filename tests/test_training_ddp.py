"""Two CPU processes on gloo, launched as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT in
the environment), training the toy task with a discriminator: one set of weights, disjoint data
shards, rank 0 alone writes, and a resumed run continues both ranks exactly."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.multiprocessing as mp

from mediatok import checkpoint as checkpoint_module
from mediatok.training import Trainer
from mediatok.training import loop as loop_module
from test_training import ToyGANTask, config

WORLD = 2


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open at once, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def launch(rank: int, port: int) -> None:
    """The environment torchrun gives each process. One port per session: a new process
    group on the port of one just destroyed can meet the old store on another rank."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def worker(rank: int, ports: list[int], root: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    saves: list[str] = []
    save = checkpoint_module.save_checkpoint

    def counted(directory: Any, *args: Any, **kwargs: Any) -> Any:
        saves.append(str(directory))
        return save(directory, *args, **kwargs)

    checkpoint_module.save_checkpoint = counted
    base = {"steps": 4, "save_every": 2, "batch_size": 4, "grad_clip": 0.5, "ema_decay": 0.9}
    results: dict[str, Any] = {}

    # 32 samples, 2 ranks, batches of 4: 4 steps are one epoch, each rank half of it.
    task = ToyGANTask(num_samples=32)
    launch(rank, ports[0])
    straight = Trainer(task, config(Path(root), "a", **base))
    assert straight.world_size == WORLD and straight.rank == rank
    straight.fit()
    results["seen"] = torch.cat(task.seen)
    results["straight"] = {k: v.clone() for k, v in straight.model.state_dict().items()}
    results["discriminator"] = straight.discriminator.state_dict()
    results["saves"] = list(saves)

    interrupted = config(Path(root), "b", **base)
    launch(rank, ports[1])
    try:
        Trainer(ToyGANTask(num_samples=32, crash_at=3), interrupted).fit()
    except RuntimeError as error:
        assert "simulated crash" in str(error)
    else:
        raise AssertionError("the crash did not happen")
    launch(rank, ports[2])
    resumed = Trainer(ToyGANTask(num_samples=32), interrupted, resume=True)
    assert resumed.step == 2
    resumed.fit()
    results["resumed"] = resumed.model.state_dict()
    results["resumed_discriminator"] = resumed.discriminator.state_dict()

    # A time limit: rank 0's clock is past it at once, rank 1's never is; rank 0 decides, so
    # both stop after step 1 (rank 1 going on alone would hang in the next all-reduce).
    if rank == 1:
        loop_module.time = SimpleNamespace(monotonic=lambda: 0.0, perf_counter=time.perf_counter)
    launch(rank, ports[3])
    limited = Trainer(
        ToyGANTask(num_samples=32),
        config(Path(root), "c", **base, log_every=1, time_limit_minutes=1e-9),
    )
    limited.fit()
    results["limited_step"] = limited.step
    torch.save(results, Path(root) / f"rank{rank}.pt")


def test_two_ranks_train_one_model(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_ports(4), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    for part in ("straight", "discriminator"):
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), (part, key)
    seen = [set(r["seen"].tolist()) for r in ranks]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(32))

    a = tmp_path / "a"
    assert ranks[0]["saves"] == [str(a / "checkpoint")] * 2  # steps 2 and 4
    assert ranks[1]["saves"] == []
    assert json.loads((a / "checkpoint" / "config.json").read_text())["world_size"] == WORLD
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 4  # one writer

    # Both ranks' RNG states (dropout) and the data position came back: same weights, same
    # losses after the resume.
    for rank in ranks:
        for key, value in ranks[0]["straight"].items():
            assert torch.equal(rank["resumed"][key], value), key
        for key, value in ranks[0]["discriminator"].items():
            assert torch.equal(rank["resumed_discriminator"][key], value), key

    def losses(run: str) -> dict[int, float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["train/loss"] for r in map(json.loads, lines)}

    assert losses("a") == losses("b")
    assert [rank["limited_step"] for rank in ranks] == [1, 1]
    assert json.loads((tmp_path / "c" / "checkpoint" / "config.json").read_text())["step"] == 1
