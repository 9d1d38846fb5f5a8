"""Task losses. A loss is a small module called as `loss(out, labels) -> scalar`, where `out` is the `HeadOutput`
(model/outputs.py) the task's head returned: `logits` (B, C) for classes, `score` (B,) for one real-valued output
(a paraphrase logit, a similarity on the label scale), and for bi-encoder pairs `u`, `v` (B, H), the two sentence
embeddings.

A loss class says what it `needs` from the head, one of the kinds a head gives (`HeadKind.kinds`, model/heads.py):
"logits" (class logits), "logit" (one score that is a logit), "score" (one real-valued score), "similarity" (a score
on the label scale), "embeddings" (bi-encoder u and v), "sentence" (a sentence task's embedding `emb`); the config
check (multitask/kinds.py, `check_kinds`) matches the two and refuses a head and loss that cannot work together.
Each is built from the task config as `registry.build(LOSSES, loss, loss_args)`; a new loss is one file (a
subclass of `losses.base.Loss`) plus one line here. (The dynamic margin that moves a cosine-embedding loss's margin
between epochs is an updater, lr_schedules/dynamic_margin.py.)
"""

from __future__ import annotations

from minbert.losses.base import Loss
from minbert.losses.bce import BinaryCrossEntropy
from minbert.losses.cosent import CoSENT
from minbert.losses.cosine_embedding import CosineEmbedding
from minbert.losses.cosine_mse import CosineMSE
from minbert.losses.cross_entropy import CrossEntropy
from minbert.losses.mnrl import HingeMultipleNegativesRanking, MultipleNegativesRanking
from minbert.losses.mnrl_sentiment import SentimentClustering
from minbert.losses.mse import MSE
from minbert.losses.triplet import Triplet

LOSSES: dict[str, type[Loss]] = {
    "ce": CrossEntropy,
    "bce": BinaryCrossEntropy,
    "mse": MSE,
    "cosine_mse": CosineMSE,
    "cosine_embedding": CosineEmbedding,
    "mnrl": MultipleNegativesRanking,
    "mnrl_hinge": HingeMultipleNegativesRanking,
    "mnrl_sentiment": SentimentClustering,
    "triplet": Triplet,
    "cosent": CoSENT,
}
