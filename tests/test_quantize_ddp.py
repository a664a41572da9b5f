"""Two CPU processes on gloo: quantizer state stays identical on every rank, metrics cover both."""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mediatok.quantize import build_quantizer


def gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def assert_same_on_every_rank(tensor: torch.Tensor, what: str) -> None:
    parts = gathered(tensor)
    assert all(torch.equal(parts[0], p) for p in parts[1:]), f"{what} differs between ranks"


def worker(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),  # a collective one rank never joins fails, not hangs
    )
    try:
        # Different seeds per rank: different data, different randperm picks inside k-means and
        # revival; only the collectives can make the state agree.
        torch.manual_seed(100 + rank)
        cases = [
            (
                "vq",
                {"dim": 4, "codebook_size": 16, "kmeans_init": True, "dead_code_after_tokens": 50},
            ),
            ("rvq", {"dim": 4, "codebook_size": 8, "num_quantizers": 2, "kmeans_init": True}),
            ("vq", {"dim": 4, "codebook_size": 16, "ema_update": False, "kmeans_init": True}),
        ]
        for kind, options in cases:
            quantizer = build_quantizer(kind, **options)
            # Broadcast the random initial state, as DDP does for parameters and buffers.
            for tensor in quantizer.state_dict().values():
                dist.broadcast(tensor, src=0)
            for step in range(4):
                # Rank 1 sees data far from rank 0's, so k-means and EMA must pool both.
                latents = torch.randn(64 + 16 * rank, 4) + 5.0 * rank
                out = quantizer(latents)
                state = quantizer.state_dict()
                for key, value in state.items():
                    assert_same_on_every_rank(value, f"{kind} {key} after step {step}")

                # Usage is that of the codes of both ranks together.
                codes = out.codes.reshape(len(latents), -1)
                sizes = gathered(torch.tensor([len(codes)]))
                padded = torch.full((max(int(s) for s in sizes), codes.shape[1]), -1)
                padded[: len(codes)] = codes
                everyone = torch.cat(gathered(padded))
                level0 = everyone[:, 0][everyone[:, 0] >= 0]
                expected = torch.unique(level0).numel() / quantizer.codebook_sizes[0]
                usage_key = "usage" if quantizer.num_levels == 1 else "usage_q0"
                assert abs(float(out.metrics[usage_key]) - expected) < 1e-6, (kind, step)
                assert_same_on_every_rank(out.metrics["perplexity"], f"{kind} perplexity")

        # In eval each rank works alone: a rank that encodes more batches than another (the
        # last batch of a split folder) must not wait in a collective. Rank 1 quantizes three
        # times, rank 0 never: a collective would hang until the group's timeout.
        quantizer = build_quantizer("vq", dim=4, codebook_size=16).eval()
        for _ in range(3 * rank):
            out = quantizer(torch.randn(8, 4))
            here = torch.unique(out.codes).numel() / 16  # this rank's codes only
            assert abs(float(out.metrics["usage"]) - here) < 1e-6
        dist.barrier()

        # The LFQ entropy uses the batch distribution over both ranks.
        quantizer = build_quantizer("lfq", dim=6, codebook_size=64)
        for tensor in quantizer.state_dict().values():
            dist.broadcast(tensor, src=0)
        loss = quantizer(torch.randn(32, 6) + rank).losses["entropy"]
        assert torch.isfinite(loss)
    finally:
        dist.destroy_process_group()


def test_two_ranks_keep_one_codebook(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)
