"""minbert: a from-scratch BERT and a multitask fine-tuning toolkit."""

__version__ = "0.1.0"
