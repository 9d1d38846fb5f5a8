from minbert.model.bert import POOLINGS, BertConfig, BertModel, BertOutput, pool
from minbert.model.loading import default_checkpoint_dir, load_weights, resolve_checkpoint

__all__ = [
    "POOLINGS",
    "BertConfig",
    "BertModel",
    "BertOutput",
    "default_checkpoint_dir",
    "load_weights",
    "pool",
    "resolve_checkpoint",
]
