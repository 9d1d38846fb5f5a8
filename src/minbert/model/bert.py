"""minBERT: the BERT encoder written out, with Hugging Face parameter names so a checkpoint loads by key.

Shapes: B batch, T tokens, H hidden size, nh heads, hs = H // nh head size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minbert.errors import MinbertError
from minbert.model import onednn, varlen
from minbert.model.config import ACTIVATIONS, BertConfig
from minbert.model.dropout import Dropout, dropout
from minbert.model.embedding_grad import GradBuffer, embedding
from minbert.model.loading import load_pretrained
from minbert.model.lora import LayerLoRA, Route
from minbert.model.lora import add as lora_add

# `adapter(layer_input, mask) -> delta` joins the residual of a layer's second add-norm (PALs use it).
Adapter = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
# What the layers are given for padding: a (B, T) 1/0 mask of padded states, a varlen.Varlen layout of flat
# states (N, H), or None (nothing padded)
Mask = torch.Tensor | varlen.Varlen | None


class BertOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor  # (B, H)


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)
        self.paths = SpeedPaths()  # BertModel's Speed sets it for the model's device
        self.grad_buffer = GradBuffer()  # the word table's reused gradient (SpeedPaths.reuse_embedding_grad)

    def forward(self, input_ids, token_type_ids=None, inputs_embeds=None, position_ids=None):
        t = self.word_embeddings
        if inputs_embeds is not None:
            words = inputs_embeds
        elif self.paths.reuse_embedding_grad and not t.sparse:  # sparse: a gradient of the rows looked up only
            words = embedding(t.weight, input_ids, t.padding_idx, self.grad_buffer)  # (B, T, H) or flat (N, H)
        else:
            words = self.word_embeddings(input_ids)  # (B, T, H) or flat (N, H)
        if position_ids is None:
            x = words + self.position_embeddings.weight[: words.shape[1]]  # positions broadcast over the batch
        else:  # flat sentences (model/varlen.py): positions restart at every sentence
            x = words + self.position_embeddings(position_ids)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        if c.hidden_size % c.num_attention_heads:
            raise MinbertError(f"hidden_size {c.hidden_size} is not a multiple of {c.num_attention_heads} heads")
        self.n_head = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob
        self.paths = SpeedPaths()  # BertModel's Speed sets it for the model's device
        # q, k and v as one oneDNN-packed product, set only on bf16 inference copies (model/onednn.py's PackedCopy)
        self.packed_qkv = None

    def forward(self, x, mask: Mask, lora: LayerLoRA | None = None):
        p = self.dropout_p if self.training else 0.0
        train = torch.is_grad_enabled()  # a backward will follow: the kernel is chosen for it (SpeedPaths)
        attend = ATTENTION[self.paths.train_attention if train else self.paths.eval_attention]
        if isinstance(mask, varlen.Varlen):  # flat (N, H) tokens of many sentences: see model/varlen.py
            return varlen.attention(self.qkv(x, lora), mask, self.n_head, lambda q, k, v, m: attend(q, k, v, m, p))
        B, T, H = x.shape
        nh, hs = self.n_head, H // self.n_head
        # one (H, 3H) matmul instead of three, forward and backward; and in a packed bf16 inference copy
        if (train and self.paths.fused_qkv) or self.packed_qkv is not None:
            q, k, v = varlen.split_heads(self.qkv(x, lora), nh)  # (B, nh, T, hs) each
        else:
            q = lora_add(self.query(x), lora, "query", x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            k = lora_add(self.key(x), lora, "key", x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            v = lora_add(self.value(x), lora, "value", x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        return attend(q, k, v, mask, p).transpose(1, 2).reshape(B, T, H)  # (B, T, H)

    def qkv(self, x, lora: LayerLoRA | None = None):
        """(..., H) -> (..., 3H) queries, keys and values from one matmul; parameters keep Hugging Face's names.
        With LoRA, each targeted projection's low-rank delta is added to its third."""
        if self.packed_qkv is not None and onednn.packed_applies(x):
            y = self.packed_qkv(x)  # (..., 3H)
        elif type(self.query) is not nn.Linear:  # quantized (quantize_dynamic) or oneDNN (model/onednn.py) layers
            y = torch.cat([self.query(x), self.key(x), self.value(x)], -1)  # (..., 3H)
        else:
            w = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
            b = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
            y = F.linear(x, w, b)
        deltas = [None] * 3 if lora is None else [lora.delta(t, x) for t in ("query", "key", "value")]
        if all(d is None for d in deltas):
            return y
        zero = x.new_zeros(*x.shape[:-1], x.shape[-1])
        return y + torch.cat([zero if d is None else d.to(y.dtype) for d in deltas], -1)  # (..., 3H)


@dataclass(frozen=True)
class SpeedPaths:
    """How attention runs, chosen once per device (Speed.paths): the implementation (a key of ATTENTION) for a pass
    that builds a graph for a backward and for one that does not, whether the first projects q, k, v in one
    matmul, and whether the word table's gradient goes into a reused buffer. Which of the two a pass is, is the one
    thing decided per call (`torch.is_grad_enabled()`): the same module serves a training step and, under `no_grad`,
    a dev evaluation or a teacher's forward."""

    train_attention: str = "sdpa"
    eval_attention: str = "sdpa"
    fused_qkv: bool = False
    # the word table's dense gradient built in one buffer kept across steps (model/embedding_grad.py), not a fresh
    # allocation each step: on a CPU a fresh one that large costs page faults; a GPU's caching allocator reuses memory
    reuse_embedding_grad: bool = False

    @classmethod
    def for_device(cls, device_type: str) -> "SpeedPaths":
        if device_type == "cpu":
            # CPU training: PyTorch's SDPA kernel has a slow backward (benchmarks/bench_kernels.py), and one (H, 3H)
            # matmul beats three; at inference SDPA is the faster kernel in fp32 (not in bf16: see
            # attention_cpu_inference) and concatenating weights costs more
            return cls(
                train_attention="math", eval_attention="cpu_inference", fused_qkv=True, reuse_embedding_grad=True
            )
        return cls()


def sdpa(q, k, v, mask, p: float) -> torch.Tensor:
    """PyTorch's fused kernels (flash, memory-efficient) where the device has them."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


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
    """softmax(q k^T / sqrt(hs) + mask) v with dropout on the probabilities, written out.

    Used for CPU training: PyTorch's CPU SDPA kernel has a slow backward without dropout and, with dropout, falls
    back to this same math with F.dropout; written out with our cheaper dropout it is several times faster
    (benchmarks/bench_kernels.py).
    """
    return dropout(scores(q, k, mask).softmax(-1), p, p > 0) @ v  # (B, nh, T, hs)


def attention_cpu_inference(q, k, v, mask, p: float) -> torch.Tensor:
    """CPU inference (no dropout): SDPA in fp32; in bf16 (or fp16) the scores written out with the softmax taken in
    fp32 and rounded back. The CPU's bf16 softmax kernel is several times slower than its fp32 one on (B, 12, T, T)
    scores of short sentences, and SDPA's bf16 kernel at head size 32 costs a fifth of a bf16 inference pass for
    about 1% of its FLOPs (benchmarks/RESULTS.md, "bench_encoder"). The scores are rounded to bf16 as in training's
    attention; the probabilities are rounded once, after the softmax, which reads the bf16 scores as fp32 itself
    (the values of `.float().softmax(-1)`, bit for bit, without a cast pass; benchmarks/bench_regroup.py)."""
    if q.dtype == torch.float32:
        return sdpa(q, k, v, mask, p)
    return torch.softmax(scores(q, k, mask), -1, dtype=torch.float32).to(v.dtype) @ v  # (B, nh, T, hs)


# Attention implementations by name, as transformers chooses its own: (B, nh, T, hs) q, k, v, a boolean (B, 1, 1, T)
# mask or None, the dropout rate -> (B, nh, T, hs)
ATTENTION: dict[str, Callable[..., torch.Tensor]] = {
    "sdpa": sdpa,
    "math": attention_math,
    "cpu_inference": attention_cpu_inference,
}


class BertSelfOutput(nn.Module):
    """Add-norm after attention: LayerNorm(x + dropout(dense(attention)))."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual, lora: LayerLoRA | None = None):
        return self.LayerNorm(self.dropout(lora_add(self.dense(h), lora, "attention_output", h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, mask, lora: LayerLoRA | None = None):
        return self.output(self.self(x, mask, lora), x, lora)


class BertIntermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x, lora: LayerLoRA | None = None):
        return self.act(lora_add(self.dense(x), lora, "intermediate", x))


class BertFFOutput(nn.Module):
    """Second half of the feed-forward with its add-norm: LayerNorm(dropout(dense(h)) [+ extra()] + residual). `extra`
    (a PAL on the layer's input) joins the sum before the norm; called after this dropout, so the dropout masks are
    drawn in the order they always were."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual, extra: Callable[[], torch.Tensor] | None = None, lora: LayerLoRA | None = None):
        h = self.dropout(lora_add(self.dense(h), lora, "output", h))
        if extra is not None:
            h = h + extra()
        return self.LayerNorm(h + residual)


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertFFOutput(c)

    def forward(self, x, mask, adapter: Adapter | None = None, lora: LayerLoRA | None = None):
        """`adapter`: a PAL (model/pals.py); `lora`: this layer's low-rank adapters (model/lora.py)."""
        a = self.attention(x, mask, lora)  # (B, T, H)
        # a PAL reads the layer's input, in parallel with attention and feed-forward (Bert-n-Pals)
        extra = (lambda: adapter(x, mask)) if adapter is not None else None
        return self.output(self.intermediate(a, lora), a, extra, lora)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # [CLS] token


def attention_bias(attention_mask):
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean mask for SDPA, or None when nothing is padded. A flat
    layout of many sentences (varlen.Varlen) passes through: attention reads its buckets' masks."""
    if isinstance(attention_mask, varlen.Varlen):
        return attention_mask
    if attention_mask is None or bool(attention_mask.all()):
        return None  # lets SDPA pick its fastest kernel
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def pool(hidden: torch.Tensor, mask: Mask, pooling: str, pooler: BertPooler) -> torch.Tensor:
    """Sentence embeddings from token states: padded (B, T, H) with a (B, T) mask (or None) -> (B, H), or flat
    (N, H) with a varlen.Varlen layout -> (S, H), one per sentence in flat order (multitask/fused.py)."""
    if pooling not in POOLINGS:
        raise MinbertError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    flat = isinstance(mask, varlen.Varlen)
    if pooling == "mean":
        if flat:
            sums = hidden.new_zeros(len(mask.lengths), hidden.shape[1]).index_add(0, mask.segment, hidden)  # (S, H)
            return sums / mask.lengths[:, None].to(hidden.dtype)
        if mask is None:
            return hidden.mean(1)
        m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    first = hidden.index_select(0, mask.starts) if flat else hidden[:, 0]  # (B or S, H) the [CLS] states
    return pooler(first[:, None]) if pooling == "pooler" else first  # the pooler reads position 0 of (B, 1, H)


POOLINGS = ("cls", "pooler", "mean")  # what `pool` accepts


@dataclass(frozen=True)
class Speed:
    """How the encoder runs, given when it is built (`BertModel(config, Speed(...))`, `from_pretrained(path,
    speed=...)`) or all at once by `configured`; none of it changes a result beyond float rounding."""

    device_type: str = "cpu"  # the attention paths for this device (SpeedPaths.for_device)
    # run a right-padded (B, T) batch on CPU as flat real tokens (model/varlen.py) when it has varlen.MIN_PADDING
    # padding tokens or more: the same states for real tokens, zeros at padding, no work spent on padding. False:
    # always the padded computation, every position as transformers has it
    unpad: bool = True
    # for export (torch.export, ONNX): no branch on the data - no unpadding, the padding mask always applied
    static_graph: bool = False
    # recompute each layer's activations in the backward instead of storing them (less memory, ~1/3 more compute)
    gradient_checkpointing: bool = False

    @property
    def paths(self) -> SpeedPaths:
        return SpeedPaths.for_device(self.device_type)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, speed: Speed | None = None):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self._init_weights)
        self.configured(speed or Speed())

    def configured(self, speed: Speed | None = None, **changes) -> "BertModel":
        """The model with these speed settings (`speed`, or the current ones with `changes`: `unpad=False`, ...),
        every layer's attention paths included; returns the model itself."""
        self.speed = dataclasses.replace(speed or self.speed, **changes)
        self.embeddings.paths = self.speed.paths
        for layer in self.encoder.layer:
            layer.attention.self.paths = self.speed.paths
        return self

    def _init_weights(self, m: nn.Module) -> None:
        # BERT's own initialisation, so a model trained from scratch starts where the paper's did.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def encode(
        self, x, attention_mask=None, adapters: list[Adapter] | None = None, lora: Route | None = None
    ) -> torch.Tensor:
        """Run the layer stack over embeddings x (B, T, H) with a (B, T) mask, or flat x (N, H) with a Varlen layout.
        `adapters`: one PAL per layer; `lora`: which rows take which task's low-rank adapters (model/lora.py) - its
        row indices, if any, are over flat tokens, so a routed pass must come flat."""
        if self.speed.static_graph:
            mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            return self.layers(x, mask, adapters, lora)
        u = varlen.unpad(attention_mask) if self.speed.unpad and x.dim() == 3 and x.device.type == "cpu" else None
        if u is None:
            return self.layers(x, attention_bias(attention_mask), adapters, lora)
        B, T, H = x.shape
        v, real = u
        y = self.layers(x.reshape(B * T, H).index_select(0, real), v, adapters, lora)  # (N, H) real tokens only
        return varlen.to_grid(y, real, B * T).view(B, T, H)  # (B, T, H), zeros at padding

    def layers(self, x, mask, adapters: list[Adapter] | None, lora: Route | None = None) -> torch.Tensor:
        routes = lora.layers(len(self.encoder.layer)) if lora is not None else None
        for i, layer in enumerate(self.encoder.layer):
            adapter = adapters[i] if adapters is not None else None
            low_rank = routes[i] if routes is not None else None
            if self.speed.gradient_checkpointing and self.training and torch.is_grad_enabled():
                # the RNG state is saved and restored, so the recomputation draws the same dropout masks
                x = checkpoint(layer, x, mask, adapter, low_rank, use_reentrant=False)
            else:
                x = layer(x, mask, adapter, low_rank)
        return x

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, inputs_embeds=None, adapters=None, position_ids=None
    ):
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds, position_ids)
        hidden = self.encode(x, attention_mask, adapters)
        return BertOutput(hidden, self.pooler(hidden))

    def sentence_embedding(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        pooling="cls",
        inputs_embeds=None,
        adapters=None,
        embedded=None,
        lora: Route | None = None,
    ):
        """(B, H): the [CLS] state, the tanh pooler over it, or the mean of the non-padding token states.
        `embedded` (B, T, H): the embedding layer's output, given instead of computed (SMART perturbs it)."""
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds) if embedded is None else embedded
        hidden = self.encode(x, attention_mask, adapters, lora)
        return pool(hidden, attention_mask, pooling, self.pooler)

    @classmethod
    def from_pretrained(cls, path: str | Path, speed: Speed | None = None, **config_overrides) -> "BertModel":
        return load_pretrained(cls, Path(path), speed, **config_overrides)
