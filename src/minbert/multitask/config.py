"""The multitask experiment config. A YAML file under configs/ fills it; `a.b=c` overrides adjust it; unknown keys,
wrong types and unknown technique names are refused before any training starts."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from minbert.combiners import COMBINERS
from minbert.combiners.base import missing_packages
from minbert.config import Range, from_dict, ge, gt, to_dict, typed_args, within
from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.lr_schedules import UPDATERS
from minbert.model.heads import HEADS, PAIR_FEATURES
from minbert.model.lora import TARGETS as LORA_TARGETS
from minbert.multitask.kinds import check_kinds, num_outputs  # noqa: F401 (num_outputs: re-exported)
from minbert.registry import build
from minbert.regularizers import REGULARIZERS
from minbert.runs import check_loggers
from minbert.sampling import SAMPLERS
from minbert.tasks import TASKS, Task
from minbert.tasks.custom import CustomTaskConfig, resolved
from minbert.weighting import WEIGHTINGS


@dataclass(frozen=True)
class TaskConfig:
    # linear (sentences); concat | concat_sigmoid | cosine (bi-encoder pairs); cross (cross-encoder pairs);
    # "" = the task's default
    head: str = ""
    loss: str = ""  # a key of minbert.losses.LOSSES; "" = task default
    loss_args: dict[str, float] = field(default_factory=dict)
    weight: Annotated[float, ge(0)] = 1.0  # this task's factor in the summed loss
    pooling: Literal["cls", "pooler", "mean"] = "mean"
    batch_size: Annotated[int, ge(1)] = 32
    # > 0: training batches by tokens instead of examples - each batch, in length order, as many examples as fit
    # this many padded tokens (examples x inputs per example x the longest input), one at least; batch_size unused
    batch_tokens: Annotated[int, ge(0, "0 = batches of batch_size examples")] = 0
    dropout: Annotated[float, within(0, 1, "[)")] = 0.1
    # learnable layers (linear, ReLU, dropout) before the output or the cosine
    extra_layers: Annotated[int, within(0, 16)] = 0
    features: tuple[str, ...] = ("u", "v", "|u-v|")  # concat head inputs
    # a similarity head's (cosine, concat_sigmoid) score range; 0 = the task's label maximum (STS 5, Quora 1)
    cosine_scale: Annotated[float, ge(0, "0 = the task's label maximum")] = 0.0
    max_length: Annotated[int, ge(3, "[CLS], a token, [SEP]")] = 128
    train_limit: Annotated[int, ge(0, "0 = all")] = 0  # use the first N training examples (0 = all)
    # evaluate and predict on the first N dev and test examples (0 = all; for smoke runs)
    eval_limit: Annotated[int, ge(0, "0 = all")] = 0
    extra_losses: dict[str, dict[str, float]] = field(default_factory=dict)  # {name: {weight: w, <loss args>}}
    # the main loss's factor beside the extra losses; 0 = the extra losses alone train (report 001's sentiment-MNRL
    # stage, whose head stays untrained)
    loss_weight: Annotated[float, ge(0)] = 1.0
    # > 0: report 004's dynamic margin for this task's loss, moved each epoch
    margin_step: Annotated[float, ge(0, "0 = off")] = 0.0
    # which way it moves: algorithm1 = report 004's Algorithm 1 (dev improved -> lower the margin, else raise it),
    # reverse = the opposite (improved -> raise, else lower); only with margin_step > 0
    margin_direction: Literal["algorithm1", "reverse"] = "algorithm1"


@dataclass(frozen=True)
class PalsConfig:
    enabled: bool = False
    # projected size s; 0 = the paper's 204 scaled by H / 768 (102 for the 384-wide default checkpoint)
    size: Annotated[int, ge(0, "0 = the paper's 204 scaled by the hidden size")] = 0
    heads: Annotated[int, ge(1)] = 6  # the paper's setting


@dataclass(frozen=True)
class LoraConfig:
    """Per-task low-rank adapters on the shared encoder (model/lora.py; Hu et al. 2021)."""

    enabled: bool = False
    rank: Annotated[int, within(1, 4096)] = 8
    alpha: Annotated[float, gt(0)] = 16.0  # the delta is scaled by alpha / rank
    dropout: Annotated[float, within(0, 1, "[)")] = 0.1  # on each adapted layer's input to A (PEFT's lora_dropout)
    # which layers of every encoder layer get one: query, key, value, attention_output, intermediate, output
    # (Hu et al. adapt W_q and W_v, PEFT's default for BERT)
    targets: tuple[str, ...] = ("query", "value")
    tasks: tuple[str, ...] = ()  # the tasks that get adapters; () = every task
    # False: the encoder's own weights stay as the checkpoint's and only adapters and heads train (each task's
    # adapter and head are then all that task owns); True: they train too, shared by every task
    train_shared: bool = False
    lr_mult: Annotated[float, gt(0)] = 10.0  # the adapters' learning rate: lr x lr_mult


@dataclass(frozen=True)
class EarlyStopping:
    # stop after this many evaluations without a better `metric` (0 = off)
    patience: Annotated[int, ge(0, "0 = off")] = 0
    metric: str = "overall"  # the dev metric that picks the best epoch: overall, sst/acc, quora/acc, sts/pearson, ...


@dataclass(frozen=True)
class DistillConfig:
    # finished runs whose averaged soft outputs are the targets (multitask/distill.py); () = no distillation
    teachers: tuple[str, ...] = ()
    # each task's loss is (1 - weight) * its gold loss + weight * the distillation term
    weight: Annotated[float, within(0, 1)] = 0.5
    temperature: Annotated[float, gt(0)] = 2.0  # softens both distributions of a classification task


def default_tasks() -> dict[str, TaskConfig]:
    return {"sst": TaskConfig(), "quora": TaskConfig(), "sts": TaskConfig()}


@dataclass(frozen=True)
class TrainConfig:
    checkpoint: str = "default"  # embedded all-MiniLM-L6-v2, or a Hugging Face BERT directory
    data_dir: str = ""  # "" = $MINBERT_DATA, else ../shared/data
    tasks: dict[str, TaskConfig] = field(default_factory=default_tasks)
    # your own tasks: files, format, columns, label type, metric (see tasks/custom.py); then name them under tasks
    custom_tasks: dict[str, CustomTaskConfig] = field(default_factory=dict)
    schedule: str = "round_robin"  # task sampling: a key of minbert.sampling.SAMPLERS
    schedule_args: dict[str, Any] = field(default_factory=dict)  # the sampler's settings (annealed: decay)
    combiner: str = "sum"  # how per-task gradients become one: a key of minbert.combiners.COMBINERS
    combiner_args: dict[str, Any] = field(default_factory=dict)  # e.g. gradvac: {beta: 0.01}
    conflict_stats: bool = False  # record per-pair gradient cosines each epoch (also with "sum")
    weighting: str = "equal"  # how task losses are weighted: a key of minbert.weighting.WEIGHTINGS (uw, dwa, ...)
    weighting_args: dict[str, Any] = field(default_factory=dict)  # e.g. dwa: {temperature: 2.0}
    regularizers: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {smart: {weight: 15}}
    pals: PalsConfig = field(default_factory=PalsConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    lr_schedule: str = "constant"  # a key of minbert.lr_schedules.UPDATERS, one not per task
    lr_schedule_args: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: Annotated[int, ge(0, "0 = the schedule's natural epoch")] = 0  # 0 = the schedule's natural epoch
    epochs: Annotated[int, within(1, 100_000)] = 3
    lr: Annotated[float, ge(0)] = 5e-5
    # heads' (and PALs') learning rate is lr times this: fresh layers need larger steps
    head_lr_mult: Annotated[float, gt(0)] = 1.0
    # layer-wise decay: encoder layer i of L gets lr * decay^(L - i), embeddings decay^L
    layer_lr_decay: Annotated[float, within(0, 1, "(]")] = 1.0
    weight_decay: Annotated[float, ge(0)] = 0.0
    max_grad_norm: Annotated[float, ge(0, "0 = off")] = 0.0  # clip the global gradient norm (0 = off)
    # evaluate, keep and predict with an exponential moving average of the weights (multitask/ema.py); 0 = off
    ema_decay: Annotated[float, within(0, 1, "[)", "0 = off")] = 0.0
    # keep the weights of the last K epochs as checkpoints/epoch-* (for `minbert soup RUN --last K`); 0 = none
    keep_epochs: Annotated[int, within(0, 1000, "[]", "0 = none")] = 0
    seed: Annotated[int, within(0, 2**32 - 1)] = 11711
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # speed and memory (none changes the math, except freeze_word_embeddings and lazy_word_embeddings)
    # autocast; fp16 adds a gradient scaler (GPUs without bf16); auto = bf16 where the hardware makes it fast, else fp32
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    fused: bool = True  # all tasks' sentences in one unpadded encoder pass when the step allows (model/fast/varlen.py)
    # split each global batch into this many micro-batches (same gradient, less memory)
    grad_accum: Annotated[int, ge(1)] = 1
    grad_checkpointing: bool = False  # recompute encoder activations in the backward (less memory, ~1/3 more time)
    compile: str = ""  # a torch.compile backend for the encoder layers ("inductor", ...); "" = eager
    # torch.use_deterministic_algorithms: GPU kernels that give the same bits every run (slower; an op with no such
    # kernel stops the run saying which); a CPU run is deterministic already
    deterministic: bool = False
    # CPU threads per process; 0 = the cores shared among this machine's processes
    threads: Annotated[int, within(0, 1024, note="0 = automatic")] = 0
    freeze_word_embeddings: bool = False  # changes the math: no gradient or update for the vocabulary table
    # changes the math: only the vocabulary rows a step's batches use get a gradient and an AdamW update (lazy Adam,
    # as torch.optim.SparseAdam): the other rows keep their weights, moments and weight decay for that step
    lazy_word_embeddings: bool = False
    # hidden and attention dropout of the encoder; < 0 = the checkpoint's
    encoder_dropout: Annotated[float, Range(hi=1, hi_open=True, note="negative = the checkpoint's")] = -1.0
    strict: bool = False  # malformed data rows stop the run
    # steps between handing freed heap memory back to the OS (glibc malloc_trim): batches of varying length fragment
    # the heap, and what glibc keeps grows with time. 1 keeps resident memory flat at some speed; 0 = never
    # (benchmarks/RESULTS.md, "memory"). Nothing to trim under jemalloc (minbert/allocator.py)
    trim_every: Annotated[int, ge(0, "0 = never")] = 1
    # steps between resumable checkpoints (and at every epoch end)
    checkpoint_every: Annotated[int, ge(0, "0 = epoch ends only")] = 200
    log_every: Annotated[int, ge(1)] = 10  # steps between training-loss records in metrics.jsonl
    # > 0: stop training after this much wall time, then evaluate and finish (equal-time budgets)
    max_minutes: Annotated[float, ge(0, "0 = no limit")] = 0.0
    # > 0: stop training after this many optimizer steps, then evaluate and finish
    max_steps: Annotated[int, ge(0, "0 = no limit")] = 0
    # train only the heads: the encoder keeps its loaded weights and runs once per data set in eval mode; the heads
    # train on those cached sentence embeddings (the single-task classifier's frozen mode)
    frozen: bool = False
    # add tasks to a finished run (multitask/extend.py): its model as its best checkpoint has it, with fresh heads
    # (and adapters) for `tasks`, which alone train; `keep_tasks` (filled in when the run starts): the run's own
    from_run: str = ""
    keep_tasks: tuple[str, ...] = ()
    # start the encoder from a finished run's final weights (its encoder alone: fresh heads, everything trains):
    # the next stage of a staged recipe (report 001: sentiment MNRL first, then multitask; a sweep variant's
    # `init_from=@VARIANT` names another variant's run of the same seed, sweep.py)
    init_from: str = ""
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    # where metrics go besides metrics.jsonl: "tensorboard" (pip install tensorboard), "wandb" (pip install wandb)
    loggers: tuple[str, ...] = ()
    # divergence guard: a step with a non-finite loss or gradient is skipped; this many in a row stop the run
    # (0 = never)
    max_bad_steps: Annotated[int, ge(0, "0 = never stop")] = 5
    # stop when a task's loss exceeds this factor times its running mean (and 10): the run diverged (0 = off)
    divergence_factor: Annotated[float, gt(1, "0 = off", also=(0,))] = 100.0
    out: str = ""  # run directory; "" = runs/<name>-<time>
    name: str = "multitask"
    # CS224N prediction file names under <run>/predictions, from {prefix} (the task's: para for quora), {task}, {split}
    prediction_files: str = "{prefix}-{split}-output.csv"
    # dotted keys applied by `minbert train CONFIG --budget`: the recipe's bounded CPU setting
    budget: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Every check that can run before the model and the data load; the first failure is one MinbertError."""
        from_dict(TrainConfig, to_dict(self))  # the declared ranges, also for a config built in Python
        specs = self.specs
        if not self.tasks:
            raise MinbertError(f"tasks: name at least one of {', '.join(specs)}")
        for name, t in self.tasks.items():
            _check_task(name, t, specs)
        self._check_names()
        self._check_frozen()
        if self.pals.enabled and self.pals.size and self.pals.size % self.pals.heads:
            raise MinbertError(f"pals.size: {self.pals.size} is not a multiple of pals.heads {self.pals.heads}")
        self._check_lora()
        self._check_kept()
        self._check_lazy()
        metrics = ["overall"] + [f"{n}/{specs[n].metric_name}" for n in self.tasks]
        if self.early_stopping.metric not in metrics:
            raise MinbertError(
                f"early_stopping.metric: {self.early_stopping.metric!r} is not a dev metric of these "
                f"tasks; valid: {', '.join(metrics)}"
            )
        check_loggers(self.loggers)
        self._check_prediction_files()
        return self

    def _check_prediction_files(self) -> None:
        """The names must tell splits apart (and tasks, with several), or one file would overwrite another."""
        pattern, n = self.prediction_files, len(self.tasks)
        try:
            names = {pattern.format(prefix=f"p{i}", task=f"t{i}", split=s) for i in range(n) for s in ("dev", "test")}
        except (KeyError, IndexError, ValueError) as e:
            raise MinbertError(
                f"prediction_files: {pattern!r} is not a file name pattern ({type(e).__name__}: {e}); "
                "its fields are {prefix} or {task}, and {split}"
            ) from None
        if len(names) < 2 * n:
            raise MinbertError(
                f"prediction_files: {pattern!r} gives files of different splits{' or tasks' if n > 1 else ''} one "
                "name; use {split}" + (" and {prefix} or {task}" if n > 1 else "")
            )

    def _check_names(self) -> None:
        """Each member named is in its family's registry, and its settings are its constructor's arguments."""
        lr_schedules = {k: c for k, c in UPDATERS.items() if not c.per_task}  # per task: built from tasks.*
        for key, name, registry in (
            ("schedule", self.schedule, SAMPLERS),
            ("combiner", self.combiner, COMBINERS),
            ("weighting", self.weighting, WEIGHTINGS),
            ("lr_schedule", self.lr_schedule, lr_schedules),
            *(("regularizers", r, REGULARIZERS) for r in self.regularizers),
        ):
            if name not in registry:
                # the two schedules are easy to confuse: `schedule` orders the tasks, `lr_schedule` sets the rate
                other = {"schedule": ("lr_schedule", lr_schedules), "lr_schedule": ("schedule", SAMPLERS)}.get(key)
                hint = f" ({name!r} is a {other[0]}: set {other[0]}={name})" if other and name in other[1] else ""
                raise MinbertError(f"{key}: {name!r} unknown; valid: {', '.join(registry)}{hint}")
        for where, (registry, name, args) in self.members().items():  # each argument a parameter, of its type
            typed_args(registry[name], args, where)
        missing_packages(f"combiner={self.combiner}", getattr(COMBINERS[self.combiner], "requires", ()))
        build(SAMPLERS, self.schedule, self.schedule_args).check(list(self.tasks))  # settings that name tasks

    def _check_lora(self) -> None:
        lo = self.lora
        if not lo.enabled:
            return
        bad = [t for t in lo.targets if t not in LORA_TARGETS]
        if bad or not lo.targets:
            raise MinbertError(f"lora.targets: {list(lo.targets)} must name one or more of {', '.join(LORA_TARGETS)}")
        unknown = [t for t in lo.tasks if t not in self.tasks]
        if unknown:
            raise MinbertError(
                f"lora.tasks: {', '.join(unknown)} not among this config's tasks ({', '.join(self.tasks)})"
            )
        if self.frozen:
            raise MinbertError(
                "lora.enabled: adapters change the encoder's output, which frozen=true caches; "
                "use lora.train_shared=false to keep the encoder's own weights fixed instead"
            )

    def _check_lazy(self) -> None:
        if not self.lazy_word_embeddings:
            return
        if self.freeze_word_embeddings:
            raise MinbertError(
                "lazy_word_embeddings: the table is frozen (freeze_word_embeddings=true), so nothing updates it; "
                "set one of the two"
            )
        if self.per_task_gradients:
            raise MinbertError(
                f"lazy_word_embeddings: combiner={self.combiner} and conflict_stats compare dense per-task gradients "
                "of the shared weights; use combiner=sum and conflict_stats=false, or lazy_word_embeddings=false"
            )

    def _check_kept(self) -> None:
        if self.init_from and self.from_run:
            raise MinbertError(
                "init_from: with from_run the model is that run's already; init_from starts a new model from a run's "
                "encoder: set one of the two"
            )
        if not self.keep_tasks:
            return
        unknown = [t for t in self.keep_tasks if t not in self.tasks]
        if unknown or len(self.keep_tasks) == len(self.tasks):
            raise MinbertError(
                f"keep_tasks: {list(self.keep_tasks)} must be some of tasks ({', '.join(self.tasks)}), not all; it is "
                "filled in from from_run"
            )
        if self.lora.enabled and self.lora.train_shared:
            raise MinbertError(
                "lora.train_shared: a task added to a run (from_run) must leave the shared weights as they are, or "
                "the run's own tasks would change; set lora.train_shared=false"
            )

    def _check_frozen(self) -> None:
        """A frozen encoder has no gradient: what acts on the encoder's gradient or weights has nothing to do."""
        if not self.frozen:
            return
        acting = {
            "pals.enabled": self.pals.enabled,
            "regularizers": bool(self.regularizers),
            "combiner": self.combiner != "sum",
            "conflict_stats": self.conflict_stats,
        }
        for key, on in acting.items():
            if on:
                raise MinbertError(
                    f"{key}: acts on the encoder, which frozen=true keeps fixed; turn one of the two off"
                )
        for name in self.tasks:
            t = self.task(name)
            if HEADS[t.head].similarity and not HEADS[t.head].features and not t.extra_layers:
                raise MinbertError(
                    f"tasks.{name}: a {t.head} head without extra_layers has no weights, so frozen=true leaves it "
                    f"nothing to train; set tasks.{name}.extra_layers=1 or another head"
                )

    def members(self) -> dict[str, tuple[dict[str, type], str, dict]]:
        """{config key of the settings: (registry, member name, its settings)} of the members of extension families
        this config names at its top level (each task's losses are under tasks.*), as `registry.build` takes them."""
        out = {f"regularizers.{k}": (REGULARIZERS, k, a) for k, a in self.regularizers.items()}
        out["schedule_args"] = (SAMPLERS, self.schedule, self.schedule_args)
        out["combiner_args"] = (COMBINERS, self.combiner, self.combiner_args)
        out["weighting_args"] = (WEIGHTINGS, self.weighting, self.weighting_args)
        out["lr_schedule_args"] = (UPDATERS, self.lr_schedule, self.lr_schedule_args)
        return out

    @property
    def per_task_gradients(self) -> bool:
        """Whether a step computes one gradient per task (a combiner, or conflict statistics to record)."""
        return self.combiner != "sum" or self.conflict_stats

    @functools.cached_property  # a frozen dataclass: kept in the instance's __dict__, not a field
    def specs(self) -> dict[str, Task]:
        """The task table this config runs on: the built-in tasks and its `custom_tasks` (tasks/custom.py)."""
        return resolved(self.custom_tasks, TASKS)

    def restricted_to(self, names: list[str]) -> "TrainConfig":
        return dataclasses.replace(self, tasks={n: t for n, t in self.tasks.items() if n in names})

    def task(self, name: str) -> TaskConfig:
        """The task's config with its defaults filled in."""
        t, spec = self.tasks[name], self.specs[name]
        return dataclasses.replace(
            t,
            head=t.head or spec.default_head,
            loss=t.loss or spec.default_loss,
            cosine_scale=t.cosine_scale or spec.label_max,
        )


def _check_task(name: str, t: TaskConfig, specs: dict[str, Task]) -> None:
    """A task's name, head and losses: known, fitting the task (sentence or pair) and each other."""
    if name not in specs:
        raise MinbertError(f"tasks.{name}: unknown task; valid: {', '.join(specs)}, or define it under custom_tasks")
    if t.head and t.head not in HEADS:
        raise MinbertError(f"tasks.{name}.head: {t.head!r} unknown; valid: {', '.join(HEADS)}")
    if t.loss and t.loss not in LOSSES:
        raise MinbertError(f"tasks.{name}.loss: {t.loss!r} unknown; valid: {', '.join(LOSSES)}")
    task = specs[name]
    head, kind, loss = t.head or task.default_head, "pair" if task.pair else "sentence", t.loss or task.default_loss
    if HEADS[head].pair != task.pair:
        valid = ", ".join(k for k, h in HEADS.items() if h.pair == task.pair)
        raise MinbertError(f"tasks.{name}.head: {head!r} does not fit a {kind} task; valid: {valid}")
    for extra in t.extra_losses:
        if extra not in LOSSES:
            raise MinbertError(f"tasks.{name}.extra_losses: {extra!r} unknown; valid: {', '.join(LOSSES)}")
    check_kinds(f"tasks.{name}", task, head, loss, list(t.extra_losses))
    typed_args(LOSSES[loss], t.loss_args, f"tasks.{name}.loss_args")
    if HEADS[head].features and (not t.features or any(f not in PAIR_FEATURES for f in t.features)):
        raise MinbertError(
            f"tasks.{name}.features: {list(t.features)} must name one or more of {', '.join(PAIR_FEATURES)}"
        )
    if t.margin_step and loss != "cosine_embedding":
        raise MinbertError(f"tasks.{name}.margin_step: a dynamic margin needs loss cosine_embedding, not {loss!r}")
    if t.loss_weight == 0 and not t.extra_losses:
        raise MinbertError(
            f"tasks.{name}.loss_weight: 0 turns the task's loss off and it has no extra_losses, so nothing would "
            f"train it; add one under tasks.{name}.extra_losses, or set loss_weight > 0"
        )
    for extra in t.extra_losses:
        args = dict(t.extra_losses[extra])
        if not args.pop("weight", 1.0) >= 0:
            raise MinbertError(f"tasks.{name}.extra_losses.{extra}.weight: must be >= 0")
        typed_args(LOSSES[extra], args, f"tasks.{name}.extra_losses.{extra}")
