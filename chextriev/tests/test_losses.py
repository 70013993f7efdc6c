"""Loss properties: gi-weighted graph/node BCE and ATH's in-batch triplet mining."""
import pytest
import torch
from torch.nn import functional as F

from chextriev.losses import ath_triplet, compute_loss, graph_node_bce


def test_graph_node_bce_weights():
    torch.manual_seed(0)
    out = {"logits": torch.randn(4, 9), "node_logits": torch.randn(4, 18, 9)}
    y, yn = torch.randint(0, 2, (4, 9)).float(), torch.randint(0, 2, (4, 18, 9)).float()
    g = F.binary_cross_entropy_with_logits(out["logits"], y)
    n = F.binary_cross_entropy_with_logits(out["node_logits"], yn)
    assert graph_node_bce(out, y, yn, 1.0)[0] == pytest.approx(g.item())
    assert graph_node_bce(out, y, yn, 0.0)[0] == pytest.approx(n.item())
    assert graph_node_bce(out, y, yn, 0.3)[0] == pytest.approx(0.3 * g.item() + 0.7 * n.item(), rel=1e-5)
    assert set(graph_node_bce(out, y, yn, 1.0)[1]) == {"bce_graph"}


def test_ath_triplet_mining_by_hand():
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 0],
                           [1, 0, 0, 0, 0, 0, 0, 0, 1],     # closest to 0 (8 agreements)
                           [0, 1, 1, 1, 1, 1, 1, 1, 1]])    # farthest from 0 (0 agreements)
    codes = torch.zeros(3, 4)
    codes[1] = 1.0
    codes[2] = 2.0
    # anchor 0: positive 1 (d=1), negative 2 (d=4): max(0, 0.5*4 - 4 + 1) = 0
    # anchor 1: common with 0 = 8, with 2 = 1 -> positive 0 (d=1), negative 2 (d=1): 2 - 1 + 1 = 2
    # anchor 2: common with 0 = 0, with 1 = 1 -> positive 1 (d=1), negative 0 (d=4): 2 - 4 + 1 = 0
    assert ath_triplet(codes, labels).item() == pytest.approx(2 / 3)
    assert ath_triplet(codes[:1], labels[:1]).item() == 0.0


def test_ath_compute_loss_has_both_terms():
    torch.manual_seed(0)
    out = {"logits": torch.randn(5, 9), "hash": torch.randn(5, 32)}
    batch = {"labels": torch.randint(0, 2, (5, 9)).float()}
    loss, logs = compute_loss("ath", out, batch, triplet_weight=1.0)
    assert loss.item() == pytest.approx(logs["bce"] + logs["triplet"], rel=1e-5)


def _trained_by_loss(model, out, batch, gi):
    loss, _ = compute_loss("v0" if model.graph is None else "graph_transformer", out, batch, gi)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, retain_graph=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and g.abs().sum() > 0}


def _feeding_scores(model, out, gi):
    from chextriev.losses import image_scores
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(image_scores(out, gi).sum(), [p for _, p in named], allow_unused=True,
                                retain_graph=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and g.abs().sum() > 0}


@pytest.mark.parametrize("name,gi", [("v0", 0.0), ("v0", 1.0), ("v0", 0.5), ("graph_transformer", 0.0),
                                     ("graph_transformer", 1.0)])
def test_validation_auroc_scores_come_from_trained_heads(name, gi):
    """The validation AUROC (early stopping, best checkpoint) must be computed from parameters the loss trains:
    V0-node (gi 0) never trains fc_graph, so its image scores are the max over the node logits."""
    from chextriev.models import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False, name=name, backbone="resnet18", dim=32, heads=2, dim_head=16, depth=1))
    x = torch.randn(3, 18, 512)                                   # cached-feature input (resnet18: 512-d)
    batch = {"labels": torch.randint(0, 2, (3, 9)).float(), "node_labels": torch.randint(0, 2, (3, 18, 9)).float()}
    out = model(x)
    feeding = _feeding_scores(model, out, gi)
    trained = _trained_by_loss(model, out, batch, gi)
    assert feeding and feeding <= trained, sorted(feeding - trained)
    if name == "v0" and gi == 0.0:
        assert not any(n.startswith("fc_graph") for n in trained)   # the random head the old code scored with
        assert any(n.startswith("fc_node") for n in feeding)


def test_image_scores_is_max_over_node_logits_for_node_only():
    from chextriev.losses import image_scores
    node = torch.randn(2, 18, 9)
    out = {"logits": torch.zeros(2, 9), "node_logits": node}
    assert torch.equal(image_scores(out, 0.0), node.amax(1))
    assert torch.equal(image_scores(out, 1.0), out["logits"])
    assert torch.equal(image_scores({"logits": out["logits"]}, 0.0), out["logits"])   # baselines: no node head
