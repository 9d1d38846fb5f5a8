"""Projected attention layers (Stickland & Murray 2019, "BERT and PALs"; report 003).

Per task: one encoder V^E (H -> s) and one decoder V^D (s -> H) shared by all layers, and in each layer a small
multi-head self-attention in the projected space s. The PAL output V^D MH(V^E h) is added beside the layer's
feed-forward, before the second add-norm (BertLayer's adapter slot); only the running task's PAL is used.

V^D starts at zero, so a model with fresh PALs computes exactly what the plain model does. Parameters per task:
2 H s (V^E, V^D) + L (3 s^2 + 3 s) (each layer's query, key and value with biases).
"""

from __future__ import annotations

from torch import nn

from minbert.errors import MinbertError
from minbert.model.bert import BertConfig, BertSelfAttention


def pal_size(hidden: int, heads: int = 12) -> int:
    """The paper's 204 for hidden 768 (12 heads of 17), scaled to the checkpoint: 12 x round(17 H / 768)."""
    return heads * max(1, round(17 * hidden / 768))


class PAL(nn.Module):
    def __init__(self, hidden: int, layers: int, size: int, heads: int = 12):
        super().__init__()
        self.encoder = nn.Linear(hidden, size, bias=False)  # V^E, shared across layers
        self.decoder = nn.Linear(size, hidden, bias=False)  # V^D, shared across layers
        nn.init.zeros_(self.decoder.weight)
        if size % heads:
            raise MinbertError(f"pals.size {size} is not a multiple of pals.heads {heads}")
        # each layer's attention is BERT's own self-attention, run in the projected space without attention dropout
        projected = BertConfig(hidden_size=size, num_attention_heads=heads, attention_probs_dropout_prob=0.0)
        self.attention = nn.ModuleList(BertSelfAttention(projected) for _ in range(layers))

    def adapters(self) -> list:
        """One callable per encoder layer: (hidden after attention (B, T, H), mask) -> (B, T, H)."""
        return [lambda h, mask, a=a: self.decoder(a(self.encoder(h), mask)) for a in self.attention]

    @staticmethod
    def parameter_count(hidden: int, layers: int, size: int) -> int:
        return 2 * hidden * size + layers * (3 * size * size + 3 * size)
