"""The CheXtriev GraphTransformer (V1-V6): edge-aware multi-head attention over the 18 anatomy nodes.

    E  = adj_emb[A] (+ edges if accept_edges)            # 18 x 18 x edge_dim
    h0 = h = x
    per layer:  z = LN(h) (+ P[0:N] with abs_pos);  q = Wq z;  k, v = Wkv z;  e = We E
                a_ij = softmax_j(q_i . (k_j + e_ij) / sqrt(dim_head));  o_i = Wo sum_j a_ij (v_j + e_ij)
                h = G(o, R);  h = G(FF(LN(h)), R')
    residual_type 2 (the original's default, every published row): R = R' = h0 ("global");  3: h = G(G(., h), h0);
    1: R = R' = the current h ("local") -- ours only: the original's type 1 cannot run (its h0 is unset)

Parameter count (dim 1024, depth 2, 8 x 64 heads, FF x4, adjacency embedding 2 x 1024): 22,059,008;
with the abs_pos table (64 x 1024): 22,124,544. The fixed random edges are a buffer (the original's), learnable
edges an ``nn.Parameter`` (18 x 18 x 1024 = 331,776 more parameters).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn

from chextriev.models.common import GatedResidual

EdgeMode = Literal["none", "fixed_random", "learnable"]


class EdgeAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, edge_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner)
        self.to_kv = nn.Linear(dim, 2 * inner)
        self.edges_to_kv = nn.Linear(edge_dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, z: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """z: (B, N, dim); edges: (N, N, edge_dim) shared by the batch, or (B, N, N, edge_dim)."""
        b, n, _ = z.shape
        h, d = self.heads, self.dim_head
        q = self.to_q(z).view(b, n, h, d).transpose(1, 2)                     # B H N d
        k, v = self.to_kv(z).view(b, n, 2, h, d).permute(2, 0, 3, 1, 4)        # each B H N d
        e = self.edges_to_kv(edges)
        if e.dim() == 3:                                                       # shared: H N N d
            e = e.view(n, n, h, d).permute(2, 0, 1, 3)
            sim = q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, e)
            attn = (sim * self.scale).softmax(dim=-1)
            out = attn @ v + torch.einsum("bhij,hijd->bhid", attn, e)
        else:                                                                  # per sample: B H N N d
            e = e.view(b, n, n, h, d).permute(0, 3, 1, 2, 4)
            sim = q @ k.transpose(-1, -2) + torch.einsum("bhid,bhijd->bhij", q, e)
            attn = (sim * self.scale).softmax(dim=-1)
            out = attn @ v + torch.einsum("bhij,bhijd->bhid", attn, e)
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GraphTransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, edge_dim: int, ff_mult: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = EdgeAttention(dim, heads, dim_head, edge_dim)
        self.attn_residual = GatedResidual(dim)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult)
        self.ff_residual = GatedResidual(dim)

    @staticmethod
    def _residual(gate: GatedResidual, x, h, h0, residual_type: int):
        if residual_type == 1:
            return gate(x, h)
        if residual_type == 2:
            return gate(x, h0)
        return gate(gate(x, h), h0)

    def forward(self, h, h0, edges, pos: Optional[torch.Tensor], residual_type: int):
        z = self.attn_norm(h)
        if pos is not None:
            z = z + pos
        h = self._residual(self.attn_residual, self.attn(z, edges), h, h0, residual_type)
        h = self._residual(self.ff_residual, self.ff(self.ff_norm(h)), h, h0, residual_type)
        return h


class GraphTransformer(nn.Module):
    """``forward(x (B, N, dim)) -> (h_last (B, N, dim), [h0, h_1, ..., h_L])``.

    ``adjacency``: (N, N) 0/1 matrix embedded per pair (``adj_emb``); ``None`` = fully connected (all ones).
    ``edges``: "none" | "fixed_random" (faithful: Xavier-uniform buffer, never trained) | "learnable" (fixed).
    """

    def __init__(self, dim: int = 1024, depth: int = 2, heads: int = 8, dim_head: int = 64, edge_dim: int = 1024,
                 ff_mult: int = 4, num_nodes: int = 18, adjacency: Optional[torch.Tensor] = None,
                 abs_pos: bool = False, max_pos: int = 64, edges: EdgeMode = "none", residual_type: int = 2):
        super().__init__()
        if residual_type not in (1, 2, 3):
            raise ValueError(f"residual_type must be 1, 2 or 3, got {residual_type}")
        if edges not in ("none", "fixed_random", "learnable"):
            raise ValueError(f"edges must be none, fixed_random or learnable, got {edges!r}")
        if abs_pos and num_nodes > max_pos:
            raise ValueError(f"{num_nodes} nodes do not fit the abs_pos table of {max_pos}")
        self.num_nodes, self.residual_type, self.edge_mode = num_nodes, residual_type, edges
        if adjacency is None:
            adjacency = torch.ones(num_nodes, num_nodes)
        adjacency = torch.as_tensor(adjacency)
        if tuple(adjacency.shape) != (num_nodes, num_nodes):
            raise ValueError(f"adjacency must be {num_nodes}x{num_nodes}, got {tuple(adjacency.shape)}")
        self.register_buffer("adjacency", (adjacency > 0).long())
        self.adj_emb = nn.Embedding(2, edge_dim)
        self.pos_emb = nn.Embedding(max_pos, dim) if abs_pos else None
        if edges != "none":
            table = torch.empty(num_nodes, num_nodes, edge_dim)
            nn.init.xavier_uniform_(table)      # fan_in = fan_out = num_nodes * edge_dim -> bound ~0.0128
            if edges == "learnable":
                self.edges = nn.Parameter(table)
            else:
                self.register_buffer("edges", table)
        else:
            self.edges = None
        self.layers = nn.ModuleList(
            GraphTransformerLayer(dim, heads, dim_head, edge_dim, ff_mult) for _ in range(depth))

    def edge_features(self) -> torch.Tensor:
        e = self.adj_emb(self.adjacency)
        if self.edges is not None:
            e = e + self.edges
        return e

    def forward(self, x: torch.Tensor):
        if x.shape[1] != self.num_nodes:
            raise ValueError(f"expected {self.num_nodes} nodes, got {x.shape[1]}")
        edges = self.edge_features()
        pos = self.pos_emb.weight[: self.num_nodes] if self.pos_emb is not None else None
        h0 = h = x
        levels = [h0]
        for layer in self.layers:
            h = layer(h, h0, edges, pos, self.residual_type)
            levels.append(h)
        return h, levels


def multi_level_embedding(levels) -> torch.Tensor:
    """mean_nodes(h0 + sum_l h_l): the retrieval embedding of V1-V6."""
    return torch.stack(levels, 0).sum(0).mean(dim=1)


def xavier_bound(num_nodes: int = 18, edge_dim: int = 1024) -> float:
    return math.sqrt(6.0 / (2 * num_nodes * edge_dim))


def pyg_attention(attn: EdgeAttention, edges: torch.Tensor):
    """``attn`` as torch_geometric's TransformerConv over B fully connected N-node graphs (same weights; the edge
    bias rides on a constant-1 edge feature, as TransformerConv's edge projection has none). Returns
    ``f(z (B, N, dim)) -> (B, N, dim)``, equal to ``attn(z, edges)``; for the dense-vs-PyG measurement only."""
    from torch_geometric.nn import TransformerConv

    inner = attn.heads * attn.dim_head
    n, edge_dim = edges.shape[0], edges.shape[-1]
    conv = TransformerConv(attn.to_q.in_features, attn.dim_head, heads=attn.heads, edge_dim=edge_dim + 1,
                           root_weight=False)
    with torch.no_grad():
        conv.lin_query.weight.copy_(attn.to_q.weight)
        conv.lin_query.bias.copy_(attn.to_q.bias)
        for lin, part in ((conv.lin_key, slice(0, inner)), (conv.lin_value, slice(inner, 2 * inner))):
            lin.weight.copy_(attn.to_kv.weight[part])
            lin.bias.copy_(attn.to_kv.bias[part])
        conv.lin_edge.weight.copy_(torch.cat([attn.edges_to_kv.weight, attn.edges_to_kv.bias[:, None]], 1))
    dst, src = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")   # message j -> i carries E[i, j]
    pair_attr = torch.cat([edges.reshape(n * n, edge_dim), edges.new_ones(n * n, 1)], 1)

    def forward(z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        offsets = (torch.arange(b) * n).repeat_interleave(n * n)
        edge_index = torch.stack([src.flatten().repeat(b) + offsets, dst.flatten().repeat(b) + offsets])
        out = conv(z.reshape(b * n, -1), edge_index, pair_attr.repeat(b, 1))
        return attn.to_out(out).view(b, n, -1)

    return forward


def benchmark_attention(batch: int = 16, nodes: int = 18, dim: int = 1024, repeats: int = 10) -> dict:
    """Forward+backward time of one edge-aware attention layer (V6 size), dense vs TransformerConv, on CPU;
    interleaved runs, median seconds per step."""
    import time

    torch.manual_seed(0)
    attn = EdgeAttention(dim, 8, 64, dim)
    edges = torch.randn(nodes, nodes, dim) * 0.05
    pyg = pyg_attention(attn, edges)
    z = torch.randn(batch, nodes, dim)
    out = {"max_abs_diff": (attn(z, edges) - pyg(z)).abs().max().item()}
    times = {"dense": [], "pyg": []}
    for i in range(repeats + 2):
        for name, fn in (("dense", lambda: attn(z, edges)), ("pyg", lambda: pyg(z))):
            t0 = time.perf_counter()
            fn().sum().backward()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    out.update({name: sorted(t)[len(t) // 2] for name, t in times.items()})
    return out


if __name__ == "__main__":
    res = benchmark_attention()
    print(f"edge-aware attention forward+backward, batch 16 x 18 nodes x 1024, CPU (median): dense "
          f"{res['dense'] * 1e3:.1f} ms, torch_geometric TransformerConv {res['pyg'] * 1e3:.1f} ms, ratio pyg/dense "
          f"{res['pyg'] / res['dense']:.2f}, max |diff| {res['max_abs_diff']:.2e}")
