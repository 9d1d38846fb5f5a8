from typing import Annotated

import torch
import torch.nn.functional as F

from minbert.config import gt
from minbert.losses.base import Loss


class SentimentClustering(Loss):
    """Report 001's MNRL for sentiment: from the batch take two sentences of each class present twice, a_c and b_c;
    with normalized embeddings A, B the scores S = scale * A B^T should be the identity (a_i and b_j share a class
    iff i = j): cross-entropy of each row of S towards its diagonal. Pulls same-class embeddings together.
    With sentence keys (`out.keys`) a_c and b_c are two different texts, and a b_j with a_i's text (the same
    sentence under two labels) is not counted as a negative."""

    needs = "sentence"
    in_batch = True

    def __init__(self, scale: Annotated[float, gt(0)] = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, out, labels):
        emb, y = out.emb.float(), labels.long()
        keys = out.keys
        keys = torch.arange(len(y), device=y.device) if keys is None else keys
        firsts, seconds = [], []
        for c in torch.unique(y).tolist():
            idx = (y == c).nonzero().flatten()
            other = idx[keys[idx] != keys[idx[0]]]  # a second sentence of class c with a different text
            if len(other):
                firsts.append(idx[0])
                seconds.append(other[0])
        if len(firsts) < 2:
            return emb.sum() * 0.0
        first, second = torch.stack(firsts), torch.stack(seconds)
        a = F.normalize(emb[first], dim=-1)  # (K, H)
        b = F.normalize(emb[second], dim=-1)  # (K, H)
        scores = self.scale * a @ b.T  # (K, K)
        same = keys[second][None, :] == keys[first][:, None]  # (K, K) b_j is a_i's text
        same.fill_diagonal_(False)
        return F.cross_entropy(scores.masked_fill(same, float("-inf")), torch.arange(len(firsts), device=emb.device))
