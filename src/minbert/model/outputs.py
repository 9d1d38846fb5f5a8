"""What a head hands the losses, regularizers and predictions: one typed record instead of a string-keyed dict.

A head fills the fields it has; what each field means for a loss is the head's `kinds` (model/heads.py) and the
loss's `needs` (losses/base.py): one check (multitask/config.py, `check_task`) matches them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadOutput:
    logits: torch.Tensor | None = None  # (B, C) class logits
    score: torch.Tensor | None = None  # (B,) one output: a logit, a value, or a similarity on the label scale
    u: torch.Tensor | None = None  # (B, H) a bi-encoder pair's first sentences' embeddings (after the head's layers)
    v: torch.Tensor | None = None  # (B, H) and its second sentences'
    emb: torch.Tensor | None = None  # (B, H) the pooled embedding a sentence head read
    keys: torch.Tensor | None = None  # (B,) which rows repeat a text (in-batch losses mask them; set by the objective)

    @property
    def output(self) -> torch.Tensor:
        """What predictions read: the logits, or the one score."""
        return self.logits if self.logits is not None else self.score

    def zeros(self) -> torch.Tensor:
        """A scalar 0 on the output's device and dtype (a term that is switched off)."""
        return self.output.new_zeros(())

    def detach(self) -> HeadOutput:
        return HeadOutput(**{f.name: _detach(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def replace(self, **fields) -> HeadOutput:
        return dataclasses.replace(self, **fields)


def _detach(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()
