"""One shared minBERT encoder, one head per task: `MultitaskModel(batches)` takes every task's batch of a step and
gives every task's head output.

The forward is one encoder pass for all of them where it can be (`fused`): all sentences of the step's task batches
(SST sentences, both sides of Quora and STS pairs, cross-encoded pairs), sorted longest first across all tasks, laid
end to end as one flat run of tokens (model/fast/varlen.py), so the linear layers, GELU, LayerNorm and dropout touch
only real tokens and attention runs per bucket of similar-length sentences. Every sentence gets exactly the token
states it would get alone: the fused loss equals the padded per-task passes' (tests/test_fused.py), with one encoder
call (larger matmuls, fewer small kernels), one embedding gradient and one set of weight casts per step. PALs (a
different adapter per task inside every layer), a frozen encoder's cache and a textbook encoder (which takes padded
batches only) keep one pass per task. Per-task LoRA adapters share the pass: each task's tokens go through its own
low-rank products (model/lora.py), equal to one pass per task (tests/test_lora.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from minbert.model import fast
from minbert.model.bert import BertModel
from minbert.model.fast import varlen
from minbert.model.heads import HEADS, CosinePairHead
from minbert.model.lora import LoRA, merged
from minbert.model.lora import attach as attach_lora
from minbert.model.outputs import HeadOutput
from minbert.model.pals import PAL, pal_size
from minbert.model.pals import attach as attach_pals
from minbert.model.routing import Routing
from minbert.multitask.config import LoraConfig, PalsConfig, TaskConfig, num_outputs
from minbert.multitask.data import Batch
from minbert.multitask.frozen import EncoderCache
from minbert.tasks import TASKS, Task


def build_head(spec: Task, cfg: TaskConfig, hidden: int) -> nn.Module:
    return HEADS[cfg.head].build(cfg, hidden, num_outputs(spec, cfg.loss))


class MultitaskModel(nn.Module):
    """Shared encoder `bert`, `heads[task]`, with PALs enabled `pals[task]` inside every encoder layer, with LoRA
    `lora[task]` on the encoder's linear layers; `specs` the tasks' definitions (the config's table,
    TrainConfig.specs: built-in tasks by default)."""

    def __init__(
        self,
        bert: BertModel,
        tasks: dict[str, TaskConfig],
        pals: PalsConfig | None = None,
        specs: dict[str, Task] | None = None,
        lora: LoraConfig | None = None,
    ):
        super().__init__()
        self.bert = bert
        self.tasks = tasks
        self.specs = {n: (specs or TASKS)[n] for n in tasks}
        c = bert.config
        self.heads = nn.ModuleDict({n: build_head(self.specs[n], t, c.hidden_size) for n, t in tasks.items()})
        if pals is not None and pals.enabled:
            size = pals.size or pal_size(c.hidden_size, pals.heads)
            self.pals = nn.ModuleDict(
                {
                    n: PAL(c.hidden_size, c.num_hidden_layers, size, pals.heads, c.attention_probs_dropout_prob)
                    for n in tasks
                }
            )
        else:
            self.pals = None
        self.lora = None
        if lora is not None and lora.enabled:
            self.lora = nn.ModuleDict(
                {n: LoRA(c, lora.rank, lora.alpha, lora.dropout, lora.targets) for n in (lora.tasks or tasks)}
            )
        self.lora_lr_mult = lora.lr_mult if lora is not None else 1.0
        # which task each row of an encoder pass is for: PALs and LoRA attach to the encoder's modules and read it
        self.routing = Routing()
        if self.pals is not None:
            attach_pals(bert.encoder.layer, self.pals, self.routing)
        if self.lora is not None:
            attach_lora(bert.encoder.layer, self.lora, self.routing)
        bert.encoder.checkpoint_context = self.routing.checkpoint_context
        # frozen: true - the encoder's rows computed once (multitask/frozen.py; Runner.cache_encoder sets it)
        self.cache: EncoderCache | None = None

    def run_on(self, device_type: str | None) -> "MultitaskModel":
        """The encoder and its LoRA adapters with the fast paths of this device type (model/fast), or as the textbook
        modules (None); the heads and PALs run as they are. Returns the model."""
        fast.install(self.bert, device_type)
        if self.lora is not None:
            fast.install(self.lora, device_type)
        return self

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss reaches: the encoder's (heads, PALs and LoRA belong to one task each)."""
        return [p for p in self.bert.parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only this task's loss reaches: its head, and its PALs and LoRA adapters when enabled."""
        modules = [self.heads[task]] + ([self.pals[task]] if self.pals is not None else [])
        modules += [self.lora[task]] if self.lora is not None and task in self.lora else []
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def param_groups(self, lr: float, head_lr_mult: float = 1.0, layer_lr_decay: float = 1.0) -> list[dict]:
        """AdamW parameter groups, each with its own "lr": encoder layer i of L at lr * layer_lr_decay^(L - i), the
        embeddings at lr * layer_lr_decay^L, the pooler at lr, heads and PALs at lr * head_lr_mult, LoRA adapters at
        lr * lora.lr_mult."""
        L = len(self.bert.encoder.layer)
        parts = [(self.bert.embeddings, lr * layer_lr_decay**L)]
        parts += [(layer, lr * layer_lr_decay ** (L - i)) for i, layer in enumerate(self.bert.encoder.layer)]
        parts += [(self.bert.pooler, lr), (self.heads, lr * head_lr_mult)]
        if self.pals is not None:
            parts.append((self.pals, lr * head_lr_mult))
        if self.lora is not None:
            parts.append((self.lora, lr * self.lora_lr_mult))
        groups: dict[float, list] = {}  # parameters with equal rates share one group
        for module, rate in parts:
            groups.setdefault(rate, []).extend(p for p in module.parameters() if p.requires_grad)
        return [{"params": ps, "lr": rate} for rate, ps in groups.items() if ps]

    def embed(self, task: str, ids, mask, types=None, embedded=None) -> torch.Tensor:
        """(B, H) sentence embeddings with the task's pooling (and its PALs); `embedded` (B, T, H) replaces the
        embedding layer's output. A frozen encoder's come from its cache."""
        if self.cache is not None:
            return self.cache(task, ids, mask, types)
        return self.encode(task, ids, mask, types, embedded)

    def encode(self, task: str, ids, mask, types=None, embedded=None) -> torch.Tensor:
        """(B, H) what `embed` gives, always from the encoder (with the task's PALs and LoRA adapters)."""
        with self.routing.to(((task, None),)):
            return self.bert.sentence_embedding(ids, mask, types, self.tasks[task].pooling, embedded)

    def encoder_state(self, task: str | None = None) -> dict[str, torch.Tensor]:
        """The shared encoder's weights (Hugging Face names); with `task`, its LoRA adapters merged in (the task's
        own encoder as a plain BERT)."""
        state = self.bert.state_dict()
        if task is None or self.lora is None or task not in self.lora:
            return state
        return merged(state, self.lora[task])

    def embedded(self, task: str, batch: Batch) -> torch.Tensor:
        """(B', T, H) the embedding layer's output for a batch (word + position + token type, LayerNorm, dropout)."""
        return self.bert.embeddings(batch.ids, batch.types)

    def head(self, task: str, emb: torch.Tensor, pair: bool) -> HeadOutput:
        """Head output from embeddings; for bi-encoder pairs `emb` is (2B, H): first sentences, then seconds."""
        if pair:
            u, v = emb.chunk(2)  # (B, H) each
            return self.heads[task](u, v)
        return self.heads[task](emb)

    def forward(self, batches: dict[str, Batch], fused: bool = True) -> dict[str, HeadOutput]:
        """Each task's head output for its batch: from one encoder pass of all tasks' sentences where `fused` and the
        encoder allows it, else one pass per task."""
        if fused and len(batches) > 1 and self.pals is None and self.cache is None and fast.takes_flat(self.bert):
            return self.fused(batches)
        return {n: self.task_output(n, b) for n, b in batches.items()}

    def task_output(self, task: str, batch: Batch, embedded: torch.Tensor | None = None) -> HeadOutput:
        """One task's head output. `embedded` (B', T, H) replaces the embedding layer's output for batch.ids (SMART
        perturbs it)."""
        return self.head(task, self.embed(task, batch.ids, batch.mask, batch.types, embedded), batch.pair)

    def fused(self, batches: dict[str, Batch]) -> dict[str, HeadOutput]:
        """Each task's head output, as `task_output` would give it, from one flat encoder pass."""
        f = flatten(batches, tokens=self.lora is not None)
        bert = self.bert
        groups = tuple((n, f.tokens[n]) for n in batches) if self.lora is not None else ()
        with self.routing.to(groups):  # each task's tokens through its own adapters
            x = bert.encoder(bert.embeddings(f.ids, f.types, f.layout.positions), f.layout)  # (N, H)
        kinds = {self.tasks[n].pooling for n in batches}
        emb = {k: varlen.pool(x, f.layout, k, bert.pooler) for k in kinds}  # (S, H) each, flat order
        out = {}
        for name, b in batches.items():
            s, e = f.spans[name]
            mine = emb[self.tasks[name].pooling].index_select(0, f.rank[s:e])  # (B', H) in the batch's row order
            out[name] = self.head(name, mine, b.pair)
        return out

    def cosine_scale(self, task: str) -> float | None:
        """The task head's cosine scale, or None when its score is a logit (see Task.soft)."""
        head = self.heads[task]
        return head.scale if isinstance(head, CosinePairHead) else None


@dataclass
class Flat:
    ids: torch.Tensor  # (N,) every sentence's tokens, longest sentence first, no padding
    types: torch.Tensor | None  # (N,) token types (cross-encoded pairs), None when no task has them
    layout: varlen.Varlen  # where each sentence sits among the N tokens
    rank: torch.Tensor  # (S,) each sentence's place in the flat order; sentences numbered task by task
    spans: dict[str, tuple[int, int]]  # task -> its sentences [start, end) among the S, in the batch's row order
    tokens: dict[str, torch.Tensor] | None  # task -> (n_task,) its tokens' places among the N (for LoRA's routes)


def flatten(batches: dict[str, Batch], tokens: bool = False) -> Flat:
    """`tokens`: also each task's token places (per-task LoRA routes them)."""
    seqs, types, spans = [], [], {}  # per sentence: token ids and token types, numpy rows (cheap to slice)
    has_types = any(b.types is not None for b in batches.values())
    for name, b in batches.items():
        b = b.on_host()  # lengths and ids read on the CPU: no value asked of a GPU
        n = b.mask.sum(1).tolist()
        ids = b.ids.numpy()
        spans[name] = (len(seqs), len(seqs) + len(n))
        seqs += [ids[i, :k] for i, k in enumerate(n)]
        if has_types:  # cross-encoded pairs: their token types; every other task's sentences are type 0
            typ = None if b.types is None else b.types.numpy()
            types += [np.zeros(k, dtype=np.int64) if typ is None else typ[i, :k] for i, k in enumerate(n)]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first (stable)
    rank = np.empty(len(seqs), dtype=np.int64)
    rank[order] = np.arange(len(seqs))
    device = batches[next(iter(batches))].ids.device
    # non_blocking: a GPU takes the copy without the host waiting on it (a blocking copy is a sync)
    to = lambda a: torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
    places = None
    if tokens:
        owner = np.empty(len(seqs), dtype=np.int64)  # each sentence's task, numbered in batch order
        for t, (s, e) in enumerate(spans.values()):
            owner[s:e] = t
        token_owner = np.repeat(owner[order], [len(seqs[i]) for i in order])  # (N,) each flat token's task
        places = {name: to(np.flatnonzero(token_owner == t)) for t, name in enumerate(spans)}
    return Flat(
        to(np.concatenate([seqs[i] for i in order])),
        to(np.concatenate([types[i] for i in order])) if has_types else None,
        varlen.layout([len(seqs[i]) for i in order], device),
        to(rank),
        spans,
        places,
    )
