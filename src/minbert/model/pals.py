"""Projected attention layers (Stickland & Murray 2019, "BERT and PALs"; report 003).

Per task: one encoder V^E (H -> s) and one decoder V^D (s -> H) shared by all layers, and in each layer a small
multi-head self-attention in the projected space s. The PAL output V^D MH(V^E h) is added beside the layer's
feed-forward, before the second add-norm (BertLayer's adapter slot); only the running task's PAL is used.

V^D starts at zero, so a model with fresh PALs computes exactly what the plain model does. Parameters per task:
2 H s (V^E, V^D) + L (3 s^2 + 3 s) (each layer's query, key and value with biases).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from minbert.errors import MinbertError


def pal_size(hidden: int, heads: int = 12) -> int:
    """The paper's 204 for hidden 768 (12 heads of 17), scaled to the checkpoint: 12 x round(17 H / 768)."""
    return heads * max(1, round(17 * hidden / 768))


class ProjectedSelfAttention(nn.Module):
    def __init__(self, size: int, heads: int):
        super().__init__()
        if size % heads:
            raise MinbertError(f"pals.size {size} is not a multiple of pals.heads {heads}")
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(size, size) for _ in range(3))

    def forward(self, x, mask):
        B, T, S = x.shape
        nh, hs = self.heads, S // self.heads
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, S)  # (B, T, s)


class PAL(nn.Module):
    def __init__(self, hidden: int, layers: int, size: int, heads: int = 12):
        super().__init__()
        self.encoder = nn.Linear(hidden, size, bias=False)  # V^E, shared across layers
        self.decoder = nn.Linear(size, hidden, bias=False)  # V^D, shared across layers
        nn.init.zeros_(self.decoder.weight)
        self.attention = nn.ModuleList(ProjectedSelfAttention(size, heads) for _ in range(layers))

    def adapters(self) -> list:
        """One callable per encoder layer: (hidden after attention (B, T, H), mask) -> (B, T, H)."""
        return [lambda h, mask, a=a: self.decoder(a(self.encoder(h), mask)) for a in self.attention]

    @staticmethod
    def parameter_count(hidden: int, layers: int, size: int) -> int:
        return 2 * hidden * size + layers * (3 * size * size + 3 * size)
