"""Single-task sentiment classifier (the handout's classifier.py): SST-5 or CFIMDB, frozen encoder or full fine-tune.

    minbert classify --task sst --mode finetune --bf16

A front end to the multitask core: the classifier is a one-task `TrainConfig` (a linear head with cross-entropy over
the pooled sentence embedding), so it trains, checkpoints, resumes (`minbert train --resume RUN`), predicts, loads
(`minbert.load(RUN)`) and exports like any run. `frozen` trains only the head (`TrainConfig.frozen`): the encoder
then runs once per data set in eval mode and the head trains on the cached embeddings.

`preset: handout` is the handout's classifier settings (reports 000 and 004, section 5.3: 10 epochs, batch size 8,
hidden dropout 0.3, learning rate 1e-3 frozen ("pretrain") and 1e-5 fine-tuned) in place of the defaults below, which
suit the small embedded checkpoint (4 or 2 epochs, batch 32, lr 5e-5 fine-tuned). A preset only fills the settings
left unset: a flag or key given beside it wins (`--preset handout --epochs 2`), and the saved config says what ran.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from minbert.config import ge, within
from minbert.files import atomic_write_text
from minbert.multitask.config import TaskConfig, TrainConfig

# the settings a preset puts in place of the defaults; `lr` by mode. The handout's hidden dropout, 0.3, is the default.
PRESETS: dict[str, dict] = {
    "none": {"epochs": None, "batch_size": 32, "lr": {"frozen": 1e-3, "finetune": 5e-5}},
    "handout": {"epochs": 10, "batch_size": 8, "lr": {"frozen": 1e-3, "finetune": 1e-5}},
}


@dataclass(frozen=True)
class ClassifyConfig:
    task: Literal["sst", "cfimdb"] = "sst"
    mode: Literal["frozen", "finetune"] = "finetune"
    checkpoint: str = "default"  # the embedded all-MiniLM-L6-v2, or a Hugging Face BERT directory
    data_dir: str = ""  # "" = $MINBERT_DATA, else ../shared/data
    pooling: Literal["cls", "pooler", "mean"] = "mean"
    # settings in place of the defaults marked "or the preset's": handout = the handout's (10 epochs, batch 8, lr
    # 1e-3 frozen, 1e-5 finetune); what is set beside it wins
    preset: Literal["none", "handout"] = "none"
    # 0 = 4 for SST, 2 for CFIMDB (10 in frozen mode, where an epoch costs milliseconds), or the preset's
    epochs: Annotated[int, ge(0, "0 = the task's default")] = 0
    batch_size: Annotated[int, ge(1, "0 = 32, or the preset's", also=(0,))] = 0  # 0 = 32, or the preset's
    lr: Annotated[float, ge(0, "0 = the mode's default")] = 0.0  # 0 = 1e-3 frozen, 5e-5 finetune, or the preset's
    weight_decay: Annotated[float, ge(0)] = 0.0
    dropout: Annotated[float, within(0, 1, "[)")] = 0.3
    # tokens per input; 0 = 128 for SST, 256 for CFIMDB (90% of its reviews fit in 361)
    max_length: Annotated[int, ge(3, "0 = the task's default", also=(0,))] = 0
    max_steps: Annotated[int, ge(0, "0 = no limit")] = 0  # stop after this many optimizer steps (0 = no limit)
    train_limit: Annotated[int, ge(0, "0 = all")] = 0  # train on the first N examples only (0 = all)
    eval_limit: Annotated[int, ge(0, "0 = all")] = 0  # score and predict the first N dev and test examples (0 = all)
    seed: Annotated[int, within(0, 2**32 - 1)] = 11711
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # autocast; the flag --bf16 sets bf16
    max_grad_norm: Annotated[float, ge(0, "0 = off")] = 0.0  # clip the gradient norm (0 = off)
    strict: bool = False  # malformed data rows stop the run instead of being skipped
    threads: Annotated[int, within(0, 1024, note="0 = automatic")] = 0  # CPU threads; 0 = the CPUs it may use
    out: str = ""  # run directory; "" = runs/<task>-<mode>-<time>

    def resolved(self) -> "ClassifyConfig":
        """Fill the task-, mode- and preset-dependent defaults (what is set wins over the preset), so the saved
        config says what actually ran."""
        preset = PRESETS[self.preset]
        default_epochs = 10 if self.mode == "frozen" else 4 if self.task == "sst" else 2
        return dataclasses.replace(
            self,
            lr=self.lr or preset["lr"][self.mode],
            epochs=self.epochs or preset["epochs"] or default_epochs,
            batch_size=self.batch_size or preset["batch_size"],
            max_length=self.max_length or (128 if self.task == "sst" else 256),
        )

    def train_config(self) -> TrainConfig:
        """The one-task multitask config this classifier is."""
        c = self.resolved()
        head = TaskConfig(
            head="linear",
            loss="ce",
            pooling=c.pooling,
            batch_size=c.batch_size,
            dropout=c.dropout,
            max_length=c.max_length,
            train_limit=c.train_limit,
            eval_limit=c.eval_limit,
        )
        return TrainConfig(
            checkpoint=c.checkpoint,
            data_dir=c.data_dir,
            tasks={c.task: head},
            epochs=c.epochs,
            lr=c.lr,
            weight_decay=c.weight_decay,
            max_grad_norm=c.max_grad_norm,
            max_steps=c.max_steps,
            seed=c.seed,
            device=c.device,
            precision=c.precision,
            strict=c.strict,
            threads=c.threads,
            frozen=c.mode == "frozen",
            out=c.out,
            name=f"{c.task}-{c.mode}",
            prediction_files=f"{c.mode}-{{task}}-{{split}}-out.csv",  # the handout's names
        )


def classify(cfg: ClassifyConfig, overwrite: bool = False) -> dict:
    """Train, keep the best epoch by dev accuracy, write predictions; returns the run summary (the multitask
    summary plus the task, the mode and its dev accuracy). `overwrite`: replace a run already in `out`."""
    from minbert.multitask.train import train

    summary = train(cfg.train_config(), overwrite=overwrite)
    summary = {"task": cfg.task, "mode": cfg.mode, "dev/acc": summary["dev"][f"{cfg.task}/acc"], **summary}
    run = Path(summary["run_dir"])
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2))
    print(f"{cfg.task} dev accuracy {summary['dev/acc']:.4f} (epoch {summary['best_epoch']}); predictions in "
          f"{run / 'predictions'}")  # fmt: skip
    return summary
