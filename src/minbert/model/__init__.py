from minbert.model.bert import POOLINGS, BertConfig, BertModel, BertOutput, pool
from minbert.model.loading import check_fits, default_checkpoint_dir, load_weights, resolve_checkpoint

__all__ = [
    "POOLINGS",
    "BertConfig",
    "BertModel",
    "BertOutput",
    "check_fits",
    "default_checkpoint_dir",
    "load_weights",
    "pool",
    "resolve_checkpoint",
]
