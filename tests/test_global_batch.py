"""Batch statistics over the global batch under torch.distributed (``FSRFConfig.global_batch``).

Two gloo processes on B/2 rows each, with DDP's gradient average done by hand, must give the
loss and the gradients of one process on all B rows: the DHF constraints (centring,
standardisation, the homogeneous MMD with its bandwidth), DAS's KL batch mean and MMD, and the
running estimates of the shrinkage pooling. The
reference is the same layer run on the whole batch in one process.
"""

import pytest
import torch
import torch.multiprocessing as mp

from fsrf import FSRFConfig, FSRFLayer
from fsrf.runtime.distributed import gather_rows, global_batch_active, world_size

DIMS = {"text": 6, "audio": 5, "vision": 4}
B = 12
# the shrinkage pooling adds its running estimates to the batch statistics (the LayerNorm has none)
CFG = dict(d_model=8, num_heads=2, dropout=0.0, pool_norm=False, pool_shrink=True)


def _data():
    g = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(B, 4, D, generator=g, dtype=torch.float64) for m, D in DIMS.items()}
    masks_a = {m: torch.ones(B, 4, dtype=torch.bool) for m in DIMS}
    masks_b = {m: torch.rand(B, 4, generator=g) > 0.3 for m in DIMS}
    for b in range(0, B, 3):  # whole modalities missing in view B, in both halves of the batch
        masks_b[list(DIMS)[b % 3]][b] = False
    for m in DIMS:
        masks_b[m][:, 0] |= torch.arange(B) % 3 != 0
    return inputs, masks_a, masks_b


def _loss(layer, inputs, masks_a, masks_b):
    """The batch-statistic terms only (the per-sample ones are local means by design)."""
    out_a, out_b = layer(inputs, masks_a), layer(inputs, masks_b)
    das = layer.distill(out_a, out_b)
    la, lb = out_a.losses, out_b.losses
    parts = {"orth": la["orth"] + lb["orth"], "dered": la["dered"] + lb["dered"], "hom": la["hom"] + lb["hom"],
             "kl": das["kl"], "dist": das["dist"]}
    return sum(parts.values()), parts


def _layer():
    torch.manual_seed(4)
    return FSRFLayer(DIMS, config=FSRFConfig(**CFG)).double().train()


def _worker(rank, world, init, rows, out_path):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        layer = _layer()
        inputs, ma, mb = _data()
        sl = slice(*rows[rank])
        pick = lambda d: {k: v[sl] for k, v in d.items()}  # noqa: E731
        loss, parts = _loss(layer, pick(inputs), pick(ma), pick(mb))
        loss.backward()
        grads = {}
        for name, p in layer.named_parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.distributed.all_reduce(g)
            grads[name] = g / world  # what DDP does
        if rank == 0:
            torch.save({"loss": loss.detach(), "parts": {k: v.detach() for k, v in parts.items()},
                        "grads": grads, "world": world_size(), "active": global_batch_active(None),
                        "buffers": dict(layer.named_buffers())}, out_path)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("rows", [((0, 6), (6, 12)), ((0, 5), (5, 12))], ids=["equal", "unequal"])
def test_two_gloo_processes_match_one_process_on_the_whole_batch(tmp_path, rows):
    out = tmp_path / "rank0.pt"
    init = f"file://{tmp_path / 'store'}"
    mp.start_processes(_worker, args=(2, init, rows, str(out)), nprocs=2, join=True, start_method="spawn")
    got = torch.load(out, weights_only=True)
    assert got["world"] == 2 and got["active"]

    layer = _layer()
    loss, parts = _loss(layer, *_data())
    loss.backward()
    for k, v in parts.items():
        torch.testing.assert_close(got["parts"][k], v.detach(), rtol=1e-5, atol=1e-7, msg=k)
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-7)
    # the pooling's running estimates too (so the pooled features the losses see agree)
    for name, buf in layer.named_buffers():
        torch.testing.assert_close(got["buffers"][name], buf, rtol=1e-10, atol=1e-12, msg=name)
    # every term here is a global statistic, so the gradients agree for unequal shards as well
    for name, p in layer.named_parameters():
        ref = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got["grads"][name], ref, rtol=1e-5, atol=1e-8, msg=name)


def _gather_worker(rank, world, init, out_path):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)
        mask = torch.tensor([True] * (rank + 1))
        y = gather_rows(x)
        m = gather_rows(mask)
        (y * torch.arange(1.0, y.shape[0] + 1)[:, None]).sum().backward()
        if rank == 1:
            torch.save({"y": y.detach(), "m": m, "grad": x.grad}, out_path)
    finally:
        torch.distributed.destroy_process_group()


def test_gather_rows_concatenates_in_rank_order_and_sums_the_gradients(tmp_path):
    out = tmp_path / "g.pt"
    mp.start_processes(_gather_worker, args=(2, f"file://{tmp_path / 'store'}", str(out)), nprocs=2, join=True,
                       start_method="spawn")
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["y"], torch.tensor([[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]))
    assert got["m"].dtype == torch.bool and got["m"].tolist() == [True, True, True]
    # rank 1 holds rows 1 and 2 of the gathered batch: weights 2 and 3, from both ranks' copies
    torch.testing.assert_close(got["grad"], torch.tensor([[4.0, 4.0], [6.0, 6.0]]))


def test_one_process_gathers_nothing():
    x = torch.randn(3, 2)
    assert gather_rows(x) is x and world_size() == 1
    assert not global_batch_active(None) and not global_batch_active(True)
    with pytest.raises(TypeError, match="global_batch"):
        FSRFConfig(global_batch="yes")

