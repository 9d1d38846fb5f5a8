"""minBERT: the BERT encoder (Devlin et al. 2019) written out, with Hugging Face parameter names so a checkpoint loads
by key.

This is the reference model: every module computes what the paper says, in plain PyTorch. How it runs faster on a
given device (other kernels, unpadded batches, a cheaper dropout) is model/fast/, which replaces some of these
modules by subclasses computing the same values (`fast.install`); the tests compare the two.

Shapes: B batch, T tokens, H hidden size, nh heads, hs = H // nh head size, I intermediate size.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint, noop_context_fn

from minbert.errors import MinbertError
from minbert.model.config import ACTIVATIONS, BertConfig
from minbert.model.loading import load_pretrained


class BertOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor  # (B, H)


class BertEmbeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        """(B, T) ids -> (B, T, H). `position_ids` default to 0 .. T-1 in every row."""
        x = self.word_embeddings(input_ids)  # (B, T, H)
        if position_ids is None:
            x = x + self.position_embeddings.weight[: x.shape[1]]  # (T, H) broadcast over the batch
        else:
            x = x + self.position_embeddings(position_ids)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # every token of type 0
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention: per head softmax(q k^T / sqrt(hs) + mask) v, written out, or the same math through
    PyTorch's fused `scaled_dot_product_attention` (`sdpa`, the default)."""

    def __init__(self, c: BertConfig, sdpa: bool = True):
        super().__init__()
        if c.hidden_size % c.num_attention_heads:
            raise MinbertError(f"hidden_size {c.hidden_size} is not a multiple of {c.num_attention_heads} heads")
        self.n_head = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob
        self.sdpa = sdpa

    def forward(self, x, mask):
        """x (B, T, H); mask (B, 1, 1, T), True where a key is a real token, or None -> (B, T, H)."""
        B, T, H = x.shape
        nh, hs = self.n_head, H // self.n_head
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = self.attend(q, k, v, mask)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, T, H): the heads side by side

    def attend(self, q, k, v, mask):
        """(B, nh, T, hs) q, k, v -> (B, nh, T, hs), dropout on the attention probabilities while training."""
        p = self.dropout_p if self.training else 0.0
        if self.sdpa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, nh, T, T)
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))  # padding keys get no weight
        att = F.dropout(att.softmax(-1), p, self.training)
        return att @ v  # (B, nh, T, hs)


class BertSelfOutput(nn.Module):
    """Add-norm after attention: LayerNorm(dropout(dense(attention)) + x)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    """First half of the feed-forward: act(dense(x)), H -> I."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class BertFFOutput(nn.Module):
    """Second half of the feed-forward with its add-norm: LayerNorm(dropout(dense(h)) + residual), I -> H."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertLayer(nn.Module):
    """One transformer block: attention with its add-norm, then the feed-forward with its add-norm."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertFFOutput(c)

    def forward(self, x, mask):
        a = self.attention(x, mask)  # (B, T, H)
        return self.output(self.intermediate(a), a)  # (B, T, H)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))
        # recompute each layer's activations in the backward instead of storing them (less memory, ~1/3 more work)
        self.gradient_checkpointing = False
        # what a checkpointed layer is recomputed under (torch.utils.checkpoint's context_fn): state that modules
        # inside the layers read during a pass, put back as it was (model/routing.py)
        self.checkpoint_context = noop_context_fn

    def forward(self, x, attention_mask=None):
        """x (B, T, H), attention_mask (B, T) 1 for real tokens, 0 for padding (or None) -> (B, T, H)."""
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        return self.run(x, mask)

    def run(self, x, mask):
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                # the random state is saved and restored, so the recomputation draws the same dropout masks
                x = checkpoint(layer, x, mask, use_reentrant=False, context_fn=self.checkpoint_context)
            else:
                x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from the [CLS] token


POOLINGS = ("cls", "pooler", "mean")  # what `pool` accepts


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str, pooler: BertPooler) -> torch.Tensor:
    """(B, H) sentence embeddings from (B, T, H) token states and their (B, T) mask (or None): the [CLS] state, the
    tanh pooler over it, or the mean of the real tokens' states."""
    if pooling not in POOLINGS:
        raise MinbertError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if pooling == "mean":
        if mask is None:
            return hidden.mean(1)
        m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return pooler(hidden) if pooling == "pooler" else hidden[:, 0]


class BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # BERT's own initialisation, so a model trained from scratch starts where the paper's did
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> BertOutput:
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids, position_ids), attention_mask)
        return BertOutput(hidden, self.pooler(hidden))

    def sentence_embedding(self, input_ids, attention_mask=None, token_type_ids=None, pooling="cls", embedded=None):
        """(B, H) with a pooling of POOLINGS. `embedded` (B, T, H): the embedding layer's output, given instead of
        computed (SMART perturbs it)."""
        x = self.embeddings(input_ids, token_type_ids) if embedded is None else embedded
        return pool(self.encoder(x, attention_mask), attention_mask, pooling, self.pooler)

    @classmethod
    def from_pretrained(cls, path: str | Path, **config_overrides) -> "BertModel":
        return load_pretrained(cls, Path(path), **config_overrides)
