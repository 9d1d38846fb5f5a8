import os
import shutil

import pytest
import torch
from hypothesis import HealthCheck, settings

from minbert.data import data_dir
from minbert.model import BertConfig, BertModel, default_checkpoint_dir
from minbert.runs import save_tensors
from tests.helpers import QUICKSTART, TINY, run_cli

# tests/test_fuzz.py: CI runs a fixed, derandomized set of generated examples; MINBERT_FUZZ=long a random, larger one
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, print_blob=True, **_FUZZ)
settings.register_profile("long", derandomize=False, print_blob=True, **_FUZZ)
settings.load_profile("long" if os.environ.get("MINBERT_FUZZ") == "long" else "ci")


def pytest_configure(config):
    """With pytest-xdist (`-n auto`, the README's test command), each worker process keeps to a core of its own and
    one torch thread - and so do the training runs it starts, whose automatic thread count follows the affinity
    (runs.set_threads): PyTorch's threads slow down several times when another process takes their core."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    import torch

    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root():
    root = data_dir()
    if not (root / "ids-sst-dev.csv").is_file():
        pytest.fail(f"CS224N data not found at {root}: set MINBERT_DATA")
    return root


@pytest.fixture(scope="session")
def ckpt():
    return default_checkpoint_dir()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run directory, its output): the quickstart on a tiny budget, trained once for every test that only reads a
    finished run."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    return run, run_cli(str(QUICKSTART), *TINY, f"out={run}")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """A random 2-layer, 32-wide encoder in Hugging Face layout with the embedded checkpoint's vocabulary: for tests
    of what a run does around training (sweeps, reports), where the MiniLM's load and steps are only cost."""
    dest = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    save_tensors(dest / "model.safetensors", BertModel(cfg).state_dict())
    (dest / "config.json").write_text(cfg.to_json())
    shutil.copy(default_checkpoint_dir() / "vocab.txt", dest / "vocab.txt")
    return dest
