"""Task heads over sentence embeddings. Each returns a `HeadOutput` (model/outputs.py): logits (B, C) or one score
(B,), and for bi-encoder pairs the embeddings u, v (B, H) that embedding losses (cosine, ranking, triplet) use. Each
member of `HEADS` declares the kinds of output it gives (`HeadKind.kinds`), which the config check matches against
what a loss needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minbert.errors import MinbertError
from minbert.model.outputs import HeadOutput

PAIR_FEATURES = ("u", "v", "|u-v|", "u*v")


def learnable_layers(hidden: int, n: int, dropout: float) -> nn.Sequential:
    """Report 002's "learnable layer": linear, ReLU, dropout; n of them, width kept."""
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class SentenceHead(nn.Module):
    """Dropout, optional learnable layers, linear to `num_labels` logits (sentiment; a cross-encoded pair)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float, extra_layers: int = 0):
        super().__init__()
        self.layers = learnable_layers(hidden, extra_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)
        self.num_labels = num_labels

    def forward(self, emb: torch.Tensor) -> HeadOutput:
        y = self.out(self.dropout(self.layers(emb)))
        return HeadOutput(emb=emb, **({"score": y.squeeze(-1)} if self.num_labels == 1 else {"logits": y}))


class ConcatPairHead(nn.Module):
    """Bi-encoder pair head: concatenate chosen features of u and v (u, v, |u-v|, u*v; SBERT's classifier), then
    dropout, optional learnable layers and a linear layer to one score or `num_labels` logits."""

    def __init__(
        self, hidden: int, num_labels: int, dropout: float, features=("u", "v", "|u-v|"), extra_layers: int = 0
    ):
        super().__init__()
        bad = [f for f in features if f not in PAIR_FEATURES]
        if bad or not features:
            raise MinbertError(f"pair features {list(features)}: valid are {', '.join(PAIR_FEATURES)}")
        self.features = tuple(features)
        width = hidden * len(self.features)
        self.layers = learnable_layers(width, extra_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, num_labels)
        self.num_labels = num_labels

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> HeadOutput:
        parts = {"u": u, "v": v, "|u-v|": (u - v).abs(), "u*v": u * v}
        x = torch.cat([parts[f] for f in self.features], dim=-1)  # (B, k * H)
        y = self.out(self.dropout(self.layers(x)))
        return HeadOutput(u=u, v=v, **({"score": y.squeeze(-1)} if self.num_labels == 1 else {"logits": y}))


class SigmoidPairHead(ConcatPairHead):
    """Report 003's baseline STS head: the pair's features concatenated (its [u, v]), dropout, a linear layer to one
    logit, then sigmoid(logit) * scale onto the label range (STS: 0 to 5), trained with MSE on the label."""

    def __init__(self, hidden: int, dropout: float, features=("u", "v"), extra_layers: int = 0, scale: float = 5.0):
        super().__init__(hidden, 1, dropout, features, extra_layers)
        self.scale = scale

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> HeadOutput:
        logit = super().forward(u, v).score
        return HeadOutput(score=torch.sigmoid(logit.float()) * self.scale, u=u, v=v)


class CosinePairHead(nn.Module):
    """Bi-encoder cosine head (reports 002, 003): score = relu(cos(u, v)) * scale, on the label range (STS: 5).
    `extra_layers` learnable layers, shared by both sides, come before the cosine (report 002's best STS head)."""

    def __init__(self, hidden: int, scale: float = 5.0, relu: bool = True, dropout: float = 0.0, extra_layers: int = 0):
        super().__init__()
        self.layers = learnable_layers(hidden, extra_layers, dropout)
        self.scale, self.relu = scale, relu

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> HeadOutput:
        u, v = self.layers(u), self.layers(v)
        cos = F.cosine_similarity(u.float(), v.float(), dim=-1, eps=1e-8)
        score = (cos.clamp(min=0) if self.relu else cos) * self.scale
        return HeadOutput(score=score, u=u, v=v)


@dataclass(frozen=True)
class HeadKind:
    """One member of the head family: how it is built from a task's config, and what it reads and gives."""

    build: Callable[..., nn.Module]  # (task config, hidden size, number of outputs) -> the head
    pair: bool  # reads a sentence pair
    cross: bool = False  # the pair is encoded jointly ([CLS] a [SEP] b [SEP], token types) and read as one input
    bi_encoder: bool = False  # each sentence is encoded alone; the head's output carries u and v
    similarity: bool = False  # its score is a similarity on the label scale, not a logit
    features: bool = False  # it concatenates the pair's features (`tasks.<task>.features`)

    def kinds(self, outputs: int) -> frozenset[str]:
        """What its output gives a loss (the `needs` of losses/base.py), with `outputs` logits or one score."""
        if self.similarity:
            kinds = {"score", "similarity"}
        else:
            kinds = {"logits"} if outputs > 1 else {"logit", "score"}
        if self.bi_encoder:
            kinds.add("embeddings")
        if not self.pair:
            kinds.add("sentence")
        return frozenset(kinds)


def _sentence(cfg, hidden: int, outputs: int) -> nn.Module:
    return SentenceHead(hidden, outputs, cfg.dropout, cfg.extra_layers)


# Heads by the name a config gives them (`tasks.<task>.head`); a new head is its class above plus one line here.
HEADS: dict[str, HeadKind] = {
    "linear": HeadKind(_sentence, pair=False),
    "concat": HeadKind(
        lambda cfg, hidden, outputs: ConcatPairHead(hidden, outputs, cfg.dropout, cfg.features, cfg.extra_layers),
        pair=True,
        bi_encoder=True,
        features=True,
    ),
    "concat_sigmoid": HeadKind(
        lambda cfg, hidden, outputs: SigmoidPairHead(
            hidden, cfg.dropout, cfg.features, cfg.extra_layers, scale=cfg.cosine_scale
        ),
        pair=True,
        bi_encoder=True,
        similarity=True,
        features=True,
    ),
    "cosine": HeadKind(
        lambda cfg, hidden, outputs: CosinePairHead(
            hidden, scale=cfg.cosine_scale, dropout=cfg.dropout, extra_layers=cfg.extra_layers
        ),
        pair=True,
        bi_encoder=True,
        similarity=True,
    ),
    "cross": HeadKind(_sentence, pair=True, cross=True),
}
