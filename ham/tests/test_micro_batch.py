"""Micro-batching (optim.micro_batch) gives the loss and the gradients of the whole batch (review finding:
engine-level accumulation halved ex_cls when only one micro-batch held a box image)."""
import torch

from ham.config import HAMConfig
from ham.losses import BatchCounts, ham_losses
from ham.model import HAM
from ham.train import make_loss_fn, micro_chunks

C, S = 5, 32


def tiny_model():
    torch.manual_seed(0)
    model = HAM(num_classes=C, backbone="resnet18", fa_channels=8, head_channels=8)
    # eval mode: BatchNorm on running statistics and no dropout, so each image's output depends on itself only
    # and a micro-batched pass can be compared with one pass over the whole batch
    return model.eval()


def make_batch(n=24, flagged=(17,), seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, C, generator=g) < 0.3).float()
    flag = torch.zeros(n)
    masks = torch.zeros(n, C, S, S, dtype=torch.uint8)
    has_box = torch.zeros(n, C)
    for i in flagged:
        flag[i] = 1.0
        c = i % C
        labels[i, c] = 1.0
        has_box[i, c] = 1.0
        masks[i, c, 8:20, 4:16] = 1
    bbox_tag = torch.where(flag[:, None] > 0, has_box, labels)
    return {"image": torch.randn(n, 3, S, S, generator=g), "labels": labels, "masks": masks, "flag": flag,
            "bbox_tag": bbox_tag, "has_box": has_box}


def grads_of(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss, logs = loss_fn(model, batch)
    loss.backward()
    return float(loss.detach()), logs, {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}


def loss_fn_with(micro):
    cfg = HAMConfig()
    cfg.optim.micro_batch = micro
    return make_loss_fn(cfg)


def test_micro_chunks_put_flagged_rows_together():
    flag = torch.zeros(24)
    flag[[3, 17]] = 1
    chunks = micro_chunks(flag, 12)
    assert [len(c) for c in chunks] == [12, 12]
    assert {3, 17} <= set(chunks[0].tolist())
    assert sorted(torch.cat(chunks).tolist()) == list(range(24))
    flag[:15] = 1                                            # more flagged rows than a micro-batch: one chunk
    assert [len(c) for c in micro_chunks(flag, 12)] == [16, 8]           # rows 0-14 and 17
    assert len(micro_chunks(flag, 0)) == 1 and len(micro_chunks(flag, 24)) == 1


def test_two_micro_batches_of_12_give_the_gradients_of_one_batch_of_24():
    model = tiny_model()
    batch = make_batch(flagged=(17,))                        # the only box image sits in the second half
    full_loss, full_logs, full = grads_of(model, loss_fn_with(0), batch)
    micro_loss, micro_logs, micro = grads_of(model, loss_fn_with(12), batch)
    assert full_logs["ex_cls"] > 0
    assert abs(micro_loss - full_loss) < 1e-5 * max(1.0, abs(full_loss))
    for k in ("ano", "cls", "ex_cls", "bound", "union"):
        assert abs(micro_logs[k] - full_logs[k]) < 1e-5 * max(1.0, abs(full_logs[k])), k
    assert full.keys() == micro.keys() and len(full) > 10
    for name, g in full.items():
        assert torch.allclose(micro[name], g, rtol=1e-4, atol=1e-7), name


def test_naive_accumulation_would_halve_ex_cls():
    """What the engine's accumulation did (each micro-batch normalised on its own, then / 2): the test above
    would catch it."""
    model = tiny_model()
    batch = make_batch(flagged=(17,))
    with torch.no_grad():
        out = model(batch["image"], refine=True)
        full = ham_losses(out, batch["labels"], batch["masks"], batch["flag"], batch["bbox_tag"])[1]
        halves = [ham_losses(type(out)(*(t[sl] for t in out)), batch["labels"][sl], batch["masks"][sl],
                             batch["flag"][sl], batch["bbox_tag"][sl])[1] for sl in (slice(0, 12), slice(12, 24))]
    naive = sum(h["ex_cls"] for h in halves) / 2
    assert float(naive) == float(full["ex_cls"]) / 2


def test_chunk_shares_sum_to_the_full_batch_terms():
    """BatchCounts: the per-chunk terms sum to the full-batch terms, whatever the chunking (flagged rows kept
    together), for both union formulas."""
    model = tiny_model()
    batch = make_batch(n=10, flagged=(2, 3, 7))
    with torch.no_grad():
        out = model(batch["image"], refine=True)
    counts = BatchCounts.of(batch["labels"], batch["flag"], batch["bbox_tag"])
    for union in ("train", "eval"):
        full = ham_losses(out, batch["labels"], batch["masks"], batch["flag"], batch["bbox_tag"], union=union)[1]
        summed = {}
        for idx in micro_chunks(batch["flag"], 3):
            sub = type(out)(*(t[idx] for t in out))
            parts = ham_losses(sub, batch["labels"][idx], batch["masks"][idx], batch["flag"][idx],
                               batch["bbox_tag"][idx], union=union, counts=counts)[1]
            for k, v in parts.items():
                summed[k] = summed.get(k, 0.0) + float(v)
        for k, v in full.items():
            assert abs(summed[k] - float(v)) < 1e-5, (union, k)
