"""The CXR-CLIP objective: CLIP over the four image-text pairs + image-image (ICL) + text-text (TCL) contrast.

Every sample carries two images (I1, I2) and two texts (T1, T2). With s = exp(logit_scale) and cross-entropy over
the (global) batch:
    CLIP = 1/2 [ 1/4 sum_{I,T} CE(I -> all T) + 1/4 sum_{I,T} CE(T -> all I) ]
    ICL  = 1/2 [ CE(I1 -> all I2) + CE(I2 -> all I1) ]
    TCL  = 1/2 [ CE(T1 -> all T2) + CE(T2 -> all T1) ]
    total = CLIP + i2i_weight * ICL + t2t_weight * TCL      (cxr_clip: 1.0 / 0.5; plain CLIP: 0 / 0)

Under DDP each rank scores its local queries against the keys of all ranks, gathered WITH gradient; the target of
local query j is ``rank * B + j``. DDP then averages gradients over ranks, which makes the update equal to the
single-process loss on the whole global batch.

Validation passes ``gather=False``: each rank scores whole validation batches of its own (the batches a single
process would form) against themselves, so the validation loss does not depend on the number of processes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` over ranks keeping the autograd graph; returns (gathered, offset of this rank's rows)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    # The functional collective keeps autograd: the backward sums each rank's gradient into the owner's rows.
    from torch.distributed._functional_collectives import all_gather_tensor_autograd

    gathered = all_gather_tensor_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
    return gathered, dist.get_rank() * x.shape[0]


class CXRClipLoss(nn.Module):
    def __init__(self, i2i_weight: float = 1.0, t2t_weight: float = 0.5):
        super().__init__()
        self.i2i_weight = i2i_weight
        self.t2t_weight = t2t_weight

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, text1: torch.Tensor, text2: torch.Tensor,
                logit_scale: torch.Tensor, gather: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Embeddings are L2-normalised (B, D) tensors of this rank; ``logit_scale`` is exp(learned log-scale).
        ``gather=False``: the keys are this rank's batch only (validation; see the module docstring)."""
        local = {"i1": image1, "i2": image2, "t1": text1, "t2": text2}
        gathered, offset = dict(local), 0
        if gather:
            for name, emb in local.items():
                gathered[name], offset = gather_with_grad(emb)
        target = torch.arange(image1.shape[0], device=image1.device) + offset

        def ce(query: str, key: str) -> torch.Tensor:
            return F.cross_entropy(logit_scale * local[query] @ gathered[key].T, target)

        pairs = [(i, t) for i in ("i1", "i2") for t in ("t1", "t2")]
        i2t = sum(ce(i, t) for i, t in pairs) / 4
        t2i = sum(ce(t, i) for i, t in pairs) / 4
        clip = (i2t + t2i) / 2
        icl = (ce("i1", "i2") + ce("i2", "i1")) / 2
        tcl = (ce("t1", "t2") + ce("t2", "t1")) / 2
        total = clip + self.i2i_weight * icl + self.t2t_weight * tcl
        return total, {"clip": clip.item(), "icl": icl.item(), "tcl": tcl.item(), "loss": total.item()}
