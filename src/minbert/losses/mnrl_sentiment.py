import torch
import torch.nn.functional as F
from torch import nn


class SentimentClustering(nn.Module):
    """Report 001's MNRL for sentiment: from the batch take two sentences of each class present twice, a_c and b_c;
    with normalized embeddings A, B the scores S = scale * A B^T should be the identity (a_i and b_j share a class
    iff i = j): cross-entropy of each row of S towards its diagonal. Pulls same-class embeddings together."""

    needs = "sentence"

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, out, labels):
        emb, y = out["emb"].float(), labels.long()
        firsts, seconds = [], []
        for c in torch.unique(y).tolist():
            idx = (y == c).nonzero().flatten()
            if len(idx) >= 2:
                firsts.append(idx[0])
                seconds.append(idx[1])
        if len(firsts) < 2:
            return emb.sum() * 0.0
        a = F.normalize(emb[torch.stack(firsts)], dim=-1)  # (K, H)
        b = F.normalize(emb[torch.stack(seconds)], dim=-1)  # (K, H)
        return F.cross_entropy(self.scale * a @ b.T, torch.arange(len(firsts), device=emb.device))
