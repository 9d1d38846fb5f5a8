"""The forward passes every command needs, for one model, set up once: `Runner(model, pad_id, device, precision)`
holds the model, its tokenizer's pad id, the device and the autocast context (resolved once; bf16 on a CPU also
runs the encoder from a bf16 copy of its weights, model/cast.py), and gives soft outputs and predictions for a
task's examples, dev metrics, sentence embeddings, and a frozen encoder's cache.
Training's evaluation, `evaluate`, `predict`, the API, `ensemble`, `analyze` and distillation's teachers all run
through it, so batching, precision and the distinct-sentence encoding are the same everywhere.

Bi-encoder and sentence tasks encode each distinct sentence once (`TaskData.sentences`) and score examples from the
embedding table; a cross-encoder scores each pair as its own input. Batches are length-sorted (the least padding),
the order restored through their indices; with several processes each encodes its share and all get every row back.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from minbert.data import bucket_batches, pad
from minbert.data.batching import trimming
from minbert.distributed import gathered_rows
from minbert.errors import MinbertError
from minbert.model import fast
from minbert.model.fast.cast import InferenceCopy
from minbert.model.multitask import MultitaskModel
from minbert.multitask.data import TaskData, make_batch
from minbert.multitask.frozen import EncoderCache
from minbert.runs import PRECISIONS, autocast, resolve_precision
from minbert.tasks import overall_score

# what inference may run in: training's precisions, and int8 (torch's dynamic quantization of every linear layer:
# int8 weights per output channel, activations quantized per batch; CPU only). "auto" never means int8: this int8 costs
# more than the 0.002-overall budget on the best recipe's dev sets (docs/SPEED.md)
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


class Runner:
    def __init__(self, model: MultitaskModel, pad_id: int, device, precision: str, batch_size: int = 64):
        self.pad_id, self.device, self.batch_size = pad_id, torch.device(device), batch_size
        quantized = precision == "int8"
        if quantized:
            model, precision = int8(model, self.device), "fp32"
        self.source, self.specs = model, model.specs
        self.autocast = autocast(self.device, precision)
        low = PRECISIONS[resolve_precision(self.device, precision)]
        # the encoder's inference copy for this device and precision, if it has a faster one (model/fast:
        # `evaluate` refreshes it, since training evaluates changing weights); the heads run as they are
        self.cast: InferenceCopy | None = None if quantized else fast.inference_copy(model, self.device, low)

    @property
    def model(self) -> MultitaskModel:
        """The model the passes run: the bf16 or oneDNN copy where there is one, unless a frozen encoder's cache
        stands in for the encoder (then only the heads run)."""
        if self.cast is None or self.source.cache is not None:
            return self.source
        return self.cast.get()

    def evaluate(self, data: dict[str, TaskData]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Metrics {"sst/acc": .., "quora/acc": .., "sts/pearson": .., "overall": ..} and the predictions, from the
        model's weights as they are now."""
        if self.cast is not None:
            self.cast.refresh()
        metrics, preds = {}, {}
        for task, d in data.items():
            preds[task] = self.predict(task, d)
            if d.labels is not None:
                spec = self.specs[task]
                metrics[f"{task}/{spec.metric_name}"] = spec.metric(preds[task], d.labels)
        if data and len(metrics) == len(data):
            metrics["overall"] = overall_score(metrics, {t: self.specs[t] for t in data})
        return metrics, preds

    def predict(self, task: str, data: TaskData) -> torch.Tensor:
        """Predictions in example order (classes, 0/1, or similarities)."""
        return self.specs[task].hard(self.soft(task, data))

    @torch.inference_mode()
    def soft(self, task: str, data: TaskData, batch_size: int | None = None) -> torch.Tensor:
        """Soft scores in example order (Task.soft: class probabilities, P(1), or the similarity)."""
        model, bs = self.model, batch_size or self.batch_size
        model.eval()
        spec, scale = self.specs[task], model.cosine_scale(task)
        if data.joint is not None:  # cross-encoder: every pair is its own encoder input

            def scores(pairs: list[int]) -> torch.Tensor:
                out = torch.empty(len(pairs))  # (n,) or (n, C): its width is known after the first batch
                for idx in trimming(bucket_batches([data.lengths[i] for i in pairs], bs)):
                    b = make_batch(data, [pairs[i] for i in idx], self.pad_id).to(self.device)
                    with self.autocast():
                        soft = spec.soft(model.task_output(task, b), scale).float().cpu()
                    if out.shape[1:] != soft.shape[1:]:
                        out = torch.empty(len(pairs), *soft.shape[1:])
                    out[idx] = soft
                return out

            return gathered_rows(scores, len(data))
        emb = self.sentences(task, data.sentences, bs)  # (S, H)
        index = torch.tensor(data.index, device=self.device)  # (N, 1 or 2)
        parts = []
        for rows in index.split(bs * 4):
            e = emb[rows.T.reshape(-1)]  # (k * b, H): all first sentences, then the second ones
            with self.autocast():
                parts.append(spec.soft(model.head(task, e, pair=rows.shape[1] == 2), scale).cpu())
        return torch.cat(parts)

    @torch.inference_mode()
    def sentences(self, task: str, sentences: list[list[int]], batch_size: int | None = None) -> torch.Tensor:
        """(S, H) embeddings of token-id sentences with the task's pooling (and PALs), in the given order."""
        self.model.eval()
        return self._embed_rows(task, sentences, batch_size or self.batch_size)

    @torch.no_grad()  # not inference_mode: the heads' backward reads these rows
    def cache_encoder(self, data: dict[str, dict[str, TaskData]]) -> None:
        """`frozen: true`: embeds every split's inputs once, in eval mode (no dropout), into the model's
        EncoderCache (multitask/frozen.py), so the heads train and are evaluated on these rows and an epoch costs
        the heads alone: per distinct sentence, or for a cross-encoder per example, the joint pair's embedding."""
        model = self.source
        model.cache = None  # the passes below run the encoder
        model.eval()
        cache = EncoderCache(model.encode, model)
        for split in data.values():
            for task, d in split.items():
                if d.joint is None:
                    cache.add(task, d.sentences, None, self._embed_rows(task, d.sentences, self.batch_size))
                else:
                    cache.add(task, d.joint, d.types, self._joint_rows(task, d))
        model.cache = cache

    def _joint_rows(self, task: str, data: TaskData) -> torch.Tensor:
        """(N, H) a cross-encoder's embedding of every example's joint pair."""
        model = self.model
        out = torch.empty(len(data), model.bert.config.hidden_size, device=self.device)
        for idx in trimming(bucket_batches(data.lengths, self.batch_size)):
            b = make_batch(data, idx, self.pad_id).to(self.device)
            with self.autocast():
                out[idx] = model.embed(task, b.ids, b.mask, b.types).float()
        return out

    def _embed_rows(self, task: str, seqs: list[list[int]], batch_size: int) -> torch.Tensor:
        """(N, H) of every sequence, in length-sorted batches, returned in the original order; with several
        processes each encodes its share of the rows and all get every embedding back."""
        model = self.model
        width = model.bert.config.hidden_size

        def rows(idx: list[int]) -> torch.Tensor:
            mine = [seqs[i] for i in idx]
            out = torch.empty(len(mine), width, device=self.device)
            for b in trimming(bucket_batches([len(s) for s in mine], batch_size)):
                ids, mask = (t.to(self.device) for t in pad([mine[i] for i in b], self.pad_id))
                with self.autocast():
                    out[b] = model.embed(task, ids, mask).float()
            return out

        return gathered_rows(rows, len(seqs))


def int8(model: MultitaskModel, device: torch.device) -> MultitaskModel:
    """A copy of the model with every linear layer dynamically quantized to int8 (the encoder's q/k/v, attention
    output and FFN layers, the pooler and the heads); embeddings and LayerNorm stay fp32. The trained model is left
    as it is. Weights get one scale per output channel: one per matrix cost the best recipe's dev 0.0072 overall
    against fp32, per channel 0.0044, at 0.94x the speed (benchmarks/RESULTS.md, "int8")."""
    if device.type != "cpu":
        raise MinbertError(f"precision int8: dynamic int8 quantization runs on CPU, not {device.type}; use bf16 there")
    # PyTorch marks torch.ao.quantization deprecated, announced for removal: a build without it gets one line
    ao = getattr(torch.ao, "quantization", None)
    quantize, qconfig = (getattr(ao, n, None) for n in ("quantize_dynamic", "per_channel_dynamic_qconfig"))
    if quantize is None or qconfig is None:
        raise MinbertError(
            f"precision int8: this PyTorch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic, "
            "which --precision int8 uses; run fp32 or bf16, or export ONNX Runtime's int8 models with `minbert "
            "export RUN OUT --format onnx --int8`"
        )
    frozen = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # its deprecation notices (two long lines each use): ours to act on, not the user's
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=DeprecationWarning)
        return quantize(frozen, {nn.Linear: qconfig}, dtype=torch.qint8)
