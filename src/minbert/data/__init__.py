from minbert.data.batching import bucket_batches, pad, padding_fraction, token_batches
from minbert.data.datasets import DATASETS, DatasetSpec, load_split, split_file
from minbert.data.readers import Example, choose_data_dir, data_dir, read_examples, read_predictions, write_predictions
from minbert.data.tokenizer import Tokenizer

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Example",
    "Tokenizer",
    "bucket_batches",
    "choose_data_dir",
    "data_dir",
    "load_split",
    "pad",
    "padding_fraction",
    "read_examples",
    "read_predictions",
    "split_file",
    "token_batches",
    "write_predictions",
]
