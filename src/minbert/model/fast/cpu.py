"""The CPU's fast path: modules that replace the textbook ones (model/bert.py) on a CPU and compute the same values.

- `SelfAttention`: while a backward will follow, q, k and v from one (H, 3H) matmul and the attention written out
  with the cheaper dropout (PyTorch's CPU SDPA kernel has a slow backward); without one, SDPA in fp32 and, in bf16,
  the scores written out with the softmax read in fp32; in a packed bf16 inference copy (onednn.PackedCopy), q, k, v
  from one packed product. Which of the two a pass is, is decided per call: the same module serves a training step
  and, under `no_grad`, a dev evaluation or a teacher's forward.
- `Encoder`: a right-padded batch with enough padding runs as flat real tokens (varlen.py), nothing spent on padding;
  a batch with no padding runs without a mask.
- `Dropout`: 16 random bits per element instead of 32 (dropout.py).
- `WordEmbedding`: the word table's gradient built in one buffer kept across steps (embedding_grad.py).

benchmarks/bench_paths.py measures what each one gains.
"""

from __future__ import annotations

import torch
from torch import nn

from minbert.model.fast import varlen
from minbert.model.fast.dropout import dropout
from minbert.model.fast.embedding_grad import GradBuffer, embedding


def packed_applies(x: torch.Tensor) -> bool:
    """Whether a packed product (onednn.Packed) serves this input: bf16 on a CPU, no backward to follow."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled()


class SelfAttention(varlen.SelfAttention):
    packed_qkv = None  # q, k and v as one oneDNN-packed product, set on bf16 inference copies (onednn.PackedCopy)

    def forward(self, x, mask):
        if isinstance(mask, varlen.Varlen) or not (torch.is_grad_enabled() or self.packed_qkv is not None):
            return super().forward(x, mask)
        B, T, H = x.shape
        q, k, v = varlen.split_heads(self.qkv(x), self.n_head)  # (B, nh, T, hs) each
        return self.attend(q, k, v, mask).transpose(1, 2).reshape(B, T, H)  # (B, T, H)

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_qkv is not None and packed_applies(x):
            return varlen.with_deltas(self.packed_qkv(x), x, (self.query, self.key, self.value))  # (..., 3H)
        return super().qkv(x)

    def attend(self, q, k, v, mask):
        p = self.dropout_p if self.training else 0.0
        return attention_math(q, k, v, mask, p) if torch.is_grad_enabled() else attention_inference(q, k, v, mask, p)


def scores(q, k, mask) -> torch.Tensor:
    """(B, nh, T, T) q k^T / sqrt(hs), -inf where the (B, 1, 1, T) mask says a key is padding."""
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, nh, T, T)
    if mask is None:
        return s
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)):
        return s.masked_fill_(~mask, float("-inf"))  # no backward follows: in place, no bias tensor; the same values
    # an additive -inf bias: its backward is free, masked_fill's is a full pass over s
    return s + torch.zeros(mask.shape, dtype=s.dtype, device=s.device).masked_fill_(~mask, float("-inf"))


def attention_math(q, k, v, mask, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + mask) v with the cheaper dropout on the probabilities: for training, where
    PyTorch's CPU SDPA kernel has a slow backward and, with dropout, falls back to this same math with F.dropout
    (benchmarks/bench_kernels.py)."""
    return dropout(scores(q, k, mask).softmax(-1), p, p > 0) @ v  # (B, nh, T, hs)


def attention_inference(q, k, v, mask, p: float) -> torch.Tensor:
    """No backward to follow: SDPA in fp32; in bf16 (or fp16, no dropout) the scores written out, the softmax reading
    them as fp32 (the values of `.float().softmax(-1)` without a cast pass) and rounded once: the CPU's bf16 softmax
    and its bf16 SDPA at head size 32 are slow on short sentences (benchmarks/bench_encoder.py)."""
    if q.dtype == torch.float32:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return torch.softmax(scores(q, k, mask), -1, dtype=torch.float32).to(v.dtype) @ v  # (B, nh, T, hs)


class Encoder(varlen.Encoder):
    def forward(self, x, attention_mask=None):
        if isinstance(attention_mask, varlen.Varlen):
            return self.run(x, attention_mask)
        u = varlen.unpad(attention_mask) if x.dim() == 3 else None
        if u is not None:
            B, T, H = x.shape
            v, real = u
            y = self.run(x.reshape(B * T, H).index_select(0, real), v)  # (N, H) real tokens only
            return varlen.to_grid(y, real, B * T).view(B, T, H)  # (B, T, H), zeros at padding
        if attention_mask is None or bool(attention_mask.all()):  # on a CPU this check costs nothing
            return self.run(x, None)  # lets SDPA pick its fastest kernel
        return self.run(x, attention_mask.bool()[:, None, None, :])  # (B, 1, 1, T)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class WordEmbedding(nn.Embedding):
    grad_buffer: GradBuffer

    def prepare(self) -> None:
        self.grad_buffer = GradBuffer()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.sparse:  # a row-sparse gradient of the rows looked up (lazy_word_embeddings): PyTorch's own
            return super().forward(ids)
        return embedding(self.weight, ids, self.padding_idx, self.grad_buffer)
