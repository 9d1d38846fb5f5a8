from minbert.optim.adamw import AdamW

__all__ = ["AdamW"]
