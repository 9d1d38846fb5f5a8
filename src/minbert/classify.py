"""Single-task sentiment classifier (the handout's classifier.py): SST-5 or CFIMDB, frozen encoder or full fine-tune.

    minbert classify --task sst --mode finetune --bf16

`frozen` trains only the head. The encoder then never changes, so it runs once per data set in eval mode and the
head trains on the cached sentence embeddings: epochs cost milliseconds instead of minutes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from minbert.config import dump_yaml
from minbert.data import (
    DATASETS,
    Tokenizer,
    bucket_batches,
    data_dir,
    embed_all,
    load_split,
    pad,
    split_file,
    write_predictions,
)
from minbert.model import BertModel, check_fits, resolve_checkpoint
from minbert.optim import AdamW
from minbert.runs import (
    MetricsLog,
    atomic_write_text,
    autocast,
    load_tensors,
    new_run_dir,
    pick_device,
    progress,
    save_tensors,
    seed_everything,
    set_threads,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifyConfig:
    task: Literal["sst", "cfimdb"] = "sst"
    mode: Literal["frozen", "finetune"] = "finetune"
    checkpoint: str = "default"  # the embedded all-MiniLM-L6-v2, or a Hugging Face BERT directory
    data_dir: str = ""  # "" = $MINBERT_DATA, else ../shared/data
    pooling: Literal["cls", "pooler", "mean"] = "mean"
    epochs: int = 0  # 0 = 4 for SST, 2 for CFIMDB (10 in frozen mode, where an epoch costs milliseconds)
    batch_size: int = 32
    lr: float = 0.0  # 0 = 1e-3 frozen, 5e-5 finetune
    weight_decay: float = 0.0
    dropout: float = 0.3
    max_length: int = 0  # tokens per input; 0 = 128 for SST, 256 for CFIMDB (90% of its reviews fit in 361)
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit)
    train_limit: int = 0  # train on the first N examples only (0 = all)
    seed: int = 11711
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    strict: bool = False  # malformed data rows stop the run instead of being skipped
    out: str = ""  # run directory; "" = runs/<task>-<mode>-<time>

    def resolved(self) -> "ClassifyConfig":
        """Fill the task- and mode-dependent defaults, so the saved config says what actually ran."""
        return dataclasses.replace(
            self,
            lr=self.lr or (1e-3 if self.mode == "frozen" else 5e-5),
            epochs=self.epochs or (10 if self.mode == "frozen" else 4 if self.task == "sst" else 2),
            max_length=self.max_length or (128 if self.task == "sst" else 256),
        )


class SentimentClassifier(nn.Module):
    def __init__(self, bert: BertModel, num_labels: int, dropout: float, pooling: str):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.hidden_size, num_labels)

    def embed(self, input_ids, attention_mask):
        return self.bert.sentence_embedding(input_ids, attention_mask, pooling=self.pooling)  # (B, H)

    def head(self, embedding):
        return self.classifier(self.dropout(embedding))  # (B, num_labels)

    def forward(self, input_ids, attention_mask):
        return self.head(self.embed(input_ids, attention_mask))


def classify(cfg: ClassifyConfig) -> dict:
    """Train, keep the best epoch by dev accuracy, write predictions; returns the run summary."""
    cfg = cfg.resolved()
    spec = DATASETS[cfg.task]
    root = data_dir(cfg.data_dir)
    ckpt = resolve_checkpoint(cfg.checkpoint)
    check_fits(ckpt, {"max_length": cfg.max_length})
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        set_threads(0)

    tok = Tokenizer.from_pretrained(ckpt)
    splits = {s: load_split(spec, s, root, cfg.strict) for s in ("train", "dev")}
    if split_file(spec, "test", root):
        splits["test"] = load_split(spec, "test", root, cfg.strict)
    if cfg.train_limit:
        splits["train"] = splits["train"][: cfg.train_limit]
    # Tokenize once per data set; batches only pad.
    tokens = {s: tok.encode([e.texts[0] for e in ex], cfg.max_length) for s, ex in splits.items()}
    labels = {s: torch.tensor([e.label for e in ex]) for s, ex in splits.items() if s != "test"}

    bert = BertModel.from_pretrained(ckpt)
    model = SentimentClassifier(bert, spec.num_labels, cfg.dropout, cfg.pooling).to(device)
    bert.choose_speed_paths(torch.device(device).type)
    frozen = cfg.mode == "frozen"
    if frozen:
        bert.requires_grad_(False)
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)

    run = Path(cfg.out) if cfg.out else new_run_dir("runs", f"{cfg.task}-{cfg.mode}")
    run.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run / "config.yaml")
    metrics = MetricsLog(run / "metrics.jsonl")
    log.info("run directory: %s", run)

    @functools.cache  # one closure per split: frozen mode encodes each split once
    def logits_fn(split: str):
        """batch indices -> logits; frozen mode reads cached embeddings, finetune runs the encoder."""
        if frozen:
            feats = encode_all(model, tokens[split], tok.pad_id, cfg.batch_size, device, cfg.bf16)
            return lambda idx: model.head(feats[idx])
        return lambda idx: model(*(t.to(device) for t in pad([tokens[split][i] for i in idx], tok.pad_id)))

    train_logits = logits_fn("train")
    dev_logits = logits_fn("dev")
    lengths = [len(t) for t in tokens["train"]]
    best, best_epoch, step, t0 = -1.0, 0, 0, time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if frozen:
            bert.eval()  # no dropout in a frozen encoder: its embeddings are computed once
        batches = bucket_batches(lengths, cfg.batch_size, random.Random(cfg.seed + epoch))
        bar = progress(batches, f"{cfg.task} {cfg.mode} epoch {epoch}/{cfg.epochs}", unit="batch")
        total = 0.0
        for n, idx in enumerate(bar, start=1):
            with autocast(device, cfg.bf16):
                logits = train_logits(idx)
            loss = F.cross_entropy(logits.float(), labels["train"][idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item()
            bar.set_postfix(loss=f"{total / n:.4f}", step=step, refresh=False)
            if cfg.max_steps and step >= cfg.max_steps:
                break
        bar.close()
        dev_acc = accuracy(
            predict(model, dev_logits, len(tokens["dev"]), cfg, device, lengths=[len(t) for t in tokens["dev"]]),
            labels["dev"],
        )
        improved = dev_acc > best
        metrics.write(
            {"epoch": epoch, "step": step, "train/loss": total / n, "dev/acc": dev_acc, "time": time.time() - t0}
        )
        print(
            f"epoch {epoch}/{cfg.epochs}  train loss {total / n:.4f}  dev acc {dev_acc:.4f}"
            f"{'  (best)' if improved else ''}  {time.time() - t0:.0f}s",
            flush=True,
        )
        if improved:
            best, best_epoch = dev_acc, epoch
            save_classifier(run / "best", model, cfg, ckpt)
        if cfg.max_steps and step >= cfg.max_steps:
            break

    model.load_state_dict(load_tensors(run / "best" / "model.safetensors"))
    summary = {
        "task": cfg.task,
        "mode": cfg.mode,
        "dev/acc": best,
        "best_epoch": best_epoch,
        "steps": step,
        "wall_time_s": round(time.time() - t0, 1),
        "run_dir": str(run),
    }
    write_split_predictions(model, splits, tokens, cfg, device, run, logits_fn)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{cfg.task} dev accuracy {best:.4f} (epoch {best_epoch}); predictions in {run / 'predictions'}")
    return summary


def encode_all(model: SentimentClassifier, seqs, pad_id, batch_size, device, bf16) -> torch.Tensor:
    """(N, H) sentence embeddings in the original order, from an eval-mode encoder."""
    model.bert.eval()
    return embed_all(model.embed, seqs, pad_id, model.bert.config.hidden_size, device, bf16, batch_size * 2)


@torch.inference_mode()
def predict(model, logits_of, n: int, cfg: ClassifyConfig, device, lengths: list[int]) -> torch.Tensor:
    model.eval()
    preds = torch.empty(n, dtype=torch.long)
    for idx in bucket_batches(lengths, cfg.batch_size * 2):
        with autocast(device, cfg.bf16):
            preds[idx] = logits_of(idx).argmax(-1).cpu()
    return preds


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item()


def write_split_predictions(model, splits, tokens, cfg, device, run: Path, logits_fn) -> None:
    spec = DATASETS[cfg.task]
    for split in ("dev", "test"):
        if split not in splits:
            log.warning("no %s test file: test predictions not written", cfg.task)
            continue
        preds = predict(model, logits_fn(split), len(tokens[split]), cfg, device, [len(t) for t in tokens[split]])
        path = run / "predictions" / f"{cfg.mode}-{cfg.task}-{split}-out.csv"
        write_predictions(path, spec.prediction_header, [e.id for e in splits[split]], preds.tolist())


def save_classifier(path: Path, model: SentimentClassifier, cfg: ClassifyConfig, ckpt: Path) -> None:
    """model.safetensors + config.json (the BERT config plus the head); with vocab.txt it is itself a
    Hugging Face-style BERT directory, so --checkpoint can start from it."""
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / "model.safetensors", model.state_dict())
    config = json.loads(model.bert.config.to_json())
    config["minbert"] = {
        "head": "sentiment",
        "num_labels": model.classifier.out_features,
        "pooling": model.pooling,
        "classify": dataclasses.asdict(cfg),
    }
    atomic_write_text(path / "config.json", json.dumps(config, indent=2))
    for name in ("vocab.txt", "tokenizer_config.json"):
        if (ckpt / name).is_file() and not (path / name).is_file():
            (path / name).write_bytes((ckpt / name).read_bytes())
