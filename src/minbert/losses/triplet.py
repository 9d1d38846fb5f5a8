from typing import Annotated

import torch

from minbert.config import ge, gt
from minbert.losses.base import Loss


class Triplet(Loss):
    """Triplet loss for similarity pairs (report 003; sentence-transformers' TripletLoss with Euclidean distance):
    anchor u_i, positive v_i, negative v_{i+1} (the next pair's second sentence), and each pair's term weighted by
    its label / label_max, so that a weakly similar pair pulls weakly:
        w_i * max(0, |u_i - v_i| - |u_i - v_{i+1}| + margin).
    A negative with the text of u_i or v_i (sentence keys in `out.keys`) is no negative: its term is dropped."""

    needs = "embeddings"
    in_batch = True

    def __init__(self, margin: Annotated[float, ge(0)] = 5.0, label_max: Annotated[float, gt(0)] = 5.0):
        super().__init__()
        self.margin, self.label_max = margin, label_max

    def forward(self, out, labels):
        u, v = out.u.float(), out.v.float()
        negative = v.roll(-1, dims=0)
        d_pos, d_neg = (u - v).norm(dim=-1), (u - negative).norm(dim=-1)
        w = labels.float() / self.label_max
        if out.keys is not None:
            ku, kv = out.keys.chunk(2)  # (B,) each
            kn = kv.roll(-1, dims=0)
            w = w * ((kn != kv) & (kn != ku)).float()
        return (w * torch.relu(d_pos - d_neg + self.margin)).mean()
