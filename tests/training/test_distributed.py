"""2 gloo CPU processes: the gathered NT-Xent and its DDP gradients equal one process on the global batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from training.distributed import global_nt_xent
from training.losses import nt_xent

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(7)
    model = torch.nn.Linear(6, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 6, generator=g))
        model.bias.copy_(torch.randn(4, generator=g))
    x1, x2 = torch.randn(6, 6, generator=g), torch.randn(6, 6, generator=g)  # global batch of 6 pairs
    return model, x1, x2


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model, x1, x2 = _data()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        rows = slice(rank * 3, rank * 3 + 3)
        z = ddp(torch.cat([x1[rows], x2[rows]]))
        loss = global_nt_xent(*z.chunk(2), temperature=0.5)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": model.weight.grad.clone()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    model, x1, x2 = _data()
    z1, z2 = model(x1), model(x2)
    loss = nt_xent(z1, z2, temperature=0.5)
    loss.backward()
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(result["loss"]) == pytest.approx(float(loss), rel=1e-5)
        torch.testing.assert_close(result["grad"], model.weight.grad, rtol=1e-4, atol=1e-6)


def test_gather_is_identity_without_process_group():
    z = torch.randn(3, 4)
    assert torch.equal(global_nt_xent(z, z * 2), nt_xent(z, z * 2))
