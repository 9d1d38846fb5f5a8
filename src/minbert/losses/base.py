"""What every loss declares, so the config check and the training step need no list of names. A loss is an
`nn.Module` (called as `loss(out, labels)`, its `forward`), so its state for checkpoints is its module state, unlike
the other families' `registry.Extension`."""

from torch import nn


class Loss(nn.Module):
    # what it reads from the head's output: one of the kinds a head gives (HeadKind.kinds; losses/__init__.py)
    needs: str = "score"
    # it compares the examples of a batch with each other (in-batch negatives): splitting a batch across micro-batches
    # or processes changes it, and repeated texts must be masked out (the batch's "keys")
    in_batch: bool = False
