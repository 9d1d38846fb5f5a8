"""minbert: a from-scratch BERT and a multitask fine-tuning toolkit.

"report 000" ... "report 004", cited throughout the code, are the five CS224N project reports minbert grew from,
named with their titles and authors in docs/TECHNIQUES.md ("The five reports").
"""

__version__ = "0.1.0"


def load(run_dir, device=None, precision=None):
    """A trained run's best checkpoint, ready to predict, in `precision` (default the run's; "int8" on CPU): see
    minbert.api."""
    from minbert.api import load as _load

    return _load(run_dir, device, precision)
