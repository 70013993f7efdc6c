"""CheXtriev anatomy models: frozen CNN + node head -> (mean pooling | GraphTransformer) -> heads.

V0 (``graph=None``): node features only. logits = fc_graph(mean_nodes x), node_logits = fc_node(x) (two LN+Linear
heads); embedding = mean over nodes.
V1-V6 (``graph`` = a :class:`GraphTransformer`): one shared LN+Linear ``fc`` gives logits = fc(mean_nodes h_L) and
node_logits = fc(h_L); embedding = mean_nodes(h0 + sum_l h_l) (multi-level).
The loss weights the two with ``graph_importance`` (see chextriev.losses).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from chextriev.models.common import AnatomyEncoder, NormLinear
from chextriev.models.graph_transformer import GraphTransformer, multi_level_embedding


class CheXtrievNet(nn.Module):
    def __init__(self, encoder: AnatomyEncoder, graph: Optional[GraphTransformer] = None, num_classes: int = 9):
        super().__init__()
        self.encoder = encoder
        self.graph = graph
        dim = encoder.out_dim
        if graph is None:
            self.fc_graph = NormLinear(dim, num_classes)
            self.fc_node = NormLinear(dim, num_classes)
        else:
            self.fc = NormLinear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> dict:
        """x: crops (B, 18, 3, H, W) or cached CNN features (B, 18, F)."""
        nodes = self.encoder(x)
        if self.graph is None:
            return {"logits": self.fc_graph(nodes.mean(dim=1)), "node_logits": self.fc_node(nodes),
                    "embedding": nodes.mean(dim=1)}
        h, levels = self.graph(nodes)
        return {"logits": self.fc(h.mean(dim=1)), "node_logits": self.fc(h),
                "embedding": multi_level_embedding(levels)}
