"""Your own tasks from the config, without editing the package: a `custom_tasks:` entry names the files, their
format and columns, the label type and the metric, and becomes a Task in the same registry as the built-in ones.

    custom_tasks:
      mood:
        files: {train: mood-train.jsonl, dev: mood-dev.jsonl, test: mood-test.jsonl}  # test is optional
        text: [text]                  # one column: a sentence task; two: a pair task
        label: label
        labels: [sad, happy, angry]   # classes as written in the label column (or num_labels: N for 0..N-1)
        metric: f1                    # acc | f1 | pearson | spearman
    tasks:
      mood: {head: linear}

File names are looked up in the data folder (--data-dir, $MINBERT_DATA, data_dir) unless absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from minbert.data import DatasetSpec
from minbert.data.readers import FORMATS, LabelSpec, float_label, int_label, named_label
from minbert.errors import MinbertError
from minbert.tasks.base import Task


@dataclass(frozen=True)
class CustomTaskConfig:
    files: dict[str, str] = field(default_factory=dict)  # train, dev (required) and test (optional) file names
    format: str = ""  # csv | tsv | jsonl; "" = from each file's extension
    text: tuple[str, ...] = ("text",)  # the text column(s): one for a sentence task, two for a pair task
    label: str = "label"  # the label column
    id: str = ""  # the id column written to prediction files; "" = the row number
    type: Literal["classification", "regression"] = "classification"
    labels: tuple[str, ...] = ()  # classification: the class names as they appear in the label column
    num_labels: int = 0  # classification with integer labels 0..N-1 (when `labels` is not given)
    label_range: tuple[float, ...] = (0.0, 1.0)  # regression: the labels' range (a cosine head scales to its top)
    metric: str = ""  # acc, f1 (binary: of class 1; more classes: macro), pearson, spearman; "" = acc or pearson

    def check(self, name: str) -> None:
        where = f"custom_tasks.{name}"
        missing = [s for s in ("train", "dev") if not self.files.get(s)]
        if missing:
            raise MinbertError(f"{where}.files: name the {' and '.join(missing)} file(s) (test is optional)")
        unknown = [s for s in self.files if s not in ("train", "dev", "test")]
        if unknown:
            raise MinbertError(f"{where}.files: {unknown[0]!r} is not a split; use train, dev, test")
        if self.format and self.format not in FORMATS:
            raise MinbertError(f"{where}.format: {self.format!r}; valid: {', '.join(FORMATS)} ('' = by extension)")
        if len(self.text) not in (1, 2):
            raise MinbertError(f"{where}.text: one column (a sentence task) or two (a pair), not {list(self.text)}")
        regression = self.type == "regression"
        if not regression and len(self.labels) + self.num_labels < 2 or self.labels and self.num_labels:
            raise MinbertError(f"{where}: a classification task needs labels: [names] or num_labels: N (N >= 2)")
        if regression and (len(self.label_range) != 2 or self.label_range[0] >= self.label_range[1]):
            raise MinbertError(f"{where}.label_range: [low, high] with low < high, not {list(self.label_range)}")
        fits = ("pearson", "spearman") if regression else ("acc", "f1")
        if self.metric and self.metric not in fits:
            valid = ", ".join(fits)
            raise MinbertError(f"{where}.metric: {self.metric!r} does not fit a {self.type} task; valid: {valid}")

    def task(self, name: str) -> Task:
        pair, regression = len(self.text) == 2, self.type == "regression"
        if regression:
            label, classes, names = LabelSpec(self.label, float_label, *self.label_range), 0, ()
        elif self.labels:
            n = len(self.labels)
            label, classes, names = LabelSpec(self.label, named_label(self.labels), 0, n - 1), n, self.labels
        else:
            n = self.num_labels
            label, classes, names = LabelSpec(self.label, int_label(n), 0, n - 1), n, ()
        dataset = DatasetSpec(
            name,
            {s: ((self.files[s],) if self.files.get(s) else ()) for s in ("train", "dev", "test")},
            tuple(self.text),
            label,
            f"Predicted_{self.label}",
            classes,
            tuple(names),
            format=self.format or "auto",
            id_column=self.id,
        )
        head = ("cosine" if regression else "cross") if pair else "linear"
        return Task(
            name,
            dataset,
            pair=pair,
            metric_name=self.metric or ("pearson" if regression else "acc"),
            default_head=head,
            default_loss="mse" if regression else "ce",
            label_max=float(self.label_range[1] if regression else classes - 1),
        )


def resolved(custom: dict[str, CustomTaskConfig], builtin: dict[str, Task]) -> dict[str, Task]:
    """The task table a config runs on: the built-in tasks and its custom ones, each checked (nothing global
    changes: two configs in one process each have their own table)."""
    table = dict(builtin)
    for name, c in custom.items():
        if name in builtin:
            raise MinbertError(f"custom_tasks.{name}: a built-in task has this name; choose another")
        c.check(name)
        table[name] = c.task(name)
    return table
