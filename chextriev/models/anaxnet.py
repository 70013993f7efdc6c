"""AnaXNet (as re-implemented in CheXtriev): frozen DenseNet121 per anatomy crop + a 2-layer GCN + attention.

    f   = DenseNet121(crop)                              # (N=18, 1024), frozen
    g   = A (LeakyReLU_0.2(A f W1)) W2                   # W1 1024x2048, W2 2048x1024, binary A (diag 1), no bias
                                                         # W ~ uniform(+-1/sqrt(out)) as the original
    att = softmax_row(f g^T);  a = att f + f
    logits = Linear(LN(mean_nodes a));  embedding = mean_nodes(LN(a))

Two interchangeable GCN implementations, ``gcn_impl``: "dense" (two batched matmuls with the 18x18 A) and "pyg"
(torch_geometric ``GCNConv(normalize=False, add_self_loops=False, bias=False)`` on a batch of 18-node graphs; the
binary A with its unit diagonal is the edge list, so both compute exactly A x W). Measured on CPU
(``python -m chextriev.models.anaxnet``), dense is faster at 18 nodes, so it is the default.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn
from torch.nn import functional as F

from chextriev.models.common import AnatomyEncoder


def init_gcn_weight(weight: torch.Tensor, out_features: int) -> None:
    """The original's graph-convolution init: uniform(-1/sqrt(out), 1/sqrt(out))."""
    bound = 1.0 / math.sqrt(out_features)
    nn.init.uniform_(weight, -bound, bound)


class DenseGCN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(dim, hidden))
        self.w2 = nn.Parameter(torch.empty(hidden, dim))
        for w in (self.w1, self.w2):                 # (in, out)
            init_gcn_weight(w, w.shape[1])

    @staticmethod
    def _mix(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A x for x (B, N, C) as one 2-D matmul (N x N) @ (N x B*C)."""
        b, n, c = x.shape
        return (adj @ x.transpose(0, 1).reshape(n, b * c)).view(n, b, c).transpose(0, 1)

    def forward(self, f: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        # A is applied on the 1024-wide side of each layer: (A f) W1 and A (x W2)
        x = F.leaky_relu(self._mix(adj, f) @ self.w1, 0.2)
        return self._mix(adj, x @ self.w2)


class PygGCN(nn.Module):
    """Same function as :class:`DenseGCN` through torch_geometric's GCNConv; weights share the dense layout."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(dim, hidden, normalize=False, add_self_loops=False, bias=False)
        self.conv2 = GCNConv(hidden, dim, normalize=False, add_self_loops=False, bias=False)
        for conv in (self.conv1, self.conv2):          # Linear weight (out, in)
            init_gcn_weight(conv.lin.weight, conv.lin.weight.shape[0])

    def forward(self, f: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        b, n, d = f.shape
        dst, src = adj.nonzero(as_tuple=True)          # message src -> dst for A[dst, src] = 1
        offsets = (torch.arange(b, device=f.device) * n).repeat_interleave(src.numel())
        edge_index = torch.stack([src.repeat(b) + offsets, dst.repeat(b) + offsets])
        x = F.leaky_relu(self.conv1(f.reshape(b * n, d), edge_index), 0.2)
        return self.conv2(x, edge_index).view(b, n, -1)


class AnaXNet(nn.Module):
    def __init__(self, adjacency: Optional[torch.Tensor] = None, backbone: str = "densenet121",
                 pretrained_path: Optional[str] = None, bn_drift: bool = False, num_nodes: int = 18,
                 hidden: int = 2048, num_classes: int = 9, gcn_impl: Literal["dense", "pyg"] = "dense",
                 pretrained: bool = False):
        super().__init__()
        self.encoder = AnatomyEncoder(backbone, pretrained_path, bn_drift, head=False, pretrained=pretrained)
        dim = self.encoder.out_dim
        if adjacency is None:
            adjacency = torch.ones(num_nodes, num_nodes)
        adjacency = (torch.as_tensor(adjacency) > 0).float()
        adjacency.fill_diagonal_(1.0)
        self.register_buffer("adjacency", adjacency)
        if gcn_impl == "dense":
            self.gcn = DenseGCN(dim, hidden)
        elif gcn_impl == "pyg":
            self.gcn = PygGCN(dim, hidden)
        else:
            raise ValueError(f"gcn_impl must be dense or pyg, got {gcn_impl!r}")
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> dict:
        f = self.encoder(x)                                         # (B, N, D)
        g = self.gcn(f, self.adjacency)
        att = torch.softmax(f @ g.transpose(1, 2), dim=-1)
        a = att @ f + f
        return {"logits": self.fc(self.norm(a.mean(dim=1))), "embedding": self.norm(a).mean(dim=1)}


def benchmark_gcn(batch: int = 32, nodes: int = 18, dim: int = 1024, hidden: int = 2048, repeats: int = 20):
    """Time forward+backward of both GCN implementations on CPU; returns {impl: seconds per step}."""
    import time

    torch.manual_seed(0)
    adj = (torch.rand(nodes, nodes) > 0.5).float()
    adj.fill_diagonal_(1.0)
    dense, pyg = DenseGCN(dim, hidden), PygGCN(dim, hidden)
    with torch.no_grad():   # same weights: GCNConv's Linear stores W^T
        pyg.conv1.lin.weight.copy_(dense.w1.t())
        pyg.conv2.lin.weight.copy_(dense.w2.t())
    f = torch.randn(batch, nodes, dim)
    diff = (dense(f, adj) - pyg(f, adj)).abs().max().item()
    times = {"dense": [], "pyg": []}
    for i in range(repeats + 2):                # interleaved, median: robust to a busy shared CPU
        for name, mod in (("dense", dense), ("pyg", pyg)):
            t0 = time.perf_counter()
            mod(f, adj).sum().backward()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    out = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    out["max_abs_diff"] = diff
    return out


if __name__ == "__main__":
    res = benchmark_gcn()
    print(f"GCN forward+backward, batch 32 x 18 nodes, CPU (median): dense {res['dense'] * 1e3:.2f} ms, "
          f"torch_geometric GCNConv {res['pyg'] * 1e3:.2f} ms, ratio pyg/dense {res['pyg'] / res['dense']:.2f}, "
          f"max |diff| {res['max_abs_diff']:.2e}")
