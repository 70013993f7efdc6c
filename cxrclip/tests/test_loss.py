"""The CXR-CLIP loss: a brute-force re-computation, its symmetries, and equality under 2-process DDP."""
from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cxrclip.loss import CXRClipLoss
from cxrclip.train import clip_step


def embeddings(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(b, d, generator=g), dim=-1) for _ in range(4)]


def brute_force_ce(queries, keys, scale):
    """Mean over queries of -log softmax(scale * q.k)[own index], one query at a time."""
    total = 0.0
    for j, q in enumerate(queries):
        logits = [scale * float(q @ k) for k in keys]
        log_norm = math.log(sum(math.exp(x) for x in logits))
        total += log_norm - logits[j]
    return total / len(queries)


def test_matches_brute_force():
    i1, i2, t1, t2 = embeddings()
    s = 14.2857
    total, parts = CXRClipLoss(i2i_weight=1.0, t2t_weight=0.5)(i1, i2, t1, t2, torch.tensor(s))
    i2t = sum(brute_force_ce(i, t, s) for i in (i1, i2) for t in (t1, t2)) / 4
    t2i = sum(brute_force_ce(t, i, s) for i in (i1, i2) for t in (t1, t2)) / 4
    icl = (brute_force_ce(i1, i2, s) + brute_force_ce(i2, i1, s)) / 2
    tcl = (brute_force_ce(t1, t2, s) + brute_force_ce(t2, t1, s)) / 2
    assert parts["clip"] == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    assert parts["icl"] == pytest.approx(icl, rel=1e-5)
    assert parts["tcl"] == pytest.approx(tcl, rel=1e-5)
    assert total.item() == pytest.approx((i2t + t2i) / 2 + icl + 0.5 * tcl, rel=1e-5)


def test_symmetric_in_images_and_texts():
    i1, i2, t1, t2 = embeddings(seed=1)
    loss = CXRClipLoss(i2i_weight=0.7, t2t_weight=0.7)
    a, _ = loss(i1, i2, t1, t2, torch.tensor(10.0))
    b, _ = loss(t1, t2, i1, i2, torch.tensor(10.0))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_zero_weights_leave_plain_clip():
    i1, i2, t1, t2 = embeddings(seed=2)
    total, parts = CXRClipLoss(0.0, 0.0)(i1, i2, t1, t2, torch.tensor(5.0))
    assert total.item() == pytest.approx(parts["clip"]) and parts["icl"] > 0 and parts["tcl"] > 0


def test_perfect_alignment_gives_low_loss():
    i1 = F.normalize(torch.eye(6), dim=-1)
    total, _ = CXRClipLoss()(i1, i1, i1, i1, torch.tensor(100.0))
    assert total.item() < 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, full, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    local = [x[rank * 3:(rank + 1) * 3].clone().requires_grad_(True) for x in full]
    loss, _ = CXRClipLoss()(*local, torch.tensor(10.0))
    loss.backward()
    # DDP averages over ranks: the full-batch gradient of these rows is this rank's gradient / world size
    # (the all-gather backward already summed the other ranks' contributions into it).
    grads = [x.grad / world for x in local]
    total = loss.detach().clone()
    dist.all_reduce(total)
    out[rank] = (total.item() / world, [g.tolist() for g in grads])
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_distributed_loss_equals_single_process():
    full = embeddings(b=6, seed=3)
    single_inputs = [x.clone().requires_grad_(True) for x in full]
    single, _ = CXRClipLoss()(*single_inputs, torch.tensor(10.0))
    single.backward()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), full, out), nprocs=2, join=True)
    for rank in range(2):
        loss, grads = out[rank]
        assert loss == pytest.approx(single.item(), rel=1e-5)
        for g_rank, x in zip(grads, single_inputs):
            torch.testing.assert_close(torch.tensor(g_rank), x.grad[rank * 3:(rank + 1) * 3], rtol=1e-4, atol=1e-6)


class TinyClip(torch.nn.Module):
    """Stands in for CXRClip in the validation test: images and token ids -> normalised embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(12, 8)
        self.text = torch.nn.Embedding(20, 8)

    def forward(self, images, input_ids, attention_mask):
        return (F.normalize(self.image(images.flatten(1)), dim=-1),
                F.normalize((self.text(input_ids) * attention_mask[..., None]).sum(1), dim=-1), torch.tensor(10.0))


def _val_items(n=7, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [{"image1": torch.randn(3, 2, 2, generator=g), "image2": torch.randn(3, 2, 2, generator=g),
             "text1": torch.randint(1, 20, (4,), generator=g), "text2": torch.randint(1, 20, (4,), generator=g)}
            for _ in range(n)]


def _collate(items):
    ids = torch.stack([it["text1"] for it in items] + [it["text2"] for it in items])
    return {"images": torch.stack([it["image1"] for it in items] + [it["image2"] for it in items]),
            "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _val_loaders(rank=None, world=None):
    from cxrclip.train import val_loader_for_rank
    # two sources of uneven size: 7 samples (batches of 3, 3, 1) and 4 (3, 1)
    return {name: val_loader_for_rank(_val_items(n, seed), 3, _collate, rank=rank, world=world)
            for name, n, seed in (("big", 7, 5), ("small", 4, 6))}


def _validation_loss(average: str = "per_dataset") -> dict:
    from cxrclip.train import make_evaluate
    with torch.no_grad():
        return make_evaluate(_val_loaders(), CXRClipLoss(), torch.device("cpu"), average)(TinyClip())


def test_validation_loss_averages_the_sources_with_equal_weight():
    """As the original: each source's loss is the mean over its batches; val/loss the mean over the sources."""
    model, criterion = TinyClip(), CXRClipLoss()
    by_hand = {}
    with torch.no_grad():
        for name, loader in _val_loaders(0, 1).items():
            losses = [clip_step(model, batch, criterion, gather=False)[0].item() for batch in loader]
            sizes = [batch["images"].shape[0] // 2 for batch in loader]
            by_hand[name] = (np.mean(losses), np.dot(losses, sizes), sum(sizes))
    metrics = _validation_loss()
    assert metrics["val/loss_big"] == pytest.approx(by_hand["big"][0])
    assert metrics["val/loss"] == pytest.approx((by_hand["big"][0] + by_hand["small"][0]) / 2)
    pooled = (by_hand["big"][1] + by_hand["small"][1]) / (by_hand["big"][2] + by_hand["small"][2])
    assert _validation_loss("pooled")["val/loss"] == pytest.approx(pooled)
    assert pooled != pytest.approx(metrics["val/loss"])


def _val_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out[rank] = _validation_loss()["val/loss"]
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_distributed_validation_loss_equals_single_process():
    """Each rank scores its share of the single-process batches without the all-gather (the all-gathered loss over
    an unsharded loader came out higher under DDP)."""
    single = _validation_loss()["val/loss"]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_val_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    assert out[0] == pytest.approx(single, rel=1e-6) and out[1] == pytest.approx(single, rel=1e-6)
