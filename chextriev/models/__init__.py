"""CheXtriev models and the one builder the CLIs use: ``build_model(ModelConfig, adjacency=None)``.

| name | model | input |
|---|---|---|
| resnet50 | GlobalCNN (frozen ResNet50 + 2-layer head; embedding = frozen 2048-d feature) | full image |
| ath | ATHNet (48,394 params, 32-bit hash) | full image 256^2 |
| anaxnet | AnaXNet (frozen DenseNet121 crops + GCN + attention) | 18 crops |
| v0 | CheXtrievNet without graph (mean pooling) | 18 crops |
| graph_transformer | CheXtrievNet + GraphTransformer (V1-V6) | 18 crops |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from chextriev.models.anaxnet import AnaXNet
from chextriev.models.ath import ATHNet
from chextriev.models.baseline import GlobalCNN
from chextriev.models.chextriev_net import CheXtrievNet
from chextriev.models.common import AnatomyEncoder, count_parameters
from chextriev.models.graph_transformer import GraphTransformer

ANATOMY_MODELS = ("anaxnet", "v0", "graph_transformer")


@dataclass
class ModelConfig:
    name: Literal["resnet50", "ath", "anaxnet", "v0", "graph_transformer"] = "graph_transformer"
    backbone: str = "resnet50"                 # timm name of the frozen CNN (densenet121 for AnaXNet)
    pretrained_path: Optional[str] = None      # local ImageNet weights of the frozen CNN (torchvision/timm)
    pretrained: bool = True                    # no pretrained_path: timm's hub (torchvision's weights, tv_in1k);
    #                                            offline that is an error naming pretrained_path. false = a RANDOM
    #                                            frozen CNN (demo/tests only; never a published setting)
    bn_drift: bool = False                     # True = original: frozen CNN left in train mode (BN stats drift)
    dim: int = 1024
    num_classes: int = 9
    num_nodes: int = 18
    # GraphTransformer
    depth: int = 2
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    abs_pos: bool = False
    edges: Literal["none", "fixed_random", "learnable"] = "none"
    residual_type: int = 2                     # 2 = the original's default (R = h0); 1 = ours only (R = h; the
    #                                            original's type 1 cannot run), in no published row
    adjacency: Literal["full", "cooccurrence"] = "full"
    # ATH
    hash_bits: int = 32
    ath_input_size: int = 256
    # AnaXNet
    gcn_hidden: int = 2048
    gcn_impl: Literal["dense", "pyg"] = "dense"


def build_model(cfg: ModelConfig, adjacency: Optional[torch.Tensor] = None) -> torch.nn.Module:
    """Build the model named by ``cfg.name``. ``adjacency``: the 18x18 co-occurrence matrix, needed when
    ``cfg.adjacency == "cooccurrence"`` (V1, AnaXNet); ignored for "full"."""
    if cfg.adjacency == "cooccurrence" and cfg.name in ("anaxnet", "graph_transformer") and adjacency is None:
        raise ValueError("model.adjacency=cooccurrence needs the co-occurrence matrix (prepare's adjacency.npy)")
    adj = adjacency if cfg.adjacency == "cooccurrence" else None
    if cfg.name == "resnet50":
        return GlobalCNN(cfg.backbone, cfg.pretrained_path, cfg.bn_drift, cfg.dim, cfg.num_classes, cfg.pretrained)
    if cfg.name == "ath":
        return ATHNet(cfg.hash_bits, cfg.num_classes, cfg.ath_input_size)
    if cfg.name == "anaxnet":
        return AnaXNet(adj, cfg.backbone, cfg.pretrained_path, cfg.bn_drift, cfg.num_nodes, cfg.gcn_hidden,
                       cfg.num_classes, cfg.gcn_impl, cfg.pretrained)
    encoder = AnatomyEncoder(cfg.backbone, cfg.pretrained_path, cfg.bn_drift, cfg.dim, pretrained=cfg.pretrained)
    graph = None
    if cfg.name == "graph_transformer":
        graph = GraphTransformer(cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.dim, cfg.ff_mult, cfg.num_nodes,
                                 adj, cfg.abs_pos, 64, cfg.edges, cfg.residual_type)
    return CheXtrievNet(encoder, graph, cfg.num_classes)


__all__ = ["ModelConfig", "build_model", "GlobalCNN", "ATHNet", "AnaXNet", "CheXtrievNet", "GraphTransformer",
           "AnatomyEncoder", "count_parameters", "ANATOMY_MODELS"]
