"""The CS224N data sets by name: which files hold each split, which columns, which labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minbert.data.readers import Example, LabelSpec, float_label, int_label, read_examples, read_table
from minbert.errors import MinbertError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: dict[str, tuple[str, ...]]  # split -> candidate file names; the first that exists is used
    text_columns: tuple[str, ...]
    label: LabelSpec
    prediction_header: str  # header of CS224N prediction files
    num_labels: int  # 0 for a regression target
    label_names: tuple[str, ...] = ()  # what each class means, for exported models' id2label
    format: str = "cs224n"  # the CS224N TSV layout; custom tasks: csv, tsv, jsonl or auto (by file extension)
    id_column: str = "id"  # custom tasks: "" = the row number

    @property
    def written_names(self) -> tuple[str, ...]:
        """The class names predictions are written with: a custom task's own; CS224N files keep their numbers."""
        return self.label_names if self.format != "cs224n" else ()


DATASETS: dict[str, DatasetSpec] = {
    "sst": DatasetSpec(
        "sst",
        {"train": ("ids-sst-train.csv",), "dev": ("ids-sst-dev.csv",), "test": ("ids-sst-test-student.csv",)},
        ("sentence",),
        LabelSpec("sentiment", int_label(5), 0, 4),
        "Predicted_Sentiment",
        5,
        ("negative", "somewhat negative", "neutral", "somewhat positive", "positive"),
    ),
    "cfimdb": DatasetSpec(
        "cfimdb",
        {"train": ("ids-cfimdb-train.csv",), "dev": ("ids-cfimdb-dev.csv",), "test": ("ids-cfimdb-test-student.csv",)},
        ("sentence",),
        LabelSpec("sentiment", int_label(2), 0, 1),
        "Predicted_Sentiment",
        2,
        ("negative", "positive"),
    ),
    # The official names come first; these machines only have a split of the official dev set (-from-dev).
    "quora": DatasetSpec(
        "quora",
        {
            "train": ("quora-train.csv", "quora-train-from-dev.csv"),
            "dev": ("quora-dev.csv", "quora-dev-from-dev.csv"),
            "test": ("quora-test-student.csv",),
        },
        ("sentence1", "sentence2"),
        LabelSpec("is_duplicate", int_label(2), 0, 1),
        "Predicted_Is_Paraphrase",
        2,
        ("not_duplicate", "duplicate"),
    ),
    "sts": DatasetSpec(
        "sts",
        {"train": ("sts-train.csv",), "dev": ("sts-dev.csv",), "test": ("sts-test-student.csv",)},
        # "Similiarity" (sic) is the CS224N spelling; kept so their scripts read our files.
        ("sentence1", "sentence2"),
        LabelSpec("similarity", float_label, 0.0, 5.0),
        "Predicted_Similiarity",
        0,
    ),
}


def split_file(spec: DatasetSpec, split: str, root: Path) -> Path | None:
    """The file holding `split`, or None when none of its candidate names exists under root."""
    for name in spec.files[split]:
        if (root / name).is_file():
            return root / name
    return None


def load_split(spec: DatasetSpec, split: str, root: Path, strict: bool = False) -> list[Example]:
    """Labeled examples for train/dev, unlabeled for test."""
    path = split_file(spec, split, root)
    if path is None:
        names = " or ".join(spec.files[split])
        raise MinbertError(f"{root}: no {spec.name} {split} file ({names}); set MINBERT_DATA or --data-dir")
    label = spec.label if split != "test" else None
    if spec.format == "cs224n":
        return read_examples(path, spec.text_columns, label, strict=strict)
    return read_table(path, spec.format, spec.text_columns, label, spec.id_column, strict=strict)
