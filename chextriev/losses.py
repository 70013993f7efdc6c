"""CheXtriev losses.

* :func:`graph_node_bce`: gi * BCE(graph logits, image labels) + (1 - gi) * BCE(node logits, anatomy labels)
  (V0-V6; gi = ``graph_importance``; a term whose weight is 0 is not computed).
* :func:`ath_triplet`: ATH's in-batch triplet loss on the hash codes.
* :func:`compute_loss`: the loss of any model's output dict given a batch (what train.py hands the engine).
* :func:`image_scores`: the image-level logits the validation AUROC (early stopping, best checkpoint) is computed
  from — always a head the loss trains under the given ``graph_importance``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def graph_node_bce(out: dict, labels: torch.Tensor, node_labels: torch.Tensor, graph_importance: float):
    loss = labels.new_zeros(())
    logs = {}
    if graph_importance > 0:
        g = F.binary_cross_entropy_with_logits(out["logits"].float(), labels)
        loss = loss + graph_importance * g
        logs["bce_graph"] = g.item()
    if graph_importance < 1:
        n = F.binary_cross_entropy_with_logits(out["node_logits"].float(), node_labels)
        loss = loss + (1 - graph_importance) * n
        logs["bce_node"] = n.item()
    return loss, logs


def ath_triplet(codes: torch.Tensor, labels: torch.Tensor, margin_per_bit: float = 0.5) -> torch.Tensor:
    """In-batch triplets: common_ij = number of the 9 label positions on which i and j agree; for anchor i the
    negative is argmin_j common_ij and the positive argmax_{j != i} common_ij (first index on ties);
    loss = mean_i max(0, margin_per_bit * bits - d(h_i, h_n) + d(h_i, h_p)) with d = mean squared difference
    over the bits. Needs a batch of at least 2."""
    b, bits = codes.shape
    if b < 2:
        return codes.new_zeros(())
    y = labels.float()
    common = y @ y.t() + (1 - y) @ (1 - y).t()                          # agreeing positions, (B, B)
    eye = torch.eye(b, dtype=torch.bool, device=codes.device)
    neg = common.argmin(dim=1)
    pos = common.masked_fill(eye, float("-inf")).argmax(dim=1)
    d_neg = (codes - codes[neg]).pow(2).mean(1)
    d_pos = (codes - codes[pos]).pow(2).mean(1)
    return F.relu(margin_per_bit * bits - d_neg + d_pos).mean()


def image_scores(out: dict, graph_importance: float = 1.0) -> torch.Tensor:
    """(B, 9) image-level logits for validation AUROC, from a head that the loss actually trains.

    With ``graph_importance > 0`` the graph head (``out["logits"]``) is supervised, so it is used. With
    ``graph_importance == 0`` (V0-node) only the node head is: V0's ``fc_graph`` then never receives a gradient
    and its logits stay at their random initialisation, so the image score is the max over the 18 anatomies'
    node logits — the logit form of the label rule "image label = OR over anatomies" (sigmoid is monotone, so
    max of logits = max of probabilities; AUROC depends only on the order). Models without node logits
    (baselines) always use ``out["logits"]``."""
    node = out.get("node_logits")
    if graph_importance <= 0 and node is not None:
        return node.amax(dim=1)
    return out["logits"]


def compute_loss(name: str, out: dict, batch: dict, graph_importance: float = 1.0, triplet_weight: float = 1.0):
    labels = batch["labels"].float()
    if name in ("v0", "graph_transformer"):
        return graph_node_bce(out, labels, batch["node_labels"].float(), graph_importance)
    bce = F.binary_cross_entropy_with_logits(out["logits"].float(), labels)
    if name == "ath":
        trip = ath_triplet(out["hash"].float(), labels)
        return bce + triplet_weight * trip, {"bce": bce.item(), "triplet": trip.item()}
    return bce, {"bce": bce.item()}
