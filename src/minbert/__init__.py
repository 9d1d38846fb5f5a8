"""minbert: a from-scratch BERT and a multitask fine-tuning toolkit."""

__version__ = "0.1.0"


def load(run_dir, device=None, precision=None):
    """A trained run's best checkpoint, ready to predict, in `precision` (default the run's; "int8" on CPU): see
    minbert.api."""
    from minbert.api import load as _load

    return _load(run_dir, device, precision)
