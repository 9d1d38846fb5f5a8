"""Projected attention layers (Stickland & Murray 2019, "BERT and PALs").

Per task: one encoder V^E (H -> s) and one decoder V^D (s -> H), both with biases, shared by all layers, and in each
layer a small multi-head self-attention in the projected space s. As in the authors' code (Bert-n-Pals,
`BERTPals` and `BERTLayer.forward`), a layer's PAL reads the layer's *input* h and its output
GELU(V^D MH(V^E h)) joins the residual of the second add-norm:

    LayerNorm(dropout(FFN(a)) + a + GELU(V^D MH(V^E h))),  a = the layer's attention sub-layer output.

The paper's setting for BERT-base is s = 204 with 6 heads (34 per head); `pal_size` scales s with the hidden size
(102 for the 384-wide default checkpoint, 6 heads of 17). The projected attention has the encoder's attention
dropout, as in the reference.

One difference from the reference, on purpose: V^D starts at zero (the reference draws it like BERT's weights), so a
model with fresh PALs computes exactly what the pretrained encoder does (GELU(0) = 0) and the first steps do not
start from a perturbed encoder; V^D still gets a gradient from the first step.
Parameters per task: 2 H s + H + s (V^E, V^D with biases) + L (3 s^2 + 3 s) (each layer's query, key and value).

PALs attach by replacing each encoder layer with a `PALLayer` over the same submodules (`attach`): the encoder's code
never names them. The model's Routing (model/routing.py) says which task a pass is for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minbert.errors import MinbertError
from minbert.model.bert import BertConfig, BertLayer
from minbert.model.fast.varlen import SelfAttention
from minbert.model.routing import Routing


def pal_size(hidden: int, heads: int = 6) -> int:
    """The paper's 204 for hidden 768 (6 heads of 34), scaled to the checkpoint:
    heads x round(34 H / 768 / (6 / heads))."""
    return heads * max(1, round(204 * hidden / 768 / heads))


class PAL(nn.Module):
    def __init__(self, hidden: int, layers: int, size: int, heads: int = 6, attention_dropout: float = 0.1):
        super().__init__()
        if size % heads:
            raise MinbertError(f"pals.size {size} is not a multiple of pals.heads {heads}")
        self.encoder = nn.Linear(hidden, size)  # V^E, shared across layers
        self.decoder = nn.Linear(size, hidden)  # V^D, shared across layers
        nn.init.normal_(self.encoder.weight, std=0.02)  # BERT's initializer_range, as the reference
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)
        # each layer's attention is BERT's own self-attention (query, key, value, no output matrix), projected
        projected = BertConfig(
            hidden_size=size, num_attention_heads=heads, attention_probs_dropout_prob=attention_dropout
        )
        # SelfAttention: BERT's, also over the flat tokens a device's fast encoder may pass (model/fast/varlen.py)
        self.attention = nn.ModuleList(SelfAttention(projected) for _ in range(layers))
        for a in self.attention:
            for lin in (a.query, a.key, a.value):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def forward(self, i: int, h: torch.Tensor, mask) -> torch.Tensor:
        """Encoder layer i's PAL term GELU(V^D MH_i(V^E h)) for its input h (B, T, H) or flat (N, H)."""
        return F.gelu(self.decoder(self.attention[i](self.encoder(h), mask)))

    @staticmethod
    def parameter_count(hidden: int, layers: int, size: int) -> int:
        return 2 * hidden * size + hidden + size + layers * (3 * size * size + 3 * size)


class PALLayer(BertLayer):
    """A BERT layer whose second add-norm also sums its task's PAL of the layer's input (Bert-n-Pals'
    `BERTLayer.forward`): LayerNorm(dropout(FFN(a)) + PAL(x) + a). Made from a BertLayer by `attach`, over the same
    submodules; a pass routed to no task with PALs runs the plain layer."""

    pals: dict[str, PAL]  # task -> its PAL: owned (registered) by the model's `pals`, not here
    index: int
    routing: Routing

    def forward(self, x, mask):
        tasks = [t for t, _ in self.routing.groups if t in self.pals]
        if not tasks:
            return super().forward(x, mask)
        assert len(tasks) == 1, "PALs run one task per pass"
        a = self.attention(x, mask)  # (B, T, H)
        out = self.output
        h = out.dropout(out.dense(self.intermediate(a)))  # this dropout first: the masks are drawn in this order
        return out.LayerNorm(h + self.pals[tasks[0]](self.index, x, mask) + a)


def attach(encoder_layers: nn.ModuleList, pals: dict[str, PAL], routing: Routing) -> None:
    """Every encoder layer becomes a PALLayer (in place: its submodules and their names unchanged) with the tasks'
    PALs."""
    for i, layer in enumerate(encoder_layers):
        layer.__class__ = PALLayer  # as torch.nn.utils.parametrize does: same object, new forward
        layer.pals, layer.index, layer.routing = dict(pals), i, routing
