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
