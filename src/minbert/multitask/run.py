"""What every command does with a run: build its model and tokenizer from a config, read and tokenize its data,
and load a finished run (`load_run`) - its saved config, the model with its best checkpoint, the tokenizer."""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from minbert.config import from_dict, load_yaml
from minbert.data import Tokenizer, choose_data_dir, data_dir, load_split, split_file
from minbert.errors import MinbertError
from minbert.model import BertModel, resolve_checkpoint
from minbert.model.compile import compile_layers
from minbert.model.multitask import MultitaskModel
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import TaskData, encode_task
from minbert.multitask.runner import INFERENCE_PRECISIONS, Runner
from minbert.multitask.state import load_snapshot
from minbert.runs import pick_device

log = logging.getLogger(__name__)


def build(cfg: TrainConfig, device) -> tuple[MultitaskModel, Tokenizer]:
    """The model (pretrained encoder, fresh heads) and the tokenizer of `cfg.checkpoint`."""
    ckpt = resolve_checkpoint(cfg.checkpoint)
    drop = {}
    if cfg.encoder_dropout >= 0:
        drop = {"hidden_dropout_prob": cfg.encoder_dropout, "attention_probs_dropout_prob": cfg.encoder_dropout}
    bert = BertModel.from_pretrained(ckpt, **drop)
    bert.encoder.gradient_checkpointing = cfg.grad_checkpointing
    if cfg.frozen or (cfg.lora.enabled and not cfg.lora.train_shared):
        bert.requires_grad_(False)  # only the heads (and adapters) train
    if cfg.freeze_word_embeddings:
        bert.embeddings.word_embeddings.weight.requires_grad_(False)
    # a row-sparse gradient of the rows looked up, which AdamW updates lazily (optim/adamw.py)
    bert.embeddings.word_embeddings.sparse = cfg.lazy_word_embeddings
    model = MultitaskModel(bert, {n: cfg.task(n) for n in cfg.tasks}, cfg.pals, cfg.specs, cfg.lora).to(device)
    model.run_on(torch.device(device).type)  # the device's fast paths (model/fast), chosen once
    if cfg.compile:
        compile_layers(bert, cfg.compile)
    return model, Tokenizer.from_pretrained(ckpt)


def load_data(cfg: TrainConfig, tok: Tokenizer, splits=("train", "dev", "test")) -> dict[str, dict[str, TaskData]]:
    """{split: {task: TaskData}}, tokenized once; a missing test file only skips that task's test predictions."""
    root = data_dir(cfg.data_dir)
    out: dict[str, dict[str, TaskData]] = {s: {} for s in splits}
    for name in cfg.tasks:
        task, tcfg = cfg.specs[name], cfg.task(name)
        for split in splits:
            if split == "train" and name in cfg.keep_tasks:  # a run's own task, kept as it is: nothing to train
                continue
            if split == "test" and split_file(task.dataset, "test", root) is None:
                log.warning("no %s test file under %s: its test predictions are skipped", name, root)
                continue
            examples = load_split(task.dataset, split, root, cfg.strict)
            limit = tcfg.train_limit if split == "train" else tcfg.eval_limit
            out[split][name] = encode_task(task, examples[:limit] if limit else examples, tok, tcfg)
    return out


def load_run_config(run: Path, data_dir: str | None = None) -> TrainConfig:
    """A run's saved config; its data folder by the rule of `choose_data_dir` (`data_dir`: the --data-dir flag)."""
    if not (run / "config.yaml").is_file():
        raise MinbertError(f"{run}: no config.yaml; is this a minbert train run directory?")
    try:
        cfg = from_dict(TrainConfig, load_yaml(run / "config.yaml")).validate()
    except MinbertError as e:
        if str(run / "config.yaml") in str(e):
            raise
        raise MinbertError(f"{run / 'config.yaml'}: {e} (the run's saved config was changed or damaged)") from None
    return dataclasses.replace(cfg, data_dir=choose_data_dir(data_dir, cfg.data_dir))


def resume_config(run: Path, overrides: list[str], data_dir: str | None = None, ignored: list[str] = ()) -> TrainConfig:
    """A resumed run keeps its saved config; only where results go, and where its data is, may change. What the
    user gave beside --resume that it will not use (`overrides`, `ignored`: flags as typed) is named in a warning."""
    named = list(ignored) + ([f"overrides {' '.join(overrides)}"] if overrides else [])
    if named:
        log.warning(f"ignoring on --resume (a resumed run replays its saved {run / 'config.yaml'}): {'; '.join(named)}")
    return dataclasses.replace(load_run_config(run, data_dir), out=str(run))


@dataclass
class LoadedRun:
    dir: Path
    cfg: TrainConfig
    model: MultitaskModel  # every task's head, with the best epoch's weights, in eval mode
    tok: Tokenizer
    device: torch.device
    best: dict  # the best checkpoint's saved state: {"epoch": .., "dev": {metric: value}}
    precision: str = ""  # what inference runs in (runner.INFERENCE_PRECISIONS); "" = the run's own precision

    @functools.cached_property
    def runner(self) -> Runner:
        """Its forward passes (soft outputs, predictions, metrics, embeddings), built once."""
        return Runner(self.model, self.tok.pad_id, self.device, self.precision or self.cfg.precision)


def load_run(
    run: str | Path,
    data_dir: str | None = None,
    device: str | None = None,
    cfg: TrainConfig | None = None,
    precision: str | None = None,
) -> LoadedRun:
    """A finished (or interrupted) run's best checkpoint, ready to evaluate or predict; `cfg`: its config when the
    caller has read it already (load_run_config); `precision`: what inference runs in (default the run's; "int8":
    dynamic int8 quantization on CPU)."""
    if precision is not None and precision not in INFERENCE_PRECISIONS:
        raise MinbertError(f"precision {precision!r}: valid: {', '.join(INFERENCE_PRECISIONS)}")
    run = Path(run)
    cfg = cfg or load_run_config(run, data_dir)
    where = pick_device(device or cfg.device)
    model, tok = build(cfg, where)
    best = load_snapshot(run, "best", model)
    model.eval()
    return LoadedRun(run, cfg, model, tok, where, best, precision or "")
